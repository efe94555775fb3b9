"""Column names the engine and stages share beyond the data contract's own (`id`, `text`, ...)."""

PARENT_ID, REPEAT, PART = "parent_id", "repeat", "part"  # columns of added rows and multi-input steps
POSITION = "_position"  # a placed copy's output position, while the output is being written
TRAINING_COLUMNS = ("text", "prompt", "response", "messages")  # what a model trains on, where a row has them

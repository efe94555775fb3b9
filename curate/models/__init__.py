"""Models curate loads or trains: the embedder and its cache, the LM scorer and trainer, the training loop and
fine-tuning, NLI and reward heads, token counting, generation (local or an OpenAI-compatible endpoint)."""

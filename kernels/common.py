"""Constants every kernel and its reference share (this package imports nothing from `curate`)."""

IGNORE_INDEX = -100  # a label that is not scored: no loss, no gradient (torch's cross-entropy default)


def triton_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None

"""Runnable YAML recipes and the demo corpus (installed as `curate.configs`)."""

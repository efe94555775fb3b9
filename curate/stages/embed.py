"""Stage 'embed' (being written)."""

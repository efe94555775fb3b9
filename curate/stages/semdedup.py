"""Stage 'semdedup' (being written)."""

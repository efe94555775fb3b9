"""Stage 'diversity' (being written)."""

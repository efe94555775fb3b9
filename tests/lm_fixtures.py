"""Helpers shared by the LM tests: reading the JSONL samples under tests/data, and tiny LM settings."""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).parent / "data"

# A 2-layer, 64-wide GPT-2 with a 512-token vocabulary: trains in seconds on 2 CPU cores.
TINY_LM = {"vocab_size": 512, "n_layer": 2, "n_embd": 64, "n_head": 4, "seq_len": 64, "steps": 150,
           "batch_size": 16, "lr": 3e-3, "warmup_steps": 10}


def read_records(name: str) -> list[dict]:
    """The records of tests/data/<name> (a JSONL file)."""
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line]

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


def train_math_lm(folder: Path, steps: int = 60) -> Path:
    """A tiny GPT-2 trained on the GSM8K sample (questions and solutions): a real model to generate with."""
    from curate.models.lm_train import LMTrainConfig, train_lm

    texts = [r["prompt"] + "\n" + r["response"] for r in read_records("finetune_gsm8k.jsonl")]
    return train_lm(texts, folder, LMTrainConfig(**{**TINY_LM, "steps": steps, "seq_len": 128}))


def arithmetic_problems(count: int, seed: int = 0) -> list[tuple[int, int]]:
    import random

    rng = random.Random(seed)
    return [(rng.randint(0, 9), rng.randint(0, 9)) for _ in range(count)]


def train_arithmetic_lm(folder: Path) -> Path:
    """A tiny GPT-2 trained on one-digit sums written `a+b=?\\n#### c`: it answers in the GSM8K format and is right
    on some problems (about 6% of samples on average, more on some sums than others), so rejection sampling has
    real work to do."""
    from curate.models.lm_train import LMTrainConfig, train_lm

    texts = [f"{a}+{b}=?\n#### {a + b}" for a, b in arithmetic_problems(3000)]
    return train_lm(texts, folder, LMTrainConfig(vocab_size=300, n_layer=2, n_embd=64, n_head=4, seq_len=64,
                                                 steps=200, batch_size=16, lr=3e-3, warmup_steps=10))

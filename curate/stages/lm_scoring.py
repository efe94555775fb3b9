"""Shared parts of the stages that score rows with causal LMs (`perplexity`, `color_filter`).

- What to score: `text` (every token), or `response` (the response tokens given the prompt, for instruction
  data; docs/methods.md §0.1).
- A random sample of the stage's input, drawn by row position with a seed, to train an auxiliary model.
- The summary columns every LM scorer stores: mean NLL, summed NLL and scored tokens per row, under a prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from curate.data.dataset import Dataset
from curate.methods.selection import fraction_to_k
from curate.stages.base import Params

ScoredPart = Literal["text", "response"]


class ScorerParams(Params):
    """How rows are scored: `part` (`text`, or `response` given `prompt`), truncation and batch size."""

    part: ScoredPart = "text"
    max_length: int = Field(1024, ge=2)
    token_budget: int = Field(16384, ge=64)
    device: str = "auto"


def needed_columns(part: ScoredPart) -> tuple[str, ...]:
    return ("id", "text") if part == "text" else ("id", "prompt", "response")


def score_table(scorer, table: pa.Table, part: ScoredPart, prefix: str) -> dict[str, pa.Array]:
    """Score one table of rows with an `LMScorer`: `{prefix}_nll_mean`, `_nll_sum` and `_tokens` columns."""
    if part == "text":
        scores = scorer.score(table.column("text").to_pylist())
    else:
        scores = scorer.score(prompts=table.column("prompt").to_pylist(),
                              responses=table.column("response").to_pylist())
    return {f"{prefix}_nll_mean": pa.array(scores.mean, pa.float64()),
            f"{prefix}_nll_sum": pa.array(scores.sum, pa.float64()),
            f"{prefix}_tokens": pa.array(scores.count, pa.int64())}


def sample_positions(n: int, fraction: float, max_rows: int | None, seed: int) -> np.ndarray:
    """Sorted row positions of a seeded random sample: floor(fraction * n) rows, at most `max_rows`."""
    k = fraction_to_k(fraction, n)
    if max_rows is not None:
        k = min(k, max_rows)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=k, replace=False)) if k else np.zeros(0, np.int64)


def training_texts(dataset: Dataset, positions: np.ndarray | None = None) -> list[str]:
    """The non-empty `text` of the rows at `positions`, or of every row (instruction rows' text is prompt +
    response)."""
    if positions is None:
        table = dataset.to_table(columns=["text"])
    elif len(positions):
        table = dataset.take(positions, ["text"])
    else:
        return []
    return [t for t in table.column("text").to_pylist() if t]


def save_positions(path: Path, positions: np.ndarray) -> str:
    """Row positions to a Parquet file (too many for the JSON of prepared artifacts)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"position": pa.array(positions, pa.int64())}), path)
    return str(path)


def load_positions(path: str | None) -> np.ndarray:
    if not path:
        return np.zeros(0, np.int64)
    return pq.read_table(path).column("position").to_numpy()

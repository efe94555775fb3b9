"""Generations stored per prompt as they arrive, so an interrupted run never generates a stored prompt again.

A store is one append-only JSONL file per (generator, sampling, purpose): each line is `{"key", "completions"}`,
flushed and fsynced when written. A line cut by a kill is ignored on reading (and overwritten by the next append),
so the file only ever holds whole results. `generate_stored` generates what the store lacks and returns every
prompt's completions.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curate.data.hashing import fingerprint
from curate.data.progress import progress
from curate.models.generation.sampling import Completion, Generator, Sampling


class ResponseStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._results: dict[str, list[Completion]] = {}
        valid_bytes = 0
        if self.path.is_file():
            with self.path.open("rb") as f:
                for line in f:
                    if not line.endswith(b"\n"):
                        break  # a line cut by a kill
                    try:
                        record = json.loads(line)
                    except ValueError:
                        break
                    self._results[record["key"]] = [Completion.from_json(c) for c in record["completions"]]
                    valid_bytes += len(line)
            if valid_bytes < self.path.stat().st_size:
                with self.path.open("r+b") as f:
                    f.truncate(valid_bytes)

    @classmethod
    def for_generation(cls, folder: str | Path, purpose: str, generator: Generator, sampling: Sampling,
                       extra: Any = None) -> ResponseStore:
        """The store of one purpose (`probe`, `consistency`, ...) under `folder`, keyed by what decides its
        outputs: a changed model or sampling setting starts a new file, a re-run with the same ones reuses it."""
        key = fingerprint(purpose, generator.identity(), sampling.model_dump(mode="json"), extra)[:16]
        return cls(Path(folder) / f"{purpose}-{key}.jsonl")

    def __len__(self) -> int:
        return len(self._results)

    def __contains__(self, key: str) -> bool:
        return key in self._results

    def get(self, key: str) -> list[Completion] | None:
        return self._results.get(key)

    def put(self, key: str, completions: list[Completion]) -> None:
        line = json.dumps({"key": key, "completions": [c.to_json() for c in completions]}, ensure_ascii=False)
        with self._lock:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
            self._results[key] = completions


def generate_stored(generator: Generator, store: ResponseStore | None, keys: Sequence[str], prompts: Sequence[str],
                    sampling: Sampling, progress_key: str | None = None) -> list[list[Completion]]:
    """Every prompt's completions: from the store where it has them, else generated (and stored as they come)."""
    if store is None:
        return generator.generate(prompts, sampling, keys)
    missing = [i for i, k in enumerate(keys) if k not in store]
    if missing:
        def stored(j: int, completions: list[Completion]) -> None:
            store.put(keys[missing[j]], completions)
            if progress_key:
                progress().advance(progress_key, 1)

        generator.generate([prompts[i] for i in missing], sampling, [keys[i] for i in missing], on_result=stored)
    return [store.get(k) or [] for k in keys]

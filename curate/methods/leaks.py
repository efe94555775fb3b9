"""The closed loop's leak check: training rows that repeat held-out rows, found before any model trains on them.

A row leaks when its `text` or `prompt` is a held-out row's, or when one of its training columns shares an
`ngram`-word window with a held-out row (the `decontaminate` stage's matcher, `curate.methods.decontamination`, with the
held-out rows as the evaluation set). Windows found in more than `max_doc_freq` of the checked rows are boilerplate
(a prompt template), not a leak, as in `decontaminate`. `finetune` and `evaluate` check every arm with it:
`leak: exclude` leaves the leaking rows out of every arm alike, `warn` only says so, `fail` stops the step.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from curate.data.columns import TRAINING_COLUMNS
from curate.data.errors import CurateError
from curate.methods.decontamination import EvalIndex, scan
from curate.methods.eval_sets import heldout_keys, repeats_heldout, sample_items

log = logging.getLogger("curate")
Leak = Literal["exclude", "warn", "fail"]


@dataclass
class LeakCheck:
    """Per checked dataset (by label), the positions and ids of its rows that repeat held-out rows."""

    positions: dict[str, np.ndarray] = field(default_factory=dict)
    ids: dict[str, list[str]] = field(default_factory=dict)
    ignored_frequent: int = 0

    def rows(self) -> int:
        return len({i for ids in self.ids.values() for i in ids})

    def record(self, action: Leak) -> dict[str, Any]:
        """What results.json and metrics.json keep: per dataset the count and ids, and what was done."""
        return {"action": action, "rows": self.rows(), "ignored_frequent_ngrams": self.ignored_frequent,
                "by_input": {label: {"rows": len(ids), "ids": ids} for label, ids in self.ids.items()}}


def find_leaks(datasets: dict[str, Any], heldout: Any, ngram: int = 13, min_item_words: int = 8,
               max_doc_freq: int | None = 10) -> LeakCheck:
    """The rows of each dataset (a `Dataset` or step input, by label) that repeat a held-out row, streaming
    them batch by batch. A row found in several datasets (a selection and its pool) counts once for `max_doc_freq`."""
    index = EvalIndex.build({"heldout": sample_items(heldout)}, ngram, min_item_words)
    exact = heldout_keys(heldout)
    hits: dict[str, dict[int, set[int]]] = {}  # label -> position -> keys
    repeated: dict[str, set[int]] = {}
    ids: dict[str, dict[int, str]] = defaultdict(dict)
    rows_with_key: dict[int, set[str]] = defaultdict(set)
    for label, dataset in datasets.items():
        columns = ["id", *(c for c in TRAINING_COLUMNS if c in dataset.schema.names)]
        found: dict[int, set[int]] = defaultdict(set)
        same: set[int] = set()
        offset = 0
        for batch in dataset.iter_batches(columns=columns, batch_rows=8192):
            batch_ids = batch.column("id").to_pylist()
            for row in np.flatnonzero(repeats_heldout(batch, exact)).tolist():
                same.add(offset + row)
                ids[label][offset + row] = batch_ids[row]
            for column in columns[1:]:
                for row, row_hits in enumerate(scan(batch.column(column).to_pylist(), column, index)):
                    for hit in row_hits:
                        found[offset + row].add(hit["key"])
                        rows_with_key[hit["key"]].add(batch_ids[row])
                        ids[label][offset + row] = batch_ids[row]
            offset += batch.num_rows
        hits[label], repeated[label] = found, same
    frequent = {k for k, rows in rows_with_key.items() if max_doc_freq is not None and len(rows) > max_doc_freq}
    check = LeakCheck(ignored_frequent=len(frequent))
    for label in datasets:
        leaking = sorted(repeated[label] | {p for p, keys in hits[label].items() if keys - frequent})
        check.positions[label] = np.array(leaking, np.int64)
        check.ids[label] = [ids[label][p] for p in leaking]
    return check


def act_on(check: LeakCheck, action: Leak, where: str) -> None:
    """Say what the check found; `fail` stops the step."""
    if not check.rows():
        return
    found = ", ".join(f"{len(v)} in {label!r}" for label, v in check.ids.items() if v)
    if action == "fail":
        raise CurateError(f"{where}: {check.rows()} training row(s) repeat held-out rows ({found}); the evaluation "
                          "would measure on rows it trained on. Remove them (a `decontaminate` step against "
                          "heldout) or set `leak: exclude`")
    if action == "warn":
        log.warning("%s: %d training row(s) repeat held-out rows (%s); they are trained on (leak: warn)", where,
                    check.rows(), found)
    else:
        log.warning("%s: %d training row(s) repeat held-out rows (%s); left out of every arm (leak: exclude)",
                    where, check.rows(), found)

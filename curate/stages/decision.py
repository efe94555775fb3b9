"""A stage's `Decision` about rows, and `apply_decision`, the one place that splits rows into kept, rejected and
added (README "Writing a stage")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.data.columns import PARENT_ID, PART, POSITION, REPEAT  # noqa: F401  (re-exported: stages use them)
from curate.data.dataset import rejected_rows
from curate.data.schemas import conform, unify_schemas


@dataclass
class Decision:
    """A stage's verdict on rows, as arrays aligned to those rows.

    `reason`: null keeps a row, a short code (`too_short`, `near_duplicate`) drops it.
    `score`: the value that decided (float64), stored with dropped rows.
    `adds`: columns set on every row (new, or replacing a column of the same name).
    `details`: columns stored only with dropped rows (`duplicate_of`).
    `added` (stages with output `rows_added`): new rows, each with its own `id` and a `parent_id`; a global stage's
    also carry `_position`, their parent's position among all input rows (the rows go with the parent's shard).
    `positions` (global stages with output `rows_added`): list<int64> per row, the output positions of the
    row's copies (none for a dropped row). The output is written in position order; copies after the first
    are added rows with the id `<id>#<k>` and a `parent_id`.
    `report` (global stages): a JSON-able account of the decision, written as the stage's `report_file` in the
    step's folder (a mixture's `mixture.json`).
    """

    reason: pa.Array | None = None
    score: pa.Array | None = None
    adds: dict[str, pa.Array] = field(default_factory=dict)
    details: dict[str, pa.Array] = field(default_factory=dict)
    added: pa.Table | None = None
    positions: pa.Array | None = None
    report: dict[str, Any] | None = None

    def slice(self, offset: int, length: int) -> Decision:
        cut = lambda a: None if a is None else a.slice(offset, length)  # noqa: E731
        return Decision(cut(self.reason), cut(self.score), {k: cut(v) for k, v in self.adds.items()},
                        {k: cut(v) for k, v in self.details.items()}, None, cut(self.positions))

    def to_table(self, num_rows: int) -> pa.Table:
        """Flatten for storage between the decide and apply steps (a global stage's `added` rows are stored apart,
        with the shard of their parent)."""
        columns = {
            "_reason": self.reason if self.reason is not None else pa.nulls(num_rows, pa.string()),
            "_score": self.score if self.score is not None else pa.nulls(num_rows, pa.float64()),
        }
        if self.positions is not None:
            columns["_positions"] = self.positions
        columns.update({f"add.{k}": v for k, v in self.adds.items()})
        columns.update({f"detail.{k}": v for k, v in self.details.items()})
        return pa.table(columns)

    @classmethod
    def from_table(cls, table: pa.Table) -> Decision:
        get = lambda name: table.column(name).combine_chunks()  # noqa: E731
        return cls(
            reason=get("_reason"),
            score=get("_score"),
            adds={n[4:]: get(n) for n in table.column_names if n.startswith("add.")},
            details={n[7:]: get(n) for n in table.column_names if n.startswith("detail.")},
            positions=get("_positions") if "_positions" in table.column_names else None,
        )


def set_column(table: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


class Applied(NamedTuple):
    """A decision applied to a table: the rows kept (with their copies), the rows dropped, the rows added."""

    kept: pa.Table
    rejected: pa.Table
    added: pa.Table  # new rows (`Decision.added`) and copies after the first (`Decision.positions`)
    kept_rows: int  # input rows kept (each counted once, however many copies it has)


def expand_copies(kept: pa.Table, positions: pa.Array) -> tuple[pa.Table, pa.Table]:
    """(first copies, later copies) of kept rows placed at `positions`, each with `repeat` and a `_position`
    column; later copies get the id `<id>#<k>` and `parent_id` = the row's `parent_id`, or its id."""
    counts = pc.list_value_length(positions).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(positions).to_numpy(zero_copy_only=False).astype(np.int64)
    rows = np.repeat(np.arange(kept.num_rows), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    repeat = np.arange(len(rows)) - starts
    table = kept.take(pa.array(rows, pa.int64()))
    table = set_column(table, REPEAT, pa.array(repeat, pa.int64()))
    table = set_column(table, POSITION, pa.array(flat, pa.int64()))
    if PARENT_ID not in table.column_names:
        table = table.append_column(PARENT_ID, pa.nulls(table.num_rows, pa.string()))
    first = table.filter(pa.array(repeat == 0))
    later = table.filter(pa.array(repeat > 0))
    ids = later.column("id").combine_chunks()
    suffix = pc.binary_join_element_wise("#", pc.cast(later.column(REPEAT), pa.string()), "")
    later = set_column(later, PARENT_ID, pc.coalesce(later.column(PARENT_ID), ids))
    later = set_column(later, "id", pc.binary_join_element_wise(ids, suffix, ""))
    return first, later


def inherit_parent_columns(added: pa.Table, table: pa.Table) -> pa.Table:
    """New rows with the columns they lack taken from their parent rows in `table` (found by `parent_id`): a stage
    that sees only the columns it declares still adds whole rows."""
    missing = [c for c in table.column_names if c not in added.column_names]
    if not missing:
        return added
    index = pc.index_in(added.column(PARENT_ID), table.column("id"))
    for name in missing:
        added = added.append_column(name, table.column(name).take(index))
    return added


def apply_decision(table: pa.Table, decision: Decision, stage: str,
                   reference: Sequence[str] | None = None) -> Applied:
    """Split rows into kept, rejected and added by a decision, after setting its added columns. With `reference`
    (column names), rejected rows keep only those columns of the row (its id and part): a stage whose input rows
    stay in its input steps, such as a mixture, records what it did not take without copying it."""
    for name, values in decision.adds.items():
        table = set_column(table, name, values)
    none = pa.table({})
    added = decision.added if decision.added is not None else none
    if POSITION in added.column_names:
        added = added.drop_columns([POSITION])
    if added.num_rows and PARENT_ID in added.column_names:
        added = inherit_parent_columns(added, table)
    positions = decision.positions
    if decision.reason is None or decision.reason.null_count == len(decision.reason):
        kept, rejected = table, none
    else:
        keep = pc.is_null(decision.reason)
        drop = pc.invert(keep)
        pick = lambda a: None if a is None else a.filter(drop)  # noqa: E731
        dropped = table.filter(drop)
        if reference is not None:
            dropped = dropped.select([c for c in reference if c in dropped.column_names])
        rejected = rejected_rows(dropped, stage, pick(decision.reason), pick(decision.score),
                                 {k: pick(v) for k, v in decision.details.items()})
        kept = table.filter(keep)
        positions = None if positions is None else positions.filter(keep)
    kept_rows = kept.num_rows
    if positions is not None:
        kept, added = expand_copies(kept, positions)
    return Applied(kept, rejected, added, kept_rows)


def output_rows(applied: Applied) -> tuple[pa.Table, pa.Table]:
    """(output rows, rejected rows) of an in-memory run: kept rows and added rows, in position order if placed."""
    kept = applied.kept
    if applied.added.num_rows:
        schema = unify_schemas([kept.schema, applied.added.schema])
        kept = pa.concat_tables([conform(kept, schema), conform(applied.added, schema)])
    if POSITION in kept.column_names:
        kept = kept.take(pc.sort_indices(kept.column(POSITION))).drop_columns([POSITION])
    return kept, applied.rejected

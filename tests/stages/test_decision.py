"""`apply_decision`, the one place that splits rows: kept, rejected (with reason, score and details), added rows
with their parent's columns, and placed copies."""

from __future__ import annotations

import pyarrow as pa

from curate.stages.decision import Decision, apply_decision, output_rows


def rows() -> pa.Table:
    return pa.table({"id": ["a", "b", "c"], "text": ["one", "two", "three"], "source": ["s", "s", "t"]})


def test_dropped_rows_keep_reason_score_details_and_the_row():
    decision = Decision(reason=pa.array([None, "too_short", None]), score=pa.array([0.9, 0.1, 0.5]),
                        adds={"words": pa.array([1, 1, 1])}, details={"duplicate_of": pa.array([None, "a", None])})
    applied = apply_decision(rows(), decision, "heuristics")
    assert applied.kept.column("id").to_pylist() == ["a", "c"] and applied.kept_rows == 2
    assert applied.kept.column("words").to_pylist() == [1, 1]
    assert applied.rejected.to_pylist() == [{"stage": "heuristics", "reason": "too_short", "score": 0.1,
                                             "duplicate_of": "a", "id": "b", "text": "two", "source": "s",
                                             "words": 1}]
    referenced = apply_decision(rows(), decision, "mixture", reference=["id"])
    assert referenced.rejected.column_names == ["stage", "reason", "score", "duplicate_of", "id"]


def test_added_rows_take_their_parents_columns():
    added = pa.table({"id": ["c-1"], "parent_id": ["c"], "text": ["three, again"]})
    applied = apply_decision(rows(), Decision(added=added), "generate")
    assert applied.added.to_pylist() == [{"id": "c-1", "parent_id": "c", "text": "three, again", "source": "t"}]
    assert applied.kept.num_rows == 3 and applied.rejected.num_rows == 0


def test_placed_copies_are_written_in_position_order():
    positions = pa.array([[2], [], [0, 1, 3]], pa.list_(pa.int64()))
    applied = apply_decision(rows(), Decision(reason=pa.array([None, "not_picked", None]), positions=positions),
                             "mixture")
    assert applied.kept_rows == 2 and applied.added.column("id").to_pylist() == ["c#1", "c#2"]
    out, rejected = output_rows(applied)
    assert out.select(["id", "parent_id", "repeat"]).to_pylist() == [
        {"id": "c", "parent_id": None, "repeat": 0}, {"id": "c#1", "parent_id": "c", "repeat": 1},
        {"id": "a", "parent_id": None, "repeat": 0}, {"id": "c#2", "parent_id": "c", "repeat": 2}]
    assert rejected.column("id").to_pylist() == ["b"]

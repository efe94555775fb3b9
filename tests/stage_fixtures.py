"""Test-only stages, registered on import (used to slow a run down so it can be interrupted)."""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc

from curate.stages.base import REGISTRY, GlobalStage, MapStage, Params, Resources, StageContext, register
from curate.stages.decision import Decision

# (text, paraphrase, unrelated): an embedder must put the paraphrase closer than the unrelated text
SIMILARITY_TRIPLES = [
    ("A man is playing a guitar on stage.", "Someone performs a song on an acoustic guitar.",
     "The central bank raised interest rates again."),
    ("How do I reverse a list in Python?", "What is the way to invert the order of a Python list?",
     "The hikers reached the summit before sunrise."),
    ("The patient was given antibiotics for the infection.", "Doctors treated the bacterial infection "
     "with medication.", "She baked a chocolate cake for the party."),
]

class SlowTagParams(Params):
    delay: float = 0.05
    drop_every: int = 5  # drop rows whose text length is a multiple of this


class SlowTag(MapStage):
    """Tags rows with their text length, drops some, and sleeps per batch."""

    name = "test_slow_tag"
    Params = SlowTagParams
    adds = ("length",)
    batch_rows = 16

    def process(self, table: pa.Table) -> Decision:
        time.sleep(self.params.delay)
        length = pc.utf8_length(table.column("text").combine_chunks())
        multiple = pa.array(length.to_numpy(zero_copy_only=False) % self.params.drop_every == 0)
        reason = pc.if_else(multiple, pa.scalar("length_multiple"), pa.scalar(None, pa.string()))
        return Decision(reason=reason, score=pc.cast(length, pa.float64()), adds={"length": length})


if SlowTag.name not in REGISTRY:
    register(SlowTag)


class FlakyParams(Params):
    marker_dir: str  # a first attempt per shard leaves a marker here and fails


class Flaky(MapStage):
    """Fails once per table with a transient error (OSError), then passes rows through."""

    name = "test_flaky"
    Params = FlakyParams

    def process(self, table: pa.Table) -> Decision:
        import hashlib
        from pathlib import Path

        key = hashlib.sha256("".join(table.column("id").to_pylist()).encode()).hexdigest()[:16]
        marker = Path(self.params.marker_dir) / key
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            raise OSError(f"transient failure for {key}")
        return Decision()


if Flaky.name not in REGISTRY:
    register(Flaky)


class UndeclaredParams(Params):
    declare: bool = False  # declare `length` in `adds` but write `other`


class Undeclared(MapStage):
    """Writes a column its declaration does not name (or declares one it never writes)."""

    name = "test_undeclared"
    Params = UndeclaredParams

    def configure(self) -> None:
        self.adds = ("length",) if self.params.declare else ()

    def process(self, table: pa.Table) -> Decision:
        return Decision(adds={} if self.params.declare else {"other": pc.utf8_length(table.column("text"))})


if Undeclared.name not in REGISTRY:
    register(Undeclared)


class CopyRowsParams(Params):
    reuse_ids: bool = False  # give the copies their parents' ids (a bug the runner must catch)
    no_parent: bool = False  # leave the copies' parent_id empty (another such bug)


class CopyRows(MapStage):
    """A `rows_added` map stage: every row gets one upper-cased copy with its own id and a `parent_id`."""

    name = "test_copy_rows"
    Params = CopyRowsParams
    output = "rows_added"
    needs = ("id", "text")

    def process(self, table: pa.Table) -> Decision:
        ids = table.column("id")
        new = ids if self.params.reuse_ids else pc.binary_join_element_wise(ids, pa.scalar("+upper"), "")
        parent = pa.nulls(table.num_rows, pa.string()) if self.params.no_parent else ids
        added = pa.table({"id": new, "text": pc.utf8_upper(table.column("text")), "parent_id": parent})
        return Decision(added=added)


if CopyRows.name not in REGISTRY:
    register(CopyRows)


SETUP_CALLS: list[int] = []


class CountSetup(MapStage):
    """Counts `setup` calls (class-wide), to show the runner sets a stage up once per worker process."""

    name = "test_count_setup"
    needs = ("text",)
    resources = Resources(cpus=1, memory_gb=0.25)
    batch_rows = 4

    def setup(self) -> None:
        SETUP_CALLS.append(1)
        self.ready = True

    def process(self, table: pa.Table) -> Decision:
        assert self.ready  # no guard: the runner guarantees setup() ran
        return Decision()


if CountSetup.name not in REGISTRY:
    register(CountSetup)


class RecordTargetParams(Params):
    out: str  # a JSON file: the ids of the target rows the stage was given


class RecordTarget(GlobalStage):
    """Passes every row; records which target rows it saw (to prove held-out rows never reach selection)."""

    name = "test_record_target"
    Params = RecordTargetParams
    needs = ("id",)

    def samples(self) -> tuple[str, ...]:
        return ("target",)

    def prepare(self, context: StageContext) -> dict:
        import json
        from pathlib import Path

        ids = context.target.to_table(columns=["id"]).column("id").to_pylist()
        Path(self.params.out).write_text(json.dumps({"target": ids, "heldout": context.heldout is not None}))
        return {}

    def decide(self, summary: pa.Table, rows) -> Decision:
        return Decision()


if RecordTarget.name not in REGISTRY:
    register(RecordTarget)

"""Test-only stages, registered on import (used to slow a run down so it can be interrupted)."""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc

from curate.stages.base import REGISTRY, Decision, MapStage, Params, register


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

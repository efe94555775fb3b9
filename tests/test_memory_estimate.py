"""Memory estimates before a run (`curate validate`) and after one (`curate inspect`): rows from the input files,
bytes per row from each global stage, a warning when a decision would not fit in this machine's memory."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from curate.cli import app
from curate.engine import memory_estimate
from curate.engine.memory_estimate import estimated_rows, memory_warnings
from curate.io.sources import InputUnit
from curate.stages.dedup import Dedup

POOL = (Path(__file__).parent / "data" / "ingest" / "pool_sample.jsonl").read_text().splitlines()


def unit(path: Path, fmt: str, compression: str | None = None) -> InputUnit:
    return InputUnit(0, str(path), fmt, compression, "s", (), None, ",", False, None)


def test_rows_are_estimated_from_the_first_mebibyte(tmp_path):
    lines = [json.dumps({**json.loads(POOL[i % len(POOL)]), "id": str(i)}) for i in range(6000)]  # ~7 MB
    (tmp_path / "x.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "x.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    pq.write_table(pa.table({"text": ["a"] * 1234}), tmp_path / "x.parquet")
    assert abs(estimated_rows(unit(tmp_path / "x.jsonl", "jsonl")) - 6000) < 600
    assert abs(estimated_rows(unit(tmp_path / "x.jsonl.gz", "jsonl", "gzip")) - 6000) < 1500
    assert estimated_rows(unit(tmp_path / "x.parquet", "parquet")) == 1234


def test_a_decision_bigger_than_the_machine_is_named():
    stage = Dedup()
    assert stage.decision_bytes_per_row() == 64 + 16 + 3 * 8 * 14
    (warning,) = memory_warnings([("dedup", stage, 10_000_000)], memory=2 << 30)
    assert warning.startswith("dedup: its decision needs about 3.9 GiB for 10,000,000 rows") and "2.0 GiB" in warning
    assert memory_warnings([("dedup", stage, 1_000_000)], memory=2 << 30) == []


def test_validate_warns_before_a_run(tmp_path, monkeypatch):
    (tmp_path / "x.jsonl").write_text("\n".join(POOL) + "\n")
    (tmp_path / "c.yaml").write_text(json.dumps({"name": "m", "inputs": [{"path": str(tmp_path / "x.jsonl")}],
                                                 "output": str(tmp_path / "run"), "stages": ["normalize", "dedup"]}))
    monkeypatch.setattr(memory_estimate, "machine_memory", lambda: 10_000)  # a machine of 10 kB
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "c.yaml")])
    assert result.exit_code == 0, result.output
    assert "warning: dedup: its decision needs about" in result.output and "normalize:" not in result.output

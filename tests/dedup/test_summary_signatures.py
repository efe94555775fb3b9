"""Dedup's stored summaries: `SummaryShards.take_matrix` (a list column of rows picked across shards, in the order
asked, equal to taking the rows with Arrow and converting them; dedup's verification reads candidate signatures this
way), and a damaged summary on disk."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.data.arrays import column_to_matrix
from curate.data.summaries import SummaryShards


def test_take_matrix_equals_taking_rows_then_converting(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for k, n in enumerate([5, 0, 7, 3]):  # an empty shard among them
        values = rng.integers(0, 2**63, size=(n, 4), dtype=np.uint64)
        column = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), 4)
        mask = np.zeros(n, bool)
        mask[::3] = True  # some rows have no signature
        column = pa.FixedSizeListArray.from_arrays(column.values, 4, mask=pa.array(mask)) if n else column
        paths.append(tmp_path / f"s{k}.parquet")
        pq.write_table(pa.table({"sig": column}), paths[-1])
    store = SummaryShards(paths)
    indices = rng.permutation(15)[:11]  # out of order, across every non-empty shard
    fill = np.iinfo(np.uint64).max
    got = store.take_matrix(indices, "sig", 4, np.dtype(np.uint64), fill=fill)
    expected = column_to_matrix(store.take(indices, ["sig"]).column("sig"), 4, np.uint64, fill=fill)
    assert got.dtype == np.uint64 and got.shape == (11, 4)
    assert np.array_equal(got, expected) and (got == fill).all(axis=1).any()


def test_a_damaged_stored_summary_is_summarized_again(tmp_path, caplog):
    """Dedup keeps its summaries to re-decide without hashing; one cut short on disk is recomputed with a warning,
    and the new decision equals one made from intact summaries."""
    from curate.data.dataset import Dataset
    from curate.engine.config import parse_config
    from curate.engine.runner import run_pipeline

    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
    rng = np.random.default_rng(1)
    base = [list(rng.choice(words, 40)) for _ in range(20)]
    rows = [{"id": f"r{i}", "text": " ".join([*base[i % 20][:i % 7], "omega", *base[i % 20][i % 7 + 1:]])}
            for i in range(200)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def run(name: str, threshold: float) -> list[str]:
        config = {"name": "d", "inputs": [{"path": str(tmp_path / "in.jsonl")}], "output": str(tmp_path / name),
                  "engine": {"prefect": False},
                  "stages": [{"dedup": {"exact": False, "minhash": {"threshold": threshold}}}]}
        run_pipeline(parse_config(config, base_dir=tmp_path))
        return sorted(Dataset.open(next((tmp_path / name / "stages").glob("*-dedup"))).to_table(["id"])
                      .column("id").to_pylist())

    run("damaged", 0.9)
    for summary in (tmp_path / "damaged" / "scores").rglob("summary-*.parquet"):
        summary.write_bytes(summary.read_bytes()[: summary.stat().st_size // 2])
    kept = run("damaged", 0.6)  # a new threshold: re-decided from the stored summaries
    assert "damaged" in caplog.text
    assert kept == run("intact", 0.6)

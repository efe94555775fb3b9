"""`SummaryShards.take_matrix`: a list column of rows picked across shards, in the order asked, equal to taking the
rows with Arrow and converting them (dedup's verification reads candidate signatures this way)."""

from __future__ import annotations

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

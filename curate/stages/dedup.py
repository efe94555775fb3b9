"""`dedup`: exact and MinHash-LSH near-duplicate removal (global stage, docs/methods.md §7.2).

- exact (`exact: true`): texts equal after collapsing white space; the first row in dataset order is kept,
  the others are dropped with reason `exact_duplicate` (score 1.0).
- near (`minhash: {...}`, `minhash: null` disables it): MinHash signatures of word n-gram shingles,
  LSH banding, optional verification of candidate pairs, connected components; the lowest-index row
  of each component is kept, the others are dropped with reason `near_duplicate` and score = the
  estimated Jaccard (fraction of equal minhashes) with the kept row. Exact duplicates are removed first.

Dropped rows carry `duplicate_of` = the `id` of the kept row. `summarize` (per shard) computes the heavy
part (exact key, signature); `decide` (once) groups; results do not depend on how rows are sharded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.data.arrays import column_to_matrix, matrix_to_column
from curate.methods.dedup.exact import exact_keys, first_occurrences, key_matrix
from curate.methods.dedup.lsh import band_keys, key_clusters, pair_signature_jaccard
from curate.methods.dedup.minhash import MinHashParams, has_signature, minhash_signatures
from curate.methods.dedup.tokens import tokenize
from curate.stages.base import GlobalStage, Params, Rows, register
from curate.stages.decision import Decision

EXACT_KEY = "exact_key"
SIGNATURE = "minhash"
BAND_KEYS = "band_keys"
_REASONS = pa.array([None, "exact_duplicate", "near_duplicate"], pa.string())


class DedupParams(Params):
    """`exact`: drop exact duplicates; `minhash`: near-dedup settings (None: no near-dedup).

    `minhash.threshold` applies only with `minhash.verify` "signature" or "exact" (see MinHashParams).
    """

    exact: bool = True
    minhash: MinHashParams | None = MinHashParams()


def signature_layout(kind: pa.DataType) -> tuple[np.dtype, int]:
    """A signature column's value dtype (uint32 or uint64) and what fills a row without a signature (its largest)."""
    dtype = np.dtype(kind.value_type.to_pandas_dtype())
    return dtype, int(np.iinfo(dtype).max)


def signature_matrix(column: pa.Array | pa.ChunkedArray, num_perm: int) -> np.ndarray:
    """A fixed_size_list<uint32|uint64> (or list) column as an (n, num_perm) array of its dtype; null rows are all
    the dtype's largest value (no signature)."""
    dtype, fill = signature_layout(column.type)
    return column_to_matrix(column, num_perm, dtype, fill=fill)


@register
class Dedup(GlobalStage):
    name = "dedup"
    Params = DedupParams
    needs = ("id", "text")
    adds = ()
    keep_summaries = True  # signatures are kept: a new threshold or verification re-decides without hashing

    def configure(self) -> None:
        # the decision holds ids, exact keys and one 64-bit key per band; it reads signatures of candidate rows only
        p = self.params
        self.decide_columns = ("id", *([EXACT_KEY] if p.exact else []), *([BAND_KEYS] if p.minhash else []))

    def summary_params(self) -> dict:
        minhash = self.params.minhash
        return {"exact": self.params.exact,
                "minhash": minhash and minhash.model_dump(mode="json", exclude={"threshold", "verify"})}

    def summarize(self, table: pa.Table) -> pa.Table:
        p = self.params
        tokens = tokenize(table.column("text"))
        columns: dict[str, pa.Array | pa.ChunkedArray] = {"id": table.column("id")}
        if p.exact:
            columns[EXACT_KEY] = exact_keys(tokens)
        if p.minhash is not None:
            sig = minhash_signatures(tokens, p.minhash)
            columns[SIGNATURE] = matrix_to_column(sig)
            keys = matrix_to_column(band_keys(sig, p.minhash.bands, p.minhash.rows))
            columns[BAND_KEYS] = pc.if_else(pa.array(has_signature(sig)), keys, pa.scalar(None, keys.type))
        return pa.table(columns)

    def decide(self, summary: pa.Table, rows: Rows) -> Decision:
        p = self.params
        n = summary.num_rows
        ids = summary.column("id").combine_chunks() if n else pa.array([], pa.string())
        positions = np.arange(n, dtype=np.int64)
        kept_row = positions.copy()
        reason = np.zeros(n, np.int8)
        score = np.full(n, np.nan)
        if p.exact:
            first = first_occurrences(key_matrix(summary.column(EXACT_KEY)))
            dup = first != positions
            kept_row[dup], reason[dup], score[dup] = first[dup], 1, 1.0
        if p.minhash is not None:
            live, cluster, signatures = self._near(summary, reason == 0, rows)
            near = np.flatnonzero(cluster != np.arange(len(live)))
            members, kept = live[near], live[cluster[near]]
            kept_row[members], reason[members] = kept, 2
            score[members] = pair_signature_jaccard(signatures, members, kept)
        keep = reason == 0
        return Decision(
            reason=_REASONS.take(pa.array(reason)),
            score=pa.array(score, pa.float64(), mask=keep),
            details={"duplicate_of": ids.take(pa.array(kept_row, pa.int64(), mask=keep))},
        )

    def decision_bytes_per_row(self) -> int:
        # id (~48 with its offsets), exact key 16, one 64-bit key per band, and the candidate pairs' work arrays
        p = self.params
        return 64 + 16 * p.exact + (3 * 8 * p.minhash.bands if p.minhash else 0)

    def _near(self, summary: pa.Table, candidate: np.ndarray, rows: Rows) -> tuple[np.ndarray, np.ndarray, Any]:
        """Near-duplicate clusters of the `candidate` rows with a signature, from their band keys: (their positions,
        the cluster of each, a source of signatures by position). Signatures are read by row: from the stored
        summaries in a run, from the summary itself for a table in memory."""
        p = self.params.minhash
        column = summary.column(BAND_KEYS)
        live = np.flatnonzero(candidate & pc.is_valid(column).to_numpy(zero_copy_only=False))
        store = self.summaries

        def signatures(positions: np.ndarray) -> np.ndarray:
            if store is None:
                return signature_matrix(summary.take(positions).column(SIGNATURE), p.num_perm)
            dtype, fill = signature_layout(store.schema.field(SIGNATURE).type)
            return store.take_matrix(positions, SIGNATURE, p.num_perm, dtype, fill=fill)

        def texts(local: np.ndarray) -> pa.Array:
            return rows.take(live[local], ["text"]).column("text").combine_chunks()

        keys = column_to_matrix(column, p.bands, np.uint64, fill=0)[live]
        return live, key_clusters(keys, p, lambda local: signatures(live[local]), texts=texts), signatures

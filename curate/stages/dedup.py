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

import numpy as np
import pyarrow as pa

from curate.arrays import column_to_matrix, matrix_to_column
from curate.dedup.exact import exact_keys, first_occurrences, key_matrix
from curate.dedup.lsh import lsh_clusters
from curate.dedup.minhash import MinHashParams, has_signature, minhash_signatures, signature_jaccard
from curate.dedup.tokens import tokenize
from curate.stages.base import Decision, GlobalStage, Params, Rows, register

EXACT_KEY = "exact_key"
SIGNATURE = "minhash"
_REASONS = pa.array([None, "exact_duplicate", "near_duplicate"], pa.string())


class DedupParams(Params):
    """`exact`: drop exact duplicates; `minhash`: near-dedup settings (None: no near-dedup).

    `minhash.threshold` applies only with `minhash.verify` "signature" or "exact" (see MinHashParams).
    """

    exact: bool = True
    minhash: MinHashParams | None = MinHashParams()


def signature_matrix(column: pa.Array | pa.ChunkedArray, num_perm: int) -> np.ndarray:
    """A fixed_size_list<uint32|uint64> (or list) column as an (n, num_perm) array of its dtype; null rows are all
    the dtype's largest value (no signature)."""
    dtype = np.dtype(column.type.value_type.to_pandas_dtype())
    return column_to_matrix(column, num_perm, dtype, fill=np.iinfo(dtype).max)


@register
class Dedup(GlobalStage):
    name = "dedup"
    Params = DedupParams
    needs = ("id", "text")
    adds = ()

    def summarize(self, table: pa.Table) -> pa.Table:
        p = self.params
        tokens = tokenize(table.column("text"))
        columns: dict[str, pa.Array | pa.ChunkedArray] = {"id": table.column("id")}
        if p.exact:
            columns[EXACT_KEY] = exact_keys(tokens)
        if p.minhash is not None:
            sig = minhash_signatures(tokens, p.minhash)
            columns[SIGNATURE] = matrix_to_column(sig)
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
            sig = signature_matrix(summary.column(SIGNATURE), p.minhash.num_perm)
            live = np.flatnonzero((reason == 0) & has_signature(sig))

            def texts(local: np.ndarray) -> pa.Array:
                return rows.take(live[local], ["text"]).column("text").combine_chunks()

            cluster = lsh_clusters(sig[live], p.minhash, texts=texts)
            near = np.flatnonzero(cluster != np.arange(len(live)))
            members, kept = live[near], live[cluster[near]]
            kept_row[members], reason[members] = kept, 2
            score[members] = signature_jaccard(sig, members, kept)
        keep = reason == 0
        return Decision(
            reason=_REASONS.take(pa.array(reason)),
            score=pa.array(score, pa.float64(), mask=keep),
            details={"duplicate_of": ids.take(pa.array(kept_row, pa.int64(), mask=keep))},
        )

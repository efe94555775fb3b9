"""`got_d`: GOT-D, selection by the gradient of the OT distance to the target (docs/methods.md §5).

One entropic OT problem between the target's embeddings (marginal a: uniform, or each target's `weight`
spread over its rows) and the candidates' `embedding` column (marginal b, uniform) is solved with log-domain
Sinkhorn (`curate.methods.ot.sinkhorn`; the cost in tiles by `kernels.sinkhorn`, never stored). The candidates'
calibrated gradient `ot_grad` (§5.5) is the derivative of the OT cost with respect to each one's mass: the
`budget` most negative are kept, the rest dropped with `not_selected` (score: their `ot_grad`). Rows without
an embedding are dropped with `missing_embedding`.

The target is embedded with the same embedder (and the same cache) as the candidates: `embed` defaults to the
parameters of the nearest `embed` step upstream. Target rows that already have an `embedding` column are used
as they are. `length_normalize` (§5.3) concatenates consecutive target rows of one target to `chars`
characters and cuts them there, and splits each candidate's text into `chars`-character pieces, embedded here:
a row's `ot_grad` is then the mean over its pieces (moving mass onto a row moves it onto its pieces evenly).

The solve is stored in the step's model folder (keyed, like the scores, by everything but `budget`), so a new
budget re-decides without solving again. `budget: auto` keeps the quality buckets of `ot_grad` that the scaling
law recommends for `compute:` (docs/methods.md §8; `curate budget` shows the curve). `sinkhorn.json` reports the
OT cost, iterations, the marginal error and whether it converged; a solve that did not converge is a warning in
the log and on the console.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from curate.data.arrays import matrix_to_column
from curate.data.embedding import EMBEDDING, HoldsEmbeddings, embedding_matrix
from curate.data.errors import CurateError
from curate.data.targets import target_groups, target_row_weights
from curate.methods.scaling import ComputeParams, auto_budget_of_rows, needs_compute
from curate.methods.selection import Budget, budget_to_k, top_k
from curate.stages.base import GlobalStage, Params, Resources, Rows, StageContext, register
from curate.stages.decision import Decision
from curate.stages.embed import EmbedParams

log = logging.getLogger("curate")
PIECES = "_pieces"  # a summary column: the embeddings of a row's pieces (length normalisation)


class SinkhornParams(Params):
    epsilon: float = Field(0.1, gt=0)
    epsilon_relative: bool = False  # epsilon x the mean cost instead of absolute (§5.4)
    momentum: float = Field(1.3, gt=0, lt=2)
    tolerance: float = Field(0.1, gt=0)  # on the L1 violation of the candidate marginal
    max_iter: int = Field(2000, ge=1)
    block: int = Field(2000, ge=16)  # cost tile (rows and columns)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")


class GotDParams(Params):
    budget: Budget
    compute: ComputeParams | None = None  # the training budget behind `budget: auto` (curate.methods.scaling)
    sinkhorn: SinkhornParams = SinkhornParams()
    embed: EmbedParams | None = None  # how the target (and pieces) are embedded: default, the upstream `embed`
    length_normalize: bool = False
    chars: int = Field(1000, ge=1)

    _auto = model_validator(mode="after")(needs_compute("budget"))


def normalize_lengths(texts: list[str], chars: int) -> list[str]:
    """Consecutive texts joined (by a space) until there are at least `chars` characters, cut there (§5.3); a
    shorter rest at the end is kept as it is."""
    out, buffer = [], ""
    for text in texts:
        buffer = f"{buffer} {text}" if buffer else text
        if len(buffer) >= chars:
            out.append(buffer[:chars])
            buffer = ""
    if buffer:
        out.append(buffer)
    return out


def split_pieces(text: str, chars: int) -> list[str]:
    """A text cut into `chars`-character pieces (§5.3); an empty text is one empty piece."""
    return [text[i:i + chars] for i in range(0, len(text), chars)] or [""]


@register
class GotD(HoldsEmbeddings, GlobalStage):
    name = "got_d"
    Params = GotDParams
    needs = ("id", EMBEDDING)
    adds = ("ot_grad",)
    report_score = "ot_grad"
    higher_is_better = False
    keep_summaries = True
    report_file = "sinkhorn.json"

    def configure(self) -> None:
        p = self.params
        column = self._embed_params().column
        self.needs = ("id", column) if p.length_normalize else ("id", EMBEDDING)
        self.resources = Resources(cpus=1, gpus=1 if p.sinkhorn.device.startswith("cuda") else 0)

    def _embed_params(self) -> EmbedParams:
        return self.params.embed or EmbedParams()

    def samples(self) -> tuple[str, ...]:
        return ("target",)

    def graph_defaults(self, readers: Any, ancestors: Any = ()) -> dict[str, Any]:
        if self.params.embed is not None:
            return {}
        for spec in ancestors:
            if spec.name == "embed":
                return {"embed": spec.params}
        return {}

    def summary_params(self) -> dict[str, Any]:
        return self.config() | {"budget": None, "compute": None}

    def fingerprint_extra(self) -> dict[str, Any]:
        from curate.models.embedder import model_identity

        e = self._embed_params()
        return {"embed_model": model_identity(e.model, e.revision)}

    def _embedder(self) -> Any:
        from curate.stages.embed import Embed

        return Embed(self._embed_params())

    # -- the target, once per run of the step

    def prepare(self, context: StageContext) -> dict[str, Any]:
        if context.target is None:
            raise CurateError("got_d needs the config's `target:` sample")
        column = self._embed_params().column
        table = context.target.to_table()
        weights = target_row_weights(table)
        if EMBEDDING in table.column_names and not self.params.length_normalize:
            vectors, valid = embedding_matrix(table.column(EMBEDDING))
            vectors, weights = vectors[valid], weights[valid]
        else:
            if column not in table.column_names:
                raise CurateError(f"got_d: the target has no column {column!r} to embed (embed.column)")
            keep = np.array([bool(t and t.strip()) for t in table.column(column).to_pylist()], dtype=bool)
            table, weights = table.filter(pa.array(keep)), weights[keep]
            texts = table.column(column).to_pylist()
            if self.params.length_normalize:
                texts, weights = self._normalized_target(table, texts, weights)
            vectors = self._embedder().embed_texts(texts)
        if not len(vectors):
            raise CurateError("got_d: the target has no rows with a text or an embedding")
        context.models_dir.mkdir(parents=True, exist_ok=True)
        path = context.models_dir / "target.npz"
        np.savez(path, vectors=vectors.astype(np.float32), weights=weights / weights.sum())
        return {"target": str(path), "models": str(context.models_dir)}

    def _normalized_target(self, table: pa.Table, texts: list[str],
                           weights: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Length-normalised pieces within each target, each piece with an equal share of its target's mass."""
        pieces, piece_weights = [], []
        for group in target_groups(table):
            joined = normalize_lengths([texts[i] for i in group.positions], self.params.chars)
            pieces += joined
            piece_weights += [weights[group.positions].sum() / len(joined)] * len(joined)
        return pieces, np.array(piece_weights)

    # -- per shard: pieces of the candidates (length normalisation only)

    def setup(self) -> None:
        if self.params.length_normalize:
            self.embedder = self._embedder()

    def summarize(self, table: pa.Table) -> pa.Table:
        if not self.params.length_normalize:
            return table.select(["id"])
        texts = [t or "" for t in table.column(self._embed_params().column).to_pylist()]
        pieces = [split_pieces(t, self.params.chars) for t in texts]
        counts = np.array([len(p) for p in pieces], np.int64)
        vectors = self.embedder.embed_texts([piece for row in pieces for piece in row])
        offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        nested = pa.ListArray.from_arrays(offsets, matrix_to_column(vectors))
        return pa.table({"id": table.column("id"), PIECES: nested})

    # -- the decision

    def _candidates(self, summary: pa.Table, rows: Rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vectors, the row of each vector, rows that have one)."""
        n = summary.num_rows
        if self.params.length_normalize:
            column = summary.column(PIECES).combine_chunks()
            counts = np.diff(column.offsets.to_numpy())
            vectors, _ = embedding_matrix(column.flatten())
            return vectors, np.repeat(np.arange(n), counts), np.ones(n, bool)
        vectors, valid = embedding_matrix(rows.take(np.arange(n), [EMBEDDING]).column(EMBEDDING))
        return vectors[valid], np.flatnonzero(valid), valid

    def _solve(self, vectors: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """The candidates' potentials g, from the stored solve when there is one (a new budget)."""
        from curate.methods.ot import sinkhorn
        from curate.models.embedder import resolve_device

        stored = Path(self.prepared["models"]) / "potentials.npz"
        if stored.is_file():
            saved = np.load(stored, allow_pickle=False)
            if len(saved["g"]) == len(vectors):
                return saved["g"], json.loads(str(saved["summary"]))
        target = np.load(self.prepared["target"], allow_pickle=False)
        s = self.params.sinkhorn
        result = sinkhorn(target["vectors"], vectors, a=target["weights"], epsilon=s.epsilon,
                          relative=s.epsilon_relative, momentum=s.momentum, tolerance=s.tolerance,
                          max_iter=s.max_iter, block=s.block, device=resolve_device(s.device))
        summary = result.summary() | {"targets": len(target["vectors"]), "candidates": len(vectors)}
        np.savez(stored, g=result.g, summary=json.dumps(summary))
        return result.g, summary

    def decide(self, summary: pa.Table, rows: Rows) -> Decision:
        from curate.methods.ot import calibrated_gradient

        n = summary.num_rows
        vectors, owner, valid = self._candidates(summary, rows)
        reason = np.full(n, "missing_embedding", dtype=object)
        grad = np.full(n, np.nan)
        report: dict[str, Any] = {"rows": n, "with_embedding": int(valid.sum())}
        if len(vectors):
            g, solve = self._solve(vectors)
            per_vector = calibrated_gradient(g)
            counts = np.bincount(owner, minlength=n)
            grad[counts > 0] = (np.bincount(owner, per_vector, minlength=n) / np.maximum(counts, 1))[counts > 0]
            live = np.flatnonzero(valid)
            if self.params.budget == "auto":
                k, report["auto_budget"] = auto_budget_of_rows(grad[live], rows, live, self.params.compute, False,
                                                               self.name)
            else:
                k = budget_to_k(self.params.budget, n)
            keep = live[top_k(-grad[live], k)]
            reason[live] = "not_selected"
            reason[keep] = None
            report |= solve | {"budget": k, "kept": len(keep)}
            if not solve["converged"]:
                report["warning"] = (f"Sinkhorn did not converge (marginal error {solve['marginal_error']:.3g} > "
                                     f"tolerance {self.params.sinkhorn.tolerance}): ot_grad is approximate")
        column = pa.array(grad, pa.float64(), mask=np.isnan(grad))
        summary_keys = ("ot_cost", "iterations", "converged", "marginal_error", "epsilon", "budget", "warning",
                        "auto_budget")
        report["summary"] = {key: report[key] for key in summary_keys if key in report}
        return Decision(reason=pa.array(reason, pa.string()), score=column, adds={"ot_grad": column}, report=report)

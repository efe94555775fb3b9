"""`mixture`: a training mixture of several selections, with weights, a token budget and repeats (docs/methods.md §11).

Parts: the input steps (`from: [a, b]`; each row's `part` is its step's label), or one step split by a column
(`by: source`). Each part gets a target in budget units: `weights` (normalised) times the total budget (`tokens`,
or `rows`), or `part_tokens` per part. Units are tokens of `text` (`budget_on: all`) or supervised tokens
(`budget_on: response`: the response of instruction rows, every token of plain text), counted with `tokenizer`
(default: the tokenizer of the `finetune` step that trains on the mixture, else white-space words), or rows.

A part's rows form a pass (a row with a `repeats` column counts that many times; a `weight` column counts
floor(w) times plus once more with probability frac(w), seeded per id). A part with fewer units than its target
is repeated: whole passes, then a seeded sample of the rest of a pass; never more than `max_repeats` passes:
beyond that the shortfall is reported, not filled. A part that needs less than a pass gets a seeded sample.
A sample is a prefix of a seeded order of the pass, cut where its units come closest to the target, so a part's
realised units are within one row of its target. Without weights the parts keep their natural proportions;
without a budget every row is taken once, or, with weights, as much as the weights allow without repeating.

Output, in one seeded order (independent of workers and input sharding), in shards of `shard_rows`: `id`, `text`,
`prompt`/`response`/`answer`/`messages` where present, `source`, `part`, `repeat`, `parent_id`. A repeated row's
later copies are added rows (`<id>#<k>`, `parent_id` = the row's id); a row whose id an earlier part already
took is renamed `<id>@<part>` (`parent_id` = its id). Rows not taken are dropped with `not_sampled` (or
`zero_weight`), recorded by id and part only (the rows themselves are in the input steps); `mixture.json` in the
step folder tells per part what was asked, available and taken. Token counts are kept under the run's `scores/`,
so new weights or a new budget re-decide without counting again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curate.data.errors import CurateError
from curate.data.hashing import hash_strings_u64
from curate.models.token_count import WORDS, TokenCounter
from curate.stages.base import GlobalStage, Params, Rows, StageContext, register
from curate.stages.decision import PARENT_ID, PART, Decision

log = logging.getLogger("curate")
OUTPUT_COLUMNS = ("id", "source", "text", "prompt", "response", "answer", "messages", PART, "repeat", PARENT_ID)


class MixtureParams(Params):
    by: str | None = None  # split the one input step by this column instead of mixing several steps
    weights: dict[str, float] | None = None
    weights_from: str | None = None  # a `mixture_search` step: its recommended weights
    part_tokens: dict[str, int] | None = None
    tokens: int | None = Field(None, ge=1)
    rows: int | None = Field(None, ge=1)
    budget_on: Literal["all", "response"] = "all"
    tokenizer: str | None = None
    tokenizer_from: str | None = None  # set from the graph: which step's tokenizer `tokenizer` is
    max_repeats: int = Field(4, ge=1)
    seed: int = 0
    shard_rows: int = Field(100_000, ge=1)

    @model_validator(mode="after")
    def _one_budget(self) -> MixtureParams:
        if sum(x is not None for x in (self.weights, self.weights_from, self.part_tokens)) > 1:
            raise ValueError("give one of `weights` or `weights_from` (with a total `tokens` or `rows`), or "
                             "`part_tokens`")
        if self.part_tokens is not None and (self.tokens is not None or self.rows is not None):
            raise ValueError("`part_tokens` sets each part's budget: leave `tokens` and `rows` out")
        if self.tokens is not None and self.rows is not None:
            raise ValueError("give a total budget in `tokens` or in `rows`, not both")
        bad = {k: v for k, v in (self.weights or {}).items() if not v >= 0}
        bad.update({k: v for k, v in (self.part_tokens or {}).items() if not v >= 0})
        if bad:
            raise ValueError(f"weights and part_tokens must be >= 0, got {bad}")
        if self.weights is not None and not sum(self.weights.values()) > 0:
            raise ValueError("the weights sum to 0")
        return self


def _pass_sample(units: np.ndarray, target: float, rng: np.random.Generator) -> np.ndarray:
    """Positions (into `units`) of a seeded sample whose units come closest to `target` (ties: fewer rows)."""
    order = rng.permutation(len(units))
    cums = np.concatenate([[0.0], np.cumsum(units[order], dtype=np.float64)])
    i = int(np.searchsorted(cums, target, side="left"))
    candidates = [c for c in (i - 1, i) if 0 <= c < len(cums)]
    best = min(candidates, key=lambda c: (abs(cums[c] - target), c))
    return order[:best]


SEARCH_FILE = "search.json"  # what a `mixture_search` step recommends (curate.stages.mixture_search)


def recommended_weights(folder: Path) -> dict[str, float]:
    """The weights a finished mixture search recommends (`weights_from: <search step>`)."""
    path = Path(folder) / SEARCH_FILE
    if not path.is_file():
        raise CurateError(f"no mixture search result in {str(folder)!r} ({SEARCH_FILE} is missing)")
    return dict(json.loads(path.read_text())["recommended"])


def part_copies(units: np.ndarray, per_pass: np.ndarray, target: float, max_repeats: int,
                rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Copies of each row of one part for `target` budget units, and the shortfall (units asked, not taken).

    A pass holds row i `per_pass[i]` times; whole passes are taken first, then a sample of the rest."""
    available = float(np.dot(units, per_pass))
    if available <= 0 or target <= 0:
        return np.zeros(len(units), np.int64), max(0.0, target) if available <= 0 else 0.0
    passes = target / available
    if passes >= max_repeats:
        return per_pass * max_repeats, target - max_repeats * available
    full = int(np.floor(passes))
    copies = per_pass * full
    slots = np.repeat(np.arange(len(units)), per_pass)  # one slot per copy in a pass
    picked = slots[_pass_sample(units[slots], target - full * available, rng)]
    return copies + np.bincount(picked, minlength=len(units)), 0.0


@register
class Mixture(GlobalStage):
    name = "mixture"
    selection_reasons = ("not_sampled", "zero_weight")
    Params = MixtureParams
    inputs = "many"
    output = "rows_added"
    report_file = "mixture.json"
    adds = ("id", PARENT_ID, PART)
    # Rows not taken stay in the input steps: rejected/ records them by id and part, not as copies.
    rejected_reference = ("id", PART)
    keep_summaries = True  # token counts are kept: new weights or budgets re-decide without counting again

    def configure(self) -> None:
        self.needs = ("id", "text", self.params.by or PART)
        self.uses = ("response", "repeats", "weight", PARENT_ID)

    def check_inputs(self, labels: Sequence[str]) -> str | None:
        p = self.params
        if p.by is not None:
            if len(labels) != 1:
                return f"from: a mixture split `by: {p.by}` takes one input step, got {len(labels)}"
            return None
        if len(labels) < 2:
            return (f"from: a mixture takes several input steps (`from: [a, b]`), or one split by a column "
                    f"(`by: source`); got one ({', '.join(labels)})")
        for key in ("weights", "part_tokens"):
            unknown = sorted(set(getattr(p, key) or {}) - set(labels))
            if unknown:
                return f"{key}: names {unknown}, not parts of this mixture; its parts: {', '.join(labels)}"
        return None

    def models(self) -> dict[str, str]:
        return {"tokenizer": self.params.tokenizer} if self.params.tokenizer else {}

    def model_steps(self) -> dict[str, str]:
        return {"weights_from": self.params.weights_from} if self.params.weights_from else {}

    def prepare(self, context: StageContext) -> dict[str, Any]:
        if not self.params.weights_from:
            return {}
        return {"weights": recommended_weights(context.step_models[self.params.weights_from])}

    def fingerprint_extra(self) -> dict[str, Any]:
        from curate.models.locate import named_model_identity

        return {"tokenizer": named_model_identity(self.params.tokenizer)} if self.params.tokenizer else {}

    def graph_defaults(self, readers: Sequence[Any], ancestors: Sequence[Any] = ()) -> dict[str, Any]:
        if self.params.tokenizer is not None:
            return {}
        for reader in readers:  # a fine-tune, or an evaluation whose arms fine-tune, of a named model
            model = (reader.params.get("model") if reader.name == "finetune" else
                     (reader.params.get("finetune") or {}).get("model") if reader.name == "evaluate" else None)
            if model:
                return {"tokenizer": model, "tokenizer_from": f"{reader.name} step {reader.label!r}"}
        return {}

    def summary_params(self) -> dict[str, Any]:
        p = self.params
        return {"by": p.by, "tokenizer": p.tokenizer, "seed": p.seed}  # `weight` columns draw with the seed

    def ordered_shard_rows(self) -> int:
        return self.params.shard_rows

    def output_columns(self, columns: Sequence[str]) -> list[str]:
        return [c for c in OUTPUT_COLUMNS if c in columns]

    def setup(self) -> None:
        self.counter = TokenCounter(self.params.tokenizer)

    def summarize(self, table: pa.Table) -> pa.Table:
        p = self.params
        total, supervised = self.counter.count_rows(table)
        part = pc.fill_null(pc.cast(table.column(p.by or PART), pa.string()), "null")
        columns: dict[str, Any] = {"id": table.column("id"), "part": part, "tokens": pa.array(total),
                                   "response_tokens": pa.array(supervised), "per_pass": pa.array(self._per_pass(table))}
        if PARENT_ID in table.column_names:
            columns[PARENT_ID] = pc.cast(table.column(PARENT_ID), pa.string())
        return pa.table(columns)

    def _per_pass(self, table: pa.Table) -> np.ndarray:
        """How many times each row counts in one pass over its part (`repeats`, or a `weight` column)."""
        n = table.num_rows
        if "repeats" in table.column_names:
            values = pc.fill_null(pc.cast(table.column("repeats"), pa.float64()), 1.0).to_numpy(zero_copy_only=False)
            return np.maximum(np.round(values), 0).astype(np.int64)
        if "weight" in table.column_names:
            w = np.maximum(pc.fill_null(pc.cast(table.column("weight"), pa.float64()), 1.0)
                           .to_numpy(zero_copy_only=False), 0.0)
            # A uniform draw per id (not per position), so a row's count does not depend on the sharding.
            u = np.asarray(hash_strings_u64(table.column("id").to_pylist(), self.params.seed), np.float64) / 2**64
            return (np.floor(w) + (u < w - np.floor(w))).astype(np.int64)
        return np.ones(n, np.int64)

    # ------------------------------------------------------------ deciding

    def _targets(self, names: list[str], available: dict[str, float]) -> tuple[dict[str, float], dict[str, float],
                                                                              float | None]:
        """Per part: the weight asked (normalised), the target in budget units; and the total budget."""
        p = self.params
        budget = p.tokens if p.tokens is not None else p.rows
        if p.part_tokens is not None:
            targets = {n: float(p.part_tokens.get(n, 0)) for n in names}
            total = sum(targets.values())
            return {n: t / total if total else 0.0 for n, t in targets.items()}, targets, total
        raw = p.weights if p.weights is not None else self.prepared.get("weights") or available
        asked = {n: float(raw.get(n, 0.0)) for n in names}
        live = {n: w for n, w in asked.items() if w > 0 and available[n] > 0}
        for n in names:
            if asked[n] > 0 and available[n] <= 0:
                log.warning("mixture: part %r is empty; its share goes to the other parts", n)
        norm = sum(live.values())
        share = {n: live.get(n, 0.0) / norm if norm else 0.0 for n in names}
        if budget is None:  # as much as the weights allow without repeating any part
            budget = min((available[n] / s for n, s in share.items() if s > 0), default=0.0)
        total_asked = sum(asked.values())
        return ({n: w / total_asked if total_asked else 0.0 for n, w in asked.items()},
                {n: share[n] * budget for n in names}, float(budget))

    def decide(self, summary: pa.Table, rows: Rows) -> Decision:
        p = self.params
        n = summary.num_rows
        part = summary.column("part").to_numpy(zero_copy_only=False).astype(object)
        names = list(getattr(rows, "labels", [])) if p.by is None else []
        names += [x for x in dict.fromkeys(part.tolist()) if x not in names]
        if p.by is not None:
            for key in ("weights", "part_tokens"):
                unknown = sorted(set(getattr(p, key) or {}) - set(names))
                if unknown:
                    raise CurateError(f"mixture.{key}: names {unknown}, not values of column {p.by!r}; the "
                                      f"parts there are: {', '.join(map(str, names))}")
        get = lambda c: summary.column(c).to_numpy(zero_copy_only=False).astype(np.int64)  # noqa: E731
        tokens, response, per_pass = get("tokens"), get("response_tokens"), get("per_pass")
        units = (np.ones(n, np.int64) if p.rows is not None else response if p.budget_on == "response" else tokens)
        members = {name: np.flatnonzero(part == name) for name in names}
        available = {name: float(np.dot(units[i], per_pass[i])) for name, i in members.items()}
        asked, targets, budget = self._targets(names, available)
        copies = np.zeros(n, np.int64)
        report_parts = {}
        for k, name in enumerate(names):
            i = members[name]
            rng = np.random.default_rng([p.seed, k])
            c, shortfall = part_copies(units[i].astype(np.float64), per_pass[i], targets[name], p.max_repeats, rng)
            copies[i] = c
            if shortfall > 0 and available[name] > 0:
                log.warning("mixture: part %r has %s %s, %.4g short of its target %s after max_repeats=%d passes",
                            name, f"{available[name]:,.0f}", self._unit(), shortfall, f"{targets[name]:,.0f}",
                            p.max_repeats)
            report_parts[name] = self._part_report(asked[name], targets[name], available[name], shortfall,
                                                   c, units[i], tokens[i], response[i], per_pass[i])
        taken_units = sum(r["units_taken"] for r in report_parts.values())
        for r in report_parts.values():
            r["share"] = r["units_taken"] / taken_units if taken_units else 0.0
        reason = np.where(copies > 0, None, np.where(per_pass > 0, "not_sampled", "zero_weight")).astype(object)
        ids, parent = self._renamed_ids(summary, copies, part, names)
        positions = self._positions(copies)
        report = {"budget": {"unit": self._unit(), "asked": budget if p.tokens or p.rows or p.part_tokens else None,
                             "taken": taken_units},
                  "tokenizer": {"name": p.tokenizer or WORDS, "from": p.tokenizer_from or (
                      "config" if p.tokenizer else "default (no tokenizer given)")},
                  "seed": p.seed, "max_repeats": p.max_repeats, "parts": report_parts,
                  "totals": {"rows": int(n), "rows_taken": int((copies > 0).sum()), "copies": int(copies.sum()),
                             "tokens_taken": int(np.dot(copies, tokens)),
                             "response_tokens_taken": int(np.dot(copies, response))},
                  "parents": [{"label": label, "fingerprint": fp} for label, fp in
                              zip(getattr(rows, "labels", []), getattr(rows, "fingerprints", []), strict=False)]}
        return Decision(reason=pa.array(reason, pa.string()), score=pa.array(units, pa.float64()),
                        adds={"id": ids, PARENT_ID: parent, PART: pa.array(part, pa.string())},
                        positions=positions, report=report)

    def _unit(self) -> str:
        p = self.params
        return "rows" if p.rows is not None else "response tokens" if p.budget_on == "response" else "tokens"

    @staticmethod
    def _part_report(asked: float, target: float, available: float, shortfall: float, copies: np.ndarray,
                     units: np.ndarray, tokens: np.ndarray, response: np.ndarray, per_pass: np.ndarray) -> dict:
        taken = float(np.dot(copies, units))
        return {"weight": asked, "target": target, "rows": len(copies), "available": available,
                "tokens": int(np.dot(per_pass, tokens)), "response_tokens": int(np.dot(per_pass, response)),
                "rows_taken": int((copies > 0).sum()), "copies": int(copies.sum()), "units_taken": taken,
                "tokens_taken": int(np.dot(copies, tokens)), "response_tokens_taken": int(np.dot(copies, response)),
                "repeats": taken / available if available else 0.0, "shortfall": shortfall,
                "empty": available <= 0}

    @staticmethod
    def _renamed_ids(summary: pa.Table, copies: np.ndarray, part: np.ndarray,
                     names: list[str]) -> tuple[pa.Array, pa.Array]:
        """A taken row whose id an earlier part (or an earlier row) already took becomes `<id>@<part>`."""
        ids = summary.column("id").combine_chunks()
        parent = (summary.column(PARENT_ID).combine_chunks() if PARENT_ID in summary.column_names
                  else pa.nulls(len(ids), pa.string()))
        taken = np.flatnonzero(copies > 0)
        if not len(taken):
            return ids, parent
        rank = {name: k for k, name in enumerate(names)}
        order = taken[np.lexsort((taken, np.vectorize(rank.__getitem__, otypes=[np.int64])(part[taken])))]
        codes = pc.dictionary_encode(ids.take(pa.array(order))).indices.to_numpy(zero_copy_only=False)
        _, first = np.unique(codes, return_index=True)
        repeated = np.setdiff1d(np.arange(len(order)), first)
        if not len(repeated):
            return ids, parent
        rows = order[repeated]
        values, parents = ids.to_pylist(), parent.to_pylist()
        for r in rows.tolist():
            parents[r] = parents[r] or values[r]
            values[r] = f"{values[r]}@{part[r]}"
        return pa.array(values, pa.string()), pa.array(parents, pa.string())

    def _positions(self, copies: np.ndarray) -> pa.Array:
        """Output positions of every copy: one seeded permutation over (row, copy) in input order."""
        total = int(copies.sum())
        order = np.random.default_rng([self.params.seed, 1 << 20]).permutation(total)
        offsets = np.concatenate([[0], np.cumsum(copies)]).astype(np.int32 if total < 2**31 else np.int64)
        kind = pa.ListArray if offsets.dtype == np.int32 else pa.LargeListArray
        return kind.from_arrays(pa.array(offsets), pa.array(order, pa.int64()))

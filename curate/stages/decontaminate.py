"""`decontaminate`: drop or cut pool rows that share long word n-grams with evaluation sets (docs/methods.md §14).

1. `prepare` indexes the sets named in `against` (`heldout`, `target`, or files with a question and an answer field):
   every `ngram`-word window of each item's question and answer, the windows that straddle question→answer, and
   items of `min_item_words` to `ngram`−1 words whole (`curate.methods.decontamination.EvalIndex`).
2. Per shard, every window of the scanned columns (`text`, `prompt`, `response`, chat turns) is looked up; each hit
   keeps its column, n-gram and span in the original string. These are the stored scores: a new `max_doc_freq`,
   `mode` or cut setting decides again without scanning.
3. The decision ignores n-grams found in more than `max_doc_freq` rows (boilerplate; listed as `ignored_frequent`),
   then rejects every row with a hit (`contaminated:<set>:<item>`). In `mode: cut`, a text-only row whose hits are
   all in `text` is cut instead (NeMo's rule, `curate.methods.decontamination.cut_fragments`): its pieces longer than
   `min_chars` become new rows `<id>#cut<k>` with its `parent_id` (`cut_output: join`: one row, pieces joined by a
   blank line); instruction and chat rows are always dropped whole. Every hit is a row of the SQL view
   `<label>_matches`; `decontaminate.json` has the index report (items too short to index, n-grams ignored).

This is the one stage that may read the run's `heldout:` rows, and only to remove what repeats them.
"""

from __future__ import annotations

import glob
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curate.data.columns import TRAINING_COLUMNS
from curate.data.errors import CurateError
from curate.methods.decontamination import FIELDS, HIT_TYPE, EvalIndex, cut_fragments, scan
from curate.methods.text_windows import Normalization
from curate.stages.base import GlobalStage, Params, Rows, StageContext, register
from curate.stages.decision import PARENT_ID, POSITION, Decision

log = logging.getLogger("curate")
SFT_COLUMNS = ("response", "messages")  # a row with one of these is an example: dropped whole, never cut
INDEX_FILE = "index.parquet"
MAX_FREQUENT_MATCHES = 1000  # per ignored n-gram, the rows listed in `<label>_matches`


class EvalSet(Params):
    """An evaluation set in files: read like any input (JSONL, Parquet, CSV, Arrow, a Hugging Face folder)."""

    name: str = Field(pattern=r"^[\w.-]+$")
    path: str | list[str]
    fields: dict[Literal["question", "answer", "id"], str] = {"question": "question", "answer": "answer"}
    format: Literal["auto", "jsonl", "json", "parquet", "csv", "arrow", "hf"] = "auto"
    split: str | None = None

    def paths(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)


class DecontaminateParams(Params):
    against: list[Literal["heldout", "target"] | EvalSet] = Field(min_length=1)
    ngram: int = Field(13, ge=2)
    min_item_words: int = Field(8, ge=1)
    fields: list[Literal["question", "answer", "overlap"]] = list(FIELDS)
    max_doc_freq: int | None = Field(10, ge=1)  # None: no n-gram is too frequent
    mode: Literal["cut", "drop"] = "cut"  # cut: text-only rows are cut; instruction and chat rows are dropped
    columns: list[str] = list(TRAINING_COLUMNS)
    margin: int = Field(200, ge=0)
    min_chars: int = Field(200, ge=0)
    max_splits: int = Field(10, ge=1)
    boundaries: str = Field(".!?", min_length=1)
    cut_output: Literal["rows", "join"] = "rows"
    numbers: bool = False  # digit runs -> 0 (DataTrove's default)
    diacritics: bool = False  # strip combining marks (DataTrove's default; it erases vowel signs in Indic scripts)
    symbols: bool = False  # Unicode symbols ($ + = ©) -> space, as punctuation

    @model_validator(mode="after")
    def _consistent(self) -> DecontaminateParams:
        if self.min_item_words > self.ngram:
            raise ValueError(f"min_item_words ({self.min_item_words}) must be at most ngram ({self.ngram})")
        names = [s if isinstance(s, str) else s.name for s in self.against]
        if len(set(names)) != len(names):
            raise ValueError(f"against: each set needs its own name, got {names}")
        return self

    def norm(self) -> Normalization:
        return Normalization(self.numbers, self.diacritics, self.symbols)


@register
class Decontaminate(GlobalStage):
    name = "decontaminate"
    Params = DecontaminateParams
    output = "rows_added"
    keep_summaries = True
    report_file = "decontaminate.json"

    def configure(self) -> None:
        self.needs = ("id",)
        self.uses = tuple(dict.fromkeys([*self.params.columns, *SFT_COLUMNS]))

    def samples(self) -> tuple[str, ...]:
        return tuple(s for s in ("heldout", "target") if s in self.params.against)

    def files(self) -> dict[str, str]:
        return {f"against[{i}].path": path for i, s in enumerate(self.params.against) if isinstance(s, EvalSet)
                for path in s.paths()}

    def fingerprint_extra(self) -> dict[str, Any]:
        found = []
        for s in self.params.against:
            if isinstance(s, EvalSet):
                for pattern in s.paths():
                    for path in sorted(glob.glob(pattern)) or [pattern]:
                        stat = os.stat(path) if os.path.exists(path) else None
                        found.append([path, stat.st_size if stat else None, stat.st_mtime_ns if stat else None])
        return {"files": found} if found else {}

    def summary_params(self) -> dict[str, Any]:
        decides = ("max_doc_freq", "mode", "margin", "min_chars", "max_splits", "boundaries", "cut_output")
        return self.config() | dict.fromkeys(decides)

    # -- the index

    def prepare(self, context: StageContext) -> dict[str, Any]:
        from curate.methods.eval_sets import read_eval_set, sample_items

        p = self.params
        sets = {}
        for entry in p.against:
            if entry == "heldout":
                if context.heldout is None:
                    raise CurateError("decontaminate: against: heldout, but the run has no held-out rows")
                sets["heldout"] = sample_items(context.heldout)
            elif entry == "target":
                if context.target is None:
                    raise CurateError("decontaminate: against: target, but the run has no `target:`")
                sets["target"] = sample_items(context.target)
            else:
                sets[entry.name] = read_eval_set(entry)
        index = EvalIndex.build(sets, p.ngram, p.min_item_words, p.fields, p.norm())
        context.models_dir.mkdir(parents=True, exist_ok=True)
        path = context.models_dir / INDEX_FILE
        index.save(path)
        for name, stats in index.report["sets"].items():
            log.info("%s: %s: %d items, %d n-grams indexed, %d items too short to index", context.label, name,
                     stats["items"], stats["keys"], stats["too_short"])
        return {"index": str(path), "index_report": index.report}

    def setup(self) -> None:
        self.index = EvalIndex.load(Path(self.prepared["index"]))

    # -- per shard: the hits

    def summarize(self, table: pa.Table) -> pa.Table:
        hits: list[list[dict[str, Any]]] = [[] for _ in range(table.num_rows)]
        for column in self.params.columns:
            if column in table.column_names:
                for row, found in enumerate(scan(table.column(column).to_pylist(), column, self.index)):
                    hits[row].extend(found)
        example = np.zeros(table.num_rows, bool)
        for column in SFT_COLUMNS:
            if column in table.column_names:
                values = table.column(column)
                present = pc.is_valid(values)
                if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
                    present = pc.and_(present, pc.not_equal(values, ""))
                example |= pc.fill_null(present, False).to_numpy(zero_copy_only=False).astype(bool)
        return pa.table({"id": table.column("id"), "hits": pa.array(hits, pa.list_(HIT_TYPE)),
                         "example": pa.array(example)})

    # -- the decision

    def decide(self, summary: pa.Table, rows: Rows) -> Decision:
        p = self.params
        index = EvalIndex.load(Path(self.prepared["index"]))
        n = summary.num_rows
        hits_column = summary.column("hits").combine_chunks()
        flat = pc.list_flatten(hits_column)
        row_of = pc.list_parent_indices(hits_column).to_numpy().astype(np.int64)
        keys = flat.field("key").to_numpy(zero_copy_only=False) if len(flat) else np.zeros(0, np.uint64)
        frequent = _frequent_keys(row_of, keys, p.max_doc_freq)
        active = ~np.isin(keys, list(frequent)) if frequent else np.ones(len(keys), bool)
        hits = flat.to_pylist()
        ids = summary.column("id").to_pylist() if n else []
        example = summary.column("example").to_numpy(zero_copy_only=False)

        by_row: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for h, row in enumerate(row_of.tolist()):
            if active[h]:
                by_row[row].append(hits[h])
        cut_rows = [r for r, found in by_row.items()
                    if p.mode == "cut" and not example[r] and all(
                        h["column"] == "text" and h["start"] is not None for h in found)]
        texts = dict(zip(cut_rows, rows.take(np.array(cut_rows, np.int64), ["text"]).column("text").to_pylist(),
                         strict=True)) if cut_rows else {}

        reason: list[str | None] = [None] * n
        score = np.full(n, np.nan)
        detail = {"contaminated_set": [None] * n, "contaminated_item": [None] * n, "contaminated_ngram": [None] * n,
                  "decontaminate_action": [None] * n}
        added: dict[str, list] = {"id": [], PARENT_ID: [], "text": [], POSITION: []}
        actions: dict[int, tuple[str, int]] = {}
        for row, found in sorted(by_row.items()):
            first = min(found, key=lambda h: (h["column"], h["start"] if h["start"] is not None else -1))
            entry = index.entry_records(first["key"])[0]
            reason[row] = f"contaminated:{entry['set']}:{entry['item']}"
            score[row] = len({h["key"] for h in found})
            pieces = None
            if row in texts and texts[row] is not None:
                pieces = cut_fragments(texts[row], [(h["start"], h["end"]) for h in found], p.margin, p.min_chars,
                                       p.max_splits, p.boundaries)
            if pieces is not None and p.cut_output == "join":
                pieces = ["\n\n".join(pieces)]
            for k, piece in enumerate(pieces or []):
                added["id"].append(f"{ids[row]}#cut{k}")
                added[PARENT_ID].append(ids[row])
                added["text"].append(piece)
                added[POSITION].append(row)
            action = "cut" if pieces else "drop"
            actions[row] = (action, len(pieces or []))
            for key, value in (("contaminated_set", entry["set"]), ("contaminated_item", entry["item"]),
                               ("contaminated_ngram", first["ngram"]), ("decontaminate_action", action)):
                detail[key][row] = value

        matches = _matches(hits, row_of, active, ids, index, actions, frequent)
        report = self._report(n, actions, frequent, matches)
        log.info("%s: %d rows matched an evaluation set (%d dropped, %d cut into %d pieces); %d n-gram(s) found in "
                 "more than max_doc_freq=%s rows ignored", self.name, len(actions), report["dropped"],
                 report["cut"], report["pieces"], len(frequent), p.max_doc_freq)
        return Decision(
            reason=pa.array(reason, pa.string()), score=pa.array(score, pa.float64(), mask=np.isnan(score)),
            details={k: pa.array(v, pa.string()) for k, v in detail.items()},
            added=pa.table({"id": pa.array(added["id"], pa.string()),
                            PARENT_ID: pa.array(added[PARENT_ID], pa.string()),
                            "text": pa.array(added["text"], pa.string()),
                            POSITION: pa.array(added[POSITION], pa.int64())}),
            report=report)

    def _report(self, n: int, actions: dict[int, tuple[str, int]], frequent: dict[int, int],
                matches: list[dict[str, Any]]) -> dict[str, Any]:
        dropped = sum(1 for a, _ in actions.values() if a == "drop")
        cut = len(actions) - dropped
        pieces = sum(k for _, k in actions.values())
        report = {"rows": n, "matched": len(actions), "dropped": dropped, "cut": cut, "pieces": pieces,
                  "ignored_frequent": len(frequent), "index": self.prepared.get("index_report", {}),
                  "tables": {"matches": matches}}
        report["summary"] = {k: report[k] for k in ("matched", "dropped", "cut", "pieces", "ignored_frequent")}
        return report


def _frequent_keys(row_of: np.ndarray, keys: np.ndarray, max_doc_freq: int | None) -> dict[int, int]:
    """Keys found in more than `max_doc_freq` distinct rows, with that number (their df)."""
    if max_doc_freq is None or not len(keys):
        return {}
    pairs = np.unique(np.stack([keys, row_of.astype(np.uint64)], 1), axis=0)
    found, df = np.unique(pairs[:, 0], return_counts=True)
    return {int(k): int(d) for k, d in zip(found, df, strict=True) if d > max_doc_freq}


def _matches(hits: list[dict[str, Any]], row_of: np.ndarray, active: np.ndarray, ids: list[str], index: EvalIndex,
             actions: dict[int, tuple[str, int]], frequent: dict[int, int]) -> list[dict[str, Any]]:
    """One record per hit and index entry: what `<label>_matches` shows."""
    out, listed = [], defaultdict(int)
    for h, row in enumerate(row_of.tolist()):
        hit = hits[h]
        if active[h]:
            action, pieces = actions[row]
        else:
            listed[hit["key"]] += 1
            if listed[hit["key"]] > MAX_FREQUENT_MATCHES:
                continue
            action, pieces = "ignored_frequent", 0
        for entry in index.entry_records(hit["key"]):
            out.append({"id": ids[row], "column": hit["column"], "set": entry["set"], "item": entry["item"],
                        "field": entry["field"], "ngram": hit["ngram"], "start": hit["start"], "end": hit["end"],
                        "action": action, "pieces": pieces, "df": frequent.get(hit["key"])})
    return out

"""`decontaminate` on real data: GSM8K and MMLU-Redux questions planted in real web text (C4) are found, and clean
GSM8K training rows are rarely flagged against other GSM8K questions (docs/methods.md §14)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa

from curate.methods.decontamination import EvalIndex
from curate.methods.eval_sets import items_from_rows
from curate.methods.text_windows import normalize_text
from curate.stages.decontaminate import Decontaminate

DATA = Path(__file__).resolve().parents[1] / "data"


def read(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines()]


def plant(doc: str, question: str, k: int) -> str:
    """The question inside the document at a sentence end, as a copy on the web would be: some upper-cased,
    some with other white space."""
    if k % 3 == 1:
        question = question.upper()
    elif k % 3 == 2:
        question = question.replace(" ", "  ").replace("\n", " \n\n ")
    cut = doc.find(". ", len(doc) // 2)
    cut = len(doc) if cut < 0 else cut + 1
    return f"{doc[:cut]} {question} {doc[cut:]}"


def stage_with(benchmark: dict[str, pa.Table], tmp_path: Path) -> Decontaminate:
    stage = Decontaminate(against=["heldout"], mode="drop")
    p = stage.params
    index = EvalIndex.build(benchmark, p.ngram, p.min_item_words, p.fields, p.norm())
    index.save(tmp_path / "index.parquet")
    stage.prepared = {"index": str(tmp_path / "index.parquet"), "index_report": index.report}
    return stage


def test_planted_questions_are_found_and_clean_rows_are_not(tmp_path):
    gsm8k, mmlu, web = read("decontam_gsm8k.jsonl"), read("decontam_mmlu_redux.jsonl"), read(
        "heuristics_c4_web_sample.jsonl")
    bench_gsm8k, clean_gsm8k = gsm8k[:300], gsm8k[300:]
    benchmark = {"gsm8k": items_from_rows(pa.Table.from_pylist(bench_gsm8k)),
                 "mmlu": items_from_rows(pa.Table.from_pylist(mmlu))}
    stage = stage_with(benchmark, tmp_path)
    planted_items = [r for r in bench_gsm8k[:150] + mmlu[:150]
                     if len(normalize_text(r["prompt"]).split()) >= stage.params.min_item_words]
    assert len(planted_items) >= 290  # nearly every question is long enough to index
    rng = random.Random(0)
    rows = [{"id": f"planted-{r['id']}", "text": plant(rng.choice(web)["text"], r["prompt"], k)}
            for k, r in enumerate(planted_items)]
    rows += [{"id": f"web-{r['id']}", "text": r["text"]} for r in web]
    rows += [{"id": f"clean-{r['id']}", "text": f"{r['prompt']}\n\n{r['response']}", "prompt": r["prompt"],
              "response": r["response"]} for r in clean_gsm8k]
    kept, rejected = stage(pa.Table.from_pylist(rows))
    assert kept.num_rows + rejected.num_rows == len(rows)
    flagged = set(rejected.column("id").to_pylist())
    planted = {r["id"] for r in rows if r["id"].startswith("planted-")}
    recall = len(flagged & planted) / len(planted)
    clean = {r["id"] for r in rows if r["id"].startswith("clean-")}
    false_share = len(flagged & clean) / len(clean)
    web_flagged = {i for i in flagged if i.startswith("web-")}
    assert recall >= 0.99, recall  # measured: 1.0
    assert false_share <= 0.005, (false_share, sorted(flagged & clean))  # measured: 2 of 1,200 (near-duplicates)
    assert not web_flagged
    reasons = {r for r in rejected.column("reason").to_pylist()}
    assert all(r.startswith(("contaminated:gsm8k:", "contaminated:mmlu:")) for r in reasons)

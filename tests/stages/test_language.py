"""`language`: offline fastText identification with the packaged model; reasons and scores kept."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from curate.stages.language import Language

POOL = Path(__file__).parents[1] / "data" / "ingest" / "pool_sample.jsonl"
TEXTS = {
    "en": "The committee will meet again next week to discuss the budget for the new library.",
    "fr": "Le comité se réunira de nouveau la semaine prochaine pour discuter du budget de la bibliothèque.",
    "de": "Der Ausschuss trifft sich nächste Woche wieder, um das Budget der neuen Bibliothek zu besprechen.",
}


def test_keeps_listed_languages_and_records_why_others_were_dropped():
    table = pa.table({"id": list(TEXTS), "text": list(TEXTS.values())})
    kept, rejected = Language(languages=["en", "de"])(table)
    assert kept.column("id").to_pylist() == ["en", "de"]
    assert kept.column("language").to_pylist() == ["en", "de"]
    assert min(kept.column("language_score").to_pylist()) > 0.8
    (row,) = rejected.to_pylist()
    assert (row["id"], row["reason"], row["language"]) == ("fr", "wrong_language", "fr")
    assert row["score"] == row["language_score"] > 0.8


def test_low_confidence_and_empty_list_keeps_every_language():
    table = pa.table({"id": ["a", "b", "c"], "text": ["zzzz qqq", TEXTS["fr"], None]})
    kept, rejected = Language(languages=[], min_confidence=0.5)(table)
    assert kept.column("id").to_pylist() == ["b"]
    assert set(rejected.column("reason").to_pylist()) == {"low_language_confidence"}


def test_real_english_prose_is_kept():
    rows = [json.loads(line) for line in POOL.read_text().splitlines()]
    prose = [r for r in rows if r["domain"] in ("encyclopedia", "literature", "biomedical")]
    table = pa.table({"id": [r["id"] for r in prose], "text": [r["text"] for r in prose]})
    kept, rejected = Language()(table)
    assert rejected.num_rows == 0 and kept.num_rows == len(prose) == 36

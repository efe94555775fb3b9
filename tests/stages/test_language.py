"""`language`: offline fastText identification with the packaged model; reasons and scores kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# Batched identification (curate.models.fasttext_batch) against fastText's own per-line call.
MIXED = Path(__file__).parents[1] / "data" / "language_mixed.jsonl"


def _per_line(stage: Language, texts: list[str | None]) -> tuple[list[str], list[float], list[float]]:
    """fastText's per-line top-1 label and score, and the gap to its second label (near-ties may swap)."""
    lines = pc.replace_substring_regex(pc.fill_null(pa.array(texts, pa.string()), ""), pattern=r"\s+",
                                       replacement=" ").to_pylist()
    codes, scores, gaps = [], [], []
    for line in lines:
        labels, probs = stage.model.predict(line, k=2)
        codes.append(labels[0].removeprefix("__label__"))
        scores.append(float(probs[0]))
        gaps.append(float(probs[0] - probs[1]) if len(probs) > 1 else 1.0)
    return codes, scores, gaps


def _assert_same_as_per_line(stage: Language, texts: list[str | None]) -> None:
    codes, scores = stage.identify(pa.array(texts, pa.string()))
    expected, expected_scores, gaps = _per_line(stage, texts)
    for i, (code, want, gap) in enumerate(zip(codes.to_pylist(), expected, gaps, strict=True)):
        assert code == want or gap < 1e-5, (i, texts[i], code, want)
    assert np.abs(scores.to_numpy() - np.clip(expected_scores, 0, 1)).max() < 1e-5


@pytest.fixture(scope="module")
def language_stage() -> Language:
    stage = Language(languages=[])
    stage.setup()
    assert stage.batched is not None  # the packaged model is batched
    return stage


def test_batched_identification_equals_fasttexts_per_line_call_on_real_multilingual_text(language_stage):
    rows = [json.loads(line) for line in MIXED.read_text().splitlines()]
    texts = [r["text"] for r in rows]
    codes, _ = language_stage.identify(pa.array(texts))
    assert len(set(codes.to_pylist())) >= 12  # really multilingual
    _assert_same_as_per_line(language_stage, texts)
    # twice: the second batch reads the word cache the first one filled
    _assert_same_as_per_line(language_stage, texts[::-1])


def test_batched_identification_handles_what_fasttext_treats_specially(language_stage):
    texts = [None, "", "   \n\t", "hello </s> bonjour tout le monde", "__label__fr the cat sat on the mat",
             "Grüße\x00aus\x0bBerlin\x0cund\r\nMünchen", "  leading and trailing  ", "ok", "</s>", "日本語のテキスト"]
    _assert_same_as_per_line(language_stage, texts)


WORDS = st.sampled_from(["the", "le", "der", "</s>", "__label__de", " ", "\n", "\x00", "\x0b", "é", "日"])
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80) | st.lists(WORDS, max_size=6).map("".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(TEXT | st.none(), min_size=1, max_size=12))
def test_batched_identification_equals_per_line_on_generated_text(language_stage, texts):
    _assert_same_as_per_line(language_stage, texts)


def test_a_small_word_cache_is_reset_and_gives_the_same_answers():
    stage = Language(languages=[])
    stage.setup()
    stage.batched.max_words = 500
    rows = [json.loads(line)["text"] for line in MIXED.read_text().splitlines()]
    sizes = []
    for start in range(0, 60, 10):
        _assert_same_as_per_line(stage, rows[start:start + 10])
        sizes.append(len(stage.batched.words))
    assert max(sizes) <= 500 + 400 and sizes != sorted(sizes)  # it was reset on the way


def _train(tmp_path: Path, **args) -> object:
    import fasttext

    lines = [f"__label__en {TEXTS['en']}", f"__label__fr {TEXTS['fr']}", f"__label__de {TEXTS['de']}"] * 20
    train = tmp_path / "train.txt"
    train.write_text("\n".join(lines) + "\n")
    for seed in (1, 2, 3, 4):  # a model this small can diverge ("Encountered NaN"): another seed
        try:
            return fasttext.train_supervised(str(train), epoch=5, dim=8, minn=2, maxn=3, lr=0.05, thread=1,
                                             seed=seed, verbose=0, **args)
        except RuntimeError:
            continue
    raise AssertionError("fastText diverged with every seed")


def test_softmax_models_are_batched_and_word_ngram_models_are_not(tmp_path):
    from curate.models.fasttext_batch import batchable

    softmax = _train(tmp_path, loss="softmax")
    softmax.save_model(str(tmp_path / "softmax.bin"))
    stage = Language(languages=[], model=str(tmp_path / "softmax.bin"))
    stage.setup()
    assert stage.batched is not None and not stage.batched.hierarchical
    _assert_same_as_per_line(stage, [*TEXTS.values(), "le der the", "", "__label__en x"])
    bigrams = _train(tmp_path, loss="softmax", wordNgrams=2)
    assert not batchable(bigrams)
    bigrams.save_model(str(tmp_path / "bigrams.bin"))
    stage = Language(languages=[], model=str(tmp_path / "bigrams.bin"))
    stage.setup()
    assert stage.batched is None
    _assert_same_as_per_line(stage, list(TEXTS.values()))

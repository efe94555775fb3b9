"""The `heuristics` stage: each rule's statistic on known inputs, rule order, instruction data, real data."""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curate.data.dataset import Dataset
from curate.data.errors import ConfigError
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from curate.methods.text import split_words
from curate.stages import REGISTRY
from curate.stages.heuristics import GOPHER, REASONS, RULES, Heuristics, TextStats
from curate.stages.repetition import duplicate_pieces, ngram_fractions, split_pieces

DATA = Path(__file__).parents[1] / "data"
OFF = {rule.param: None for rule in RULES} | {"drop_empty_text": False, "min_response_words": None}


def only(**params) -> Heuristics:
    """A stage with every rule off except the given ones."""
    return Heuristics({**OFF, **params})


def verdicts(stage: Heuristics, texts: list, **columns: list) -> list[tuple[str | None, float | None]]:
    decision = stage.process(pa.table({"text": pa.array(texts, pa.string()), **columns}))
    return list(zip(decision.reason.to_pylist(), decision.score.to_pylist(), strict=True))


def check(stage: Heuristics, text: str, reason: str | None, score: float | None = None) -> None:
    (got_reason, got_score), = verdicts(stage, [text])
    assert got_reason == reason
    if score is not None:
        assert got_score == pytest.approx(score)


# ---------------------------------------------------------------- the stage contract


def test_registered_with_its_contract():
    assert REGISTRY["heuristics"] is Heuristics
    assert Heuristics.needs == ("text",)
    assert Heuristics.kind == "map"
    assert len(set(REASONS)) == len(REASONS)


def test_bad_params_fail_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="max_duplicate_5gram_char_fraction"):
        parse_config({"name": "t", "inputs": [{"path": str(DATA / "heuristics_gsm8k.jsonl")}],
                      "output": str(tmp_path / "run"), "stages": [
                          {"heuristics": {"max_duplicate_5gram_char_fraction": 1.5}}]})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config({"name": "t", "inputs": [{"path": str(DATA / "heuristics_gsm8k.jsonl")}],
                      "output": str(tmp_path / "run"), "stages": [{"heuristics": {"min_word": 3}}]})


# ---------------------------------------------------------------- each rule on known inputs


def test_word_and_char_bounds_with_boundaries():
    check(only(min_words=3), "one two", "too_few_words", 2)
    check(only(min_words=3), "one two three", None)  # equal to the bound passes
    check(only(max_words=3), "a b c d", "too_many_words", 4)
    check(only(max_words=3), "a b c", None)
    check(only(min_chars=10), "abc def", "too_short_chars", 7)  # white space counts
    check(only(min_chars=7), "abc def", None)
    check(only(max_chars=5), "héllo!", "too_long_chars", 6)  # code points, not bytes
    check(only(max_chars=6), "héllo!", None)


def test_mean_word_length():
    check(only(min_mean_word_length=3.5), "aa bbbb", "mean_word_length", 3.0)
    check(only(min_mean_word_length=3.0), "aa bbbb", None)
    check(only(max_mean_word_length=2.5), "aa bbbb", "mean_word_length", 3.0)
    check(only(max_mean_word_length=3.0), "aa bbbb", None)


def test_alpha_word_fraction():
    # words with a letter: abc, 4x5, été -> 3 of 5
    check(only(min_alpha_word_fraction=0.61), "abc 123 4x5 !! été", "low_alpha_words", 0.6)
    check(only(min_alpha_word_fraction=0.6), "abc 123 4x5 !! été", None)


def test_symbol_word_ratio_counts_hash_runs_and_ellipses():
    # 2 hash runs ("#tag", "##x") in 5 words = 0.4; "####" below is one run
    check(only(max_symbol_word_ratio=0.3), "#tag ##x one two three", "symbol_ratio", 0.4)
    check(only(max_symbol_word_ratio=0.4), "#tag ##x one two three", None)
    check(only(max_symbol_word_ratio=0.1), "so the answer is ten\n#### 10", "symbol_ratio", 1 / 7)
    # ellipses: "..." three times ("......" is two) and "…" once in 6 words; hashes: none
    check(only(max_symbol_word_ratio=0.6), "wait... what…  no...... really ok fine", "symbol_ratio", 4 / 6)


def test_bullet_and_ellipsis_lines():
    text = "- one\n  * two\n• three\n\nfour\n"  # 4 non-blank lines, 3 bullets
    check(only(max_bullet_line_fraction=0.7), text, "bullet_lines", 0.75)
    check(only(max_bullet_line_fraction=0.75), text, None)
    text = "a...\nb …\nc\nd... e"  # lines ending with an ellipsis: 2 of 4
    check(only(max_ellipsis_line_fraction=0.4), text, "ellipsis_lines", 0.5)
    check(only(max_ellipsis_line_fraction=0.5), text, None)


def test_stop_words_are_distinct_case_and_punctuation_insensitive():
    text = "The cat and THE dog (the end)."  # distinct: the, and
    check(only(min_stop_words=3), text, "few_stop_words", 2)
    check(only(min_stop_words=2), text, None)
    check(only(min_stop_words=1, stop_words=["CAT"]), "Cat, dog.", None)


def test_duplicate_lines():
    text = "aaa\nb\n  aaa  \n\naaa\nccccc"  # lines aaa b aaa aaa ccccc: 2 repeats of 5; chars 6 of 15
    check(only(max_duplicate_line_fraction=0.39), text, "duplicate_lines", 0.4)
    check(only(max_duplicate_line_fraction=0.4), text, None)
    check(only(max_duplicate_line_char_fraction=0.39), text, "duplicate_line_chars", 0.4)
    check(only(max_duplicate_line_char_fraction=0.4), text, None)


def test_duplicate_paragraphs():
    text = "para one\nline\n\npara two\n \n\npara one\nline"  # 3 paragraphs, the 3rd repeats the 1st
    check(only(max_duplicate_paragraph_fraction=0.3), text, "duplicate_paragraphs", 1 / 3)
    # paragraph characters: 13 + 8 + 13, repeated 13
    check(only(max_duplicate_paragraph_char_fraction=0.3), text, "duplicate_paragraph_chars", 13 / 34)
    check(only(max_duplicate_paragraph_char_fraction=13 / 34), text, None)


def test_top_ngram_covers_occurrences_once():
    # "the cat" occurs twice; its words cover the/cat/the/cat = 12 of 15 characters
    check(only(max_top_2gram_char_fraction=0.7), "the cat the cat sat", "top_2gram", 0.8)
    check(only(max_top_2gram_char_fraction=0.8), "the cat the cat sat", None)
    # overlapping occurrences of "go go" (3 of them) cover all 4 words once
    check(only(max_top_2gram_char_fraction=0.9), "go go go go", "top_2gram", 1.0)
    # all 2-grams distinct: 0 (Gopher counts a single occurrence; we need a repeat)
    check(only(max_top_2gram_char_fraction=0.0), "one two three four", None)


def test_top_ngram_ties_take_the_one_covering_most_characters():
    # "a b", "b ccc" and "ccc dd" all occur twice; "ccc dd" covers the most: 10 of 15 characters
    text = "a b ccc dd a b ccc dd e"
    check(only(max_top_2gram_char_fraction=0.5), text, "top_2gram", 10 / 15)
    check(only(max_top_3gram_char_fraction=0.0), text, "top_3gram", 12 / 15)  # "b ccc dd" beats "a b ccc"


def test_duplicate_ngram_char_fraction():
    text = "alpha beta gamma delta epsilon alpha beta gamma delta epsilon zeta"
    # the second "alpha .. epsilon" is a repeat: 26 of 56 characters
    check(only(max_duplicate_5gram_char_fraction=0.4), text, "duplicate_5gram", 26 / 56)
    check(only(max_duplicate_5gram_char_fraction=26 / 56), text, None)
    check(only(max_duplicate_6gram_char_fraction=0.0), text, None)  # no 6-gram repeats


# ---------------------------------------------------------------- a brute-force reference


def _reference(text: str) -> dict[str, float]:
    """The statistics of `curate.stages.repetition`, one document at a time, the slow obvious way."""
    def pieces(parts):
        kept = [p.strip() for p in parts if p.strip()]
        seen, repeated, repeated_chars = set(), 0, 0
        for piece in kept:
            if piece in seen:
                repeated, repeated_chars = repeated + 1, repeated_chars + len(piece)
            seen.add(piece)
        total = sum(map(len, kept))
        return (repeated / len(kept), repeated_chars / total) if kept else (math.nan, math.nan)

    out = {}
    out["line"], out["line_chars"] = pieces(text.split("\n"))
    out["para"], out["para_chars"] = pieces(re.split(r"\n\s*\n", text))
    words = text.split()
    chars = sum(map(len, words))
    for n in range(2, 11):
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        counts = Counter(grams)
        top = 0
        if counts and max(counts.values()) >= 2:
            best = max(counts.values())
            for gram in [g for g, c in counts.items() if c == best]:
                covered = set()
                for i, g in enumerate(grams):
                    if g == gram:
                        covered.update(range(i, i + n))
                top = max(top, sum(len(words[i]) for i in covered))
        seen, covered = set(), set()
        for i, g in enumerate(grams):
            if g in seen:
                covered.update(range(i, i + n))
            seen.add(g)
        dup = sum(len(words[i]) for i in covered)
        out[f"top{n}"] = top / chars if chars else math.nan
        out[f"dup{n}"] = dup / chars if chars else math.nan
    return out


def test_vectorised_statistics_match_a_per_document_reference():
    rng = random.Random(7)
    vocab = ["a", "bb", "ccc", "dd", "e", "ffff", "a.", "#"]
    texts = []
    for _ in range(300):
        parts = []
        for _ in range(rng.randint(0, 30)):
            parts.append(rng.choice(vocab))
            parts.append(rng.choice([" ", " ", " ", "  ", "\n", "\n\n", " \n \n"]))
        texts.append("".join(parts))
    texts[5], texts[9] = "", "  \n "
    column = pa.array(texts)
    words = split_words(column)
    word_len = pc.utf8_length(words.flat).to_numpy().astype(np.int64)
    ngrams = ngram_fractions(words, word_len, range(2, 5), range(2, 11))
    lines = duplicate_pieces(split_pieces(column, "\n"))
    paras = duplicate_pieces(split_pieces(column, r"\n\s*\n", regex=True))
    for i, text in enumerate(texts):
        ref = _reference(text)
        got = {"line": lines[0][i], "line_chars": lines[1][i], "para": paras[0][i], "para_chars": paras[1][i]}
        got |= {f"top{n}": ngrams["top", n][i] for n in range(2, 5)}
        got |= {f"dup{n}": ngrams["duplicate", n][i] for n in range(2, 11)}
        for key, value in got.items():
            assert value == pytest.approx(ref[key], nan_ok=True), (i, key, text)


# ---------------------------------------------------------------- order, switches, null and sliced input


def test_first_failing_rule_in_order_decides():
    text = "x x x x x x x x"  # too short in characters, short words, repetitive
    stage = only(min_chars=20, min_mean_word_length=2.0, max_top_2gram_char_fraction=0.5)
    check(stage, text, "too_short_chars", 15)
    check(only(min_mean_word_length=2.0, max_top_2gram_char_fraction=0.5), text, "mean_word_length", 1.0)
    check(only(max_top_2gram_char_fraction=0.5), text, "top_2gram", 1.0)
    order = [rule.reason for rule in RULES]
    assert order.index("too_few_words") < order.index("mean_word_length") < order.index("duplicate_lines")
    assert order.index("duplicate_lines") < order.index("top_2gram") < order.index("duplicate_5gram")
    assert REASONS[:3] == ("empty_text", "empty_response", "response_too_short")


def test_all_rules_off_keeps_everything_and_computes_nothing(monkeypatch):
    def boom(*_args, **_kwargs):
        raise AssertionError("a statistic of a rule that is off was computed")

    monkeypatch.setattr("curate.stages.heuristics.ngram_fractions", boom)
    monkeypatch.setattr("curate.stages.heuristics.split_pieces", boom)
    assert verdicts(only(), ["", None, "# # # #", "a a a a a a"]) == [(None, None)] * 4


def test_defaults_catch_junk_and_keep_a_normal_sentence():
    stage = Heuristics()
    cases = {
        "": "empty_text",
        "   \n ": "empty_text",
        "ok": "too_few_words",
        "a b c": "too_short_chars",
        "$$ %% 12 34 56 78 && ** ++ == 99": "low_alpha_words",
        "#love #instagood #photooftheday #fashion #beautiful so happy today with friends": "symbol_ratio",
        "buy cheap pills now, best price online. " * 6: "top_3gram",
        "Click here\nClick here\nClick here\nsubscribe to our newsletter today": "duplicate_lines",
    }
    got = verdicts(stage, list(cases))
    assert [reason for reason, _ in got] == list(cases.values())
    check(stage, "The quick brown fox jumps over the lazy dog near the river bank.", None)


def test_null_text_is_empty_and_never_crashes():
    assert verdicts(Heuristics(), [None, "a fine short sentence here"]) == [("empty_text", 0.0), (None, None)]
    # with the empty rule off, later rules judge a null text as having no words
    assert verdicts(only(min_words=1), [None]) == [("too_few_words", 0.0)]
    assert verdicts(only(max_duplicate_5gram_char_fraction=0.0, min_alpha_word_fraction=0.5), [None]) == [
        (None, None)]  # NaN statistics fail nothing


def test_sliced_and_chunked_tables_give_the_same_verdicts():
    texts = ["", "one two", "x y x y x y x y", None, "a normal sentence with enough words in it",
             "- a\n- b\n- c", "ok ok", "wait...\nhmm...\nyes", "word " * 12]
    table = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts})
    stage = Heuristics(min_words=3, max_top_2gram_char_fraction=0.3)
    expected = stage.process(table)
    for start, length in [(2, 5), (1, 8), (4, 3)]:
        piece = stage.process(table.slice(start, length))
        assert piece.reason.to_pylist() == expected.reason.to_pylist()[start:start + length]
        assert piece.score.to_pylist() == expected.score.to_pylist()[start:start + length]
    chunked = pa.Table.from_batches(table.to_batches(max_chunksize=2))
    assert chunked.column("text").num_chunks > 1
    assert stage.process(chunked).reason.to_pylist() == expected.reason.to_pylist()


# ---------------------------------------------------------------- instruction data


def test_response_rules_on_instruction_rows():
    prompts = ["What is 2 + 2?", "Name a colour.", "Say hi to everyone.", "Spell the word necessary.",
               "Summarise the text."]
    responses = ["2 + 2 = 4, so the answer is 4.", "", "   ", None, "Short answer"]
    texts = [p + "\n\n" + (r or "") for p, r in zip(prompts, responses, strict=True)]
    got = verdicts(Heuristics(), texts, prompt=prompts, response=responses)
    assert got == [(None, None), ("empty_response", 0.0), ("empty_response", 0.0), (None, None), (None, None)]
    stage = Heuristics(min_response_words=3)
    got = verdicts(stage, texts, prompt=prompts, response=responses)
    assert [r for r, _ in got] == [None, "empty_response", "empty_response", None, "response_too_short"]
    assert got[4][1] == 2.0
    got = verdicts(Heuristics(min_response_words=None), texts, prompt=prompts, response=responses)
    assert [r for r, _ in got] == [None] * 5
    # without a response column the response rules do not apply
    assert verdicts(Heuristics(min_response_words=50), ["plain text row with some words"]) == [(None, None)]


def test_repetition_rules_judge_the_response_of_instruction_rows():
    prompt = "Which option repeats the phrase the quick brown fox jumps over the lazy dog?"
    response = "The phrase the quick brown fox jumps over the lazy dog appears in option B."
    pair = {"prompt": [prompt], "response": [response]}
    stage = Heuristics({**OFF, "max_duplicate_5gram_char_fraction": 0.15})
    assert verdicts(stage, [prompt + "\n\n" + response], **pair) == [(None, None)]  # quoting is fine
    on_text = Heuristics({**OFF, "max_duplicate_5gram_char_fraction": 0.15, "repetition_field": "text"})
    (reason, score), = verdicts(on_text, [prompt + "\n\n" + response], **pair)
    assert reason == "duplicate_5gram" and score > 0.3
    looping = "I am sorry, I cannot help with that. " * 4
    only_responses = Heuristics({**OFF, "max_top_2gram_char_fraction": 0.0, "repetition_field": "response"})
    assert verdicts(only_responses, [looping]) == [(None, None)]  # no response column: nothing judged
    got = verdicts(Heuristics(), ["Help?\n\n" + looping], prompt=["Help?"], response=[looping])
    assert got == [("top_3gram", pytest.approx(4 * len("cannothelpwith") / (4 * len("Iamsorry,Icannothelpwiththat."))))]


def test_text_stats_are_lazy():
    stats = TextStats(pa.array(["a b"]))
    assert "ngrams" not in stats.__dict__
    assert stats.word_count.tolist() == [2.0]
    assert "ngrams" not in stats.__dict__ and "lines" not in stats.__dict__


def test_gopher_values_are_the_papers():
    stage = Heuristics(GOPHER)
    assert stage.params.min_words == 50 and stage.params.min_alpha_word_fraction == 0.8
    assert stage.params.max_duplicate_10gram_char_fraction == 0.10
    assert stage.params.repetition_field == "text"
    check(stage, "A short but perfectly fine sentence.", "too_few_words", 6)


# ---------------------------------------------------------------- real data


def load_jsonl(name: str) -> pa.Table:
    """A sample as ingest maps it: `text`, else prompt + blank line + response; `response` kept."""
    rows = [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").split("\n") if line]
    texts = [r["text"] if r.get("text") is not None else f"{r['prompt']}\n\n{r['response']}" for r in rows]
    columns = {"id": [r["id"] for r in rows], "text": texts}
    if any("response" in r for r in rows):
        columns["response"] = [r.get("response") for r in rows]
    return pa.table(columns)


@pytest.mark.parametrize(("name", "most"), [
    ("heuristics_gsm8k.jsonl", 0.02),
    ("heuristics_mbpp.jsonl", 0.03),
    ("heuristics_gpteacher_codegen.jsonl", 0.02),
    ("heuristics_wikitext2_test.jsonl", 0.02),
])
def test_defaults_keep_clean_data(name, most):
    table = load_jsonl(name)
    assert table.num_rows >= 100
    kept, rejected = Heuristics()(table)
    assert kept.num_rows + rejected.num_rows == table.num_rows
    assert rejected.num_rows <= most * table.num_rows, rejected.select(["reason", "score"]).to_pylist()


def test_web_sample_loses_its_spam():
    table = load_jsonl("heuristics_c4_web_sample.jsonl")
    _, rejected = Heuristics()(table)
    assert 0 < rejected.num_rows <= 0.05 * table.num_rows
    dropped = dict(zip(rejected.column("text").to_pylist(), rejected.column("reason").to_pylist(), strict=True))
    spam = [t for t in table.column("text").to_pylist() if t.startswith(("Access All Records Of", "Yamsixteen"))]
    assert spam and all(t in dropped for t in spam)
    # Gopher's own values drop many more of these chunked web rows (most are under 50 words)
    assert Heuristics(GOPHER)(table)[1].num_rows > 2 * rejected.num_rows


# ---------------------------------------------------------------- through the runner


def test_runs_through_the_runner(tmp_path):
    rows = [{"id": f"r{i}", "prompt": f"What is {i} plus {i}?", "response": f"{i} plus {i} is {2 * i}."}
            for i in range(20)]
    rows += [{"id": "empty", "prompt": "Say something useful please.", "response": ""},
             {"id": "loop", "prompt": "Why?", "response": "because it is so. " * 8},
             {"id": "tiny", "prompt": "Hi", "response": "ok"}]
    source = tmp_path / "pairs.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    config = parse_config({"name": "t", "inputs": [{"path": str(source)}], "output": str(tmp_path / "run"),
                           "engine": {"prefect": False, "workers": 2},
                           "stages": [{"heuristics": {"min_words": 4}}]})
    results = run_pipeline(config)
    step = results[-1]
    assert step.stage == "heuristics" and step.rows_in == len(rows)
    kept = Dataset.open(tmp_path / "run" / "stages" / "01-heuristics")
    rejected = Dataset.open(tmp_path / "run" / "rejected" / "01-heuristics")
    assert kept.count() + rejected.count() == step.rows_in == step.rows_out + step.rows_rejected
    table = rejected.to_table()
    reasons = dict(zip(table.column("id").to_pylist(), table.column("reason").to_pylist(), strict=True))
    assert reasons == {"empty": "empty_response", "loop": "top_2gram", "tiny": "too_few_words"}
    assert set(table.column("stage").to_pylist()) == {"heuristics"}
    assert table.column("score").to_pylist()[table.column("id").to_pylist().index("tiny")] == 2.0
    assert step.reasons == {"empty_response": 1, "top_2gram": 1, "too_few_words": 1}

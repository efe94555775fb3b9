"""Decontamination's known answers (docs/methods.md §14.8): normalisation, keys, the index, the scan and NeMo's cut."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.methods.decontamination import EvalIndex, cut_fragments, scan
from curate.methods.text_windows import Normalization, ngram_keys, normalize_text, window_text, words_with_spans
from curate.stages.base import TableRows
from curate.stages.decontaminate import Decontaminate

QUESTION = ("which of the following statements best describes the relationship between the volume of a gas and its "
            "temperature at constant pressure")  # 21 words: nine 13-grams
FOX = "The quick brown fox jumps over the lazy dog while the cat sleeps soundly today."
FOX_13 = "the quick brown fox jumps over the lazy dog while the cat sleeps"


def items(*rows: tuple[str, str | None, str | None]) -> pa.Table:
    return pa.table({"item": [r[0] for r in rows], "question": [r[1] for r in rows], "answer": [r[2] for r in rows]})


def hits_of(texts: list[str], index: EvalIndex) -> list[list[dict]]:
    return scan(texts, "text", index)


def test_normalization_folds_case_width_punctuation_and_white_space():
    assert normalize_text("Wow!!!  The\tQUICK—brown\n\nfox’s “tale”,") == "wow the quick brown fox s tale"
    assert normalize_text("ＦＵＬＬ width ﬁne") == "full width fine"  # NFKC
    assert normalize_text("café") != normalize_text("cafe")
    assert normalize_text("café", Normalization(diacritics=True)) == "cafe"
    assert normalize_text("3.14 and 1,000 apples", Normalization(numbers=True)) == "0 and 0 apples"
    assert normalize_text("a+b=$5") == "a+b=$5" and normalize_text("a+b=$5", Normalization(symbols=True)) == "a b 5"


def test_words_keep_the_span_of_the_original_word():
    text = "Wow!!! The quick fox's"
    spans = words_with_spans(text)
    assert [w for w, _, _ in spans] == ["wow", "the", "quick", "fox", "s"]
    assert [text[s:e] for _, s, e in spans] == ["Wow!!!", "The", "quick", "fox's", "fox's"]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.text(min_size=0, max_size=40), min_size=1, max_size=6), st.integers(1, 4))
def test_equal_windows_have_equal_keys_wherever_they_are(texts, n):
    normalized = [normalize_text(t) for t in texts]
    windows = ngram_keys(normalized, [n])[n]
    seen: dict[str, int] = {}
    expected = sum(max(len(t.split()) - n + 1, 0) for t in normalized)
    assert len(windows.keys) == expected
    for key, t, s, e, w in zip(windows.keys.tolist(), windows.text.tolist(), windows.start.tolist(),
                               windows.end.tolist(), windows.word.tolist(), strict=True):
        words = window_text(normalized[t], s, e)
        assert words.split() == normalized[t].split()[w:w + n]
        assert seen.setdefault(words, key) == key


def test_verbatim_and_edited_copies_match():
    index = EvalIndex.build({"bench": items(("q1", QUESTION, None))})
    copies = [
        f"Intro text. {QUESTION}? More text.",
        f"INTRO {QUESTION.upper()}",
        "intro " + QUESTION.replace(" of ", ", of ").replace("gas", "gas,"),
        "intro " + QUESTION.replace(" ", "  \n ").replace("relationship", "“relationship”"),
        "intro " + QUESTION.replace("volume", "ｖｏｌｕｍｅ"),
    ]
    for text, found in zip(copies, hits_of(copies, index), strict=True):
        assert found, text
        assert [e["field"] for e in index.entry_records(found[0]["key"])] == ["question"]
    # diacritics only fold when asked
    accented = QUESTION.replace("relationship", "rélationship")
    assert not hits_of([accented], index)[0]
    folded = EvalIndex.build({"bench": items(("q1", QUESTION, None))}, norm=Normalization(diacritics=True))
    assert hits_of([accented], folded)[0]


def test_a_near_miss_of_twelve_words_does_not_match():
    index = EvalIndex.build({"bench": items(("q1", FOX_13, None))})
    near = FOX_13.replace("sleeps", "naps")
    assert not hits_of([f"so {near} and more"], index)[0]
    assert hits_of([f"so {FOX_13} and more"], index)[0]


def test_a_short_item_matches_whole_and_a_shorter_one_is_reported():
    index = EvalIndex.build({"b": items(("red", "Which planet is known as the red planet?", None),
                                        ("water", "What is the boiling point of water?", None))})
    assert index.report["sets"]["b"]["too_short_items"] == ["water"]
    found = hits_of(["Quiz night: which planet is known as the red planet? Mars, of course.",
                     "which planet is known as the red", "What is the boiling point of water? 100 C."], index)
    assert [len(f) for f in found] == [1, 0, 0]
    assert [e["field"] for e in index.entry_records(found[0][0]["key"])] == ["short_item"]


def test_question_to_answer_straddles_are_indexed():
    index = EvalIndex.build({"b": items(("q", "one two three four five six seven eight nine ten",
                                         "eleven twelve thirteen fourteen"))}, n=13)
    text = "one two three four five six seven eight nine ten eleven twelve thirteen"
    (found,) = hits_of([text], index)
    fields = {e["field"] for h in found for e in index.entry_records(h["key"])}
    assert fields == {"short_item", "overlap"}  # the 10-word question whole, and the 13 words across into the answer
    (found,) = hits_of(["eight nine ten eleven twelve thirteen fourteen"], index)
    assert not found  # a straddle shorter than n is no match


def test_the_span_is_the_original_matched_substring():
    text = f"Wow!!! {FOX} Yes."
    index = EvalIndex.build({"b": items(("fox", FOX_13, None))})
    (hit,) = hits_of([text], index)[0]
    assert text[hit["start"]:hit["end"]] == "The quick brown fox jumps over the lazy dog while the cat sleeps"


def test_chat_turns_are_scanned_and_named():
    index = EvalIndex.build({"b": items(("q1", QUESTION, None))})
    chats = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": QUESTION}], None]
    found = scan(chats, "messages", index)
    assert {h["column"] for h in found[0]} == {"messages[1]"} and len(found[0]) == 9 and found[1] == []


def fillers(first: int, last: int) -> str:
    return " ".join(f"Filler sentence number {k:02d} is here to pad it." for k in range(first, last + 1))


def test_the_exact_cut():
    text = f"{fillers(0, 11)} {FOX} {fillers(12, 23)}"
    assert len(text) == 1159 and text.index(FOX) == 540
    index = EvalIndex.build({"b": items(("fox", FOX_13, None))})
    (hit,) = hits_of([text], index)[0]
    assert (hit["start"], hit["end"]) == (540, 604)
    pieces = cut_fragments(text, [(540, 604)])
    assert pieces == [text[0:314], text[844:]]
    assert pieces[0] == fillers(0, 6) and pieces[1] == " " + fillers(17, 23) and len(pieces[1]) == 315
    assert cut_fragments(text, [(540, 604)], min_chars=320) is None
    small = f"Alpha beta gamma delta. Epsilon zeta eta. {FOX} Iota kappa lambda mu. Nu xi omicron pi rho."
    (hit,) = hits_of([small], index)[0]
    assert cut_fragments(small, [(hit["start"], hit["end"])], margin=10, min_chars=10) == [
        "Alpha beta gamma delta.", " Iota kappa lambda mu. Nu xi omicron pi rho."]


def test_more_pieces_than_max_splits_drop_the_row():
    text = " ".join(f"{fillers(0, 4)} {FOX}" for _ in range(3)) + " " + fillers(0, 4)
    spans = [(i, i + len(FOX_13)) for i in range(len(text)) if text.startswith(FOX[:-24], i)]
    assert len(cut_fragments(text, spans, margin=0, min_chars=10)) == 4
    assert cut_fragments(text, spans, margin=0, min_chars=10, max_splits=3) is None


def stage_on(table: pa.Table, sets: dict[str, pa.Table], tmp_path: Path, **params) -> tuple[Decontaminate, tuple]:
    stage = Decontaminate(against=["heldout"], **params)
    index = EvalIndex.build(sets, stage.params.ngram, stage.params.min_item_words, stage.params.fields,
                            stage.params.norm())
    index.save(tmp_path / "index.parquet")
    stage.prepared = {"index": str(tmp_path / "index.parquet"), "index_report": index.report}
    return stage, stage(table)


def test_frequent_boilerplate_is_ignored_above_max_doc_freq(tmp_path):
    boiler = "permission is hereby granted free of charge to any person obtaining a copy of this software"
    sets = {"heldout": items(("lic", f"Read this: {boiler}.", None))}
    for copies, removed in ((11, 0), (10, 10)):
        table = pa.table({"id": [f"r{i}" for i in range(copies + 5)],
                          "text": [f"row {i}: {boiler}" for i in range(copies)] + ["clean row"] * 5})
        stage, (kept, rejected) = stage_on(table, sets, tmp_path, max_doc_freq=10)
        assert rejected.num_rows == removed and kept.num_rows == copies + 5 - removed
    stage, _ = stage_on(table.slice(0, 0), sets, tmp_path)
    summary = stage.summarize(pa.table({"id": [f"r{i}" for i in range(11)],
                                        "text": [f"row {i}: {boiler}" for i in range(11)]}))
    decision = stage.decide(summary, TableRows(summary))
    matches = decision.report["tables"]["matches"]
    assert decision.report["ignored_frequent"] >= 1 and {m["action"] for m in matches} == {"ignored_frequent"}
    assert {m["df"] for m in matches} == {11}


def test_rows_are_dropped_or_cut_with_reasons(tmp_path):
    long_text = f"{fillers(0, 11)} {FOX} {fillers(12, 23)}"
    table = pa.table({"id": ["web", "sft", "clean"], "text": [long_text, "q: " + FOX, "nothing here"],
                      "prompt": [None, FOX, None], "response": [None, "an answer", None]})
    sets = {"heldout": items(("h7", FOX_13, None))}
    _, (kept, rejected) = stage_on(table, sets, tmp_path)
    assert sorted(rejected.column("id_original" if "id_original" in rejected.column_names else "id").to_pylist()) \
        == ["sft", "web"]
    assert set(rejected.column("reason").to_pylist()) == {"contaminated:heldout:h7"}
    actions = dict(zip(rejected.column("id").to_pylist(), rejected.column("decontaminate_action").to_pylist(),
                       strict=True))
    assert actions == {"web": "cut", "sft": "drop"}
    rows = {r["id"]: r for r in kept.to_pylist()}
    assert set(rows) == {"clean", "web#cut0", "web#cut1"}
    assert rows["web#cut0"]["text"] == long_text[:314] and rows["web#cut1"]["text"] == long_text[844:]
    assert rows["web#cut0"]["parent_id"] == "web"
    _, (kept, rejected) = stage_on(table, sets, tmp_path, cut_output="join")
    assert {r["id"]: r["text"] for r in kept.to_pylist()}["web#cut0"] == long_text[:314] + "\n\n" + long_text[844:]
    _, (kept, rejected) = stage_on(table, sets, tmp_path, mode="drop")
    assert kept.column("id").to_pylist() == ["clean"] and rejected.num_rows == 2


def test_parameter_errors_name_the_key():
    with pytest.raises(Exception, match="min_item_words"):
        Decontaminate(against=["heldout"], ngram=5, min_item_words=8)
    with pytest.raises(Exception, match="against"):
        Decontaminate(against=[])

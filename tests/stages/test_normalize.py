"""`normalize`: Unicode NFC, white space rules, code indentation kept, empty texts dropped."""

from __future__ import annotations

import unicodedata

import pyarrow as pa

from curate.stages.normalize import Normalize


def run(texts: list, **params) -> tuple[pa.Table, pa.Table]:
    return Normalize(**params)(pa.table({"id": [str(i) for i in range(len(texts))], "text": texts}))


def test_nfc_and_whitespace_rules():
    decomposed = unicodedata.normalize("NFD", "Café crème")
    kept, _ = run([f"  {decomposed}\u00a0au\tlait \r\n\r\n\r\n\r\nnext\u200b line  \n"])
    assert kept.column("text").to_pylist() == ["Café crème au lait\n\nnext line"]


def test_code_indentation_is_kept_unless_collapse_spaces():
    code = "def f(x):\n    if x:\n        return 1"
    assert run([code])[0].column("text").to_pylist() == [code]
    assert run(["a    b"], collapse_spaces=True)[0].column("text").to_pylist() == ["a b"]


def test_empty_after_normalising_is_rejected_and_other_columns_normalised():
    table = pa.table({"id": ["a", "b"], "text": ["\u200b \n\t", "fine"], "prompt": ["  q  ", None],
                      "response": ["r\r\n", "x"]})
    kept, rejected = Normalize()(table)
    assert kept.to_pylist() == [{"id": "b", "text": "fine", "prompt": None, "response": "x"}]
    assert rejected.column("reason").to_pylist() == ["empty_text"]
    assert rejected.column("prompt").to_pylist() == ["q"]


def test_nfkc_and_ftfy_options():
    assert run(["ﬁne ①"], unicode="NFKC")[0].column("text").to_pylist() == ["fine 1"]
    assert run(["schÃ¶n"], fix_text=True)[0].column("text").to_pylist() == ["schön"]
    assert run(["schÃ¶n"])[0].column("text").to_pylist() == ["schÃ¶n"]

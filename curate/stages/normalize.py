"""`normalize`: Unicode and white-space normalisation of the text columns (map stage).

Steps, in order, on each of `columns` present in the data:
1. optional ftfy fixes (mojibake, HTML entities, bad quotes): `fix_text: true` (slow: a Python call per row);
2. Unicode normalisation (`unicode: NFC` by default; NFKC also folds compatibility characters);
3. white space: CRLF/CR -> LF, tabs, vertical tabs, form feeds and exotic spaces (no-break, em/en, ideographic)
   -> ' ', zero-width characters removed, trailing spaces on each line removed, 3+ line breaks -> 2,
   leading/trailing blanks stripped. Runs of spaces inside a line are kept (space-indented code keeps its
   indentation; a tab becomes one space) unless `collapse_spaces: true`.
Rows whose `text` is empty afterwards are dropped with reason `empty_text`.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from curate.stages.base import MapStage, Params, register
from curate.stages.decision import Decision

# (pattern, replacement) pairs for RE2 (pc.replace_substring_regex), applied in order.
_WHITESPACE = [
    (r"\r\n?", "\n"),
    ("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000\t\v\f]", " "),
    ("[\u200b\u200c\u200d\u2060\ufeff]", ""),
    (r" +\n", "\n"),
    (r"\n{3,}", "\n\n"),
    (r"^\s+|\s+$", ""),
]


class NormalizeParams(Params):
    columns: list[str] = ["text", "prompt", "response"]
    unicode: Literal["NFC", "NFKC", "none"] = "NFC"
    whitespace: bool = True
    collapse_spaces: bool = False
    fix_text: bool = False


@register
class Normalize(MapStage):
    name = "normalize"
    Params = NormalizeParams
    needs = ("text",)

    def configure(self) -> None:
        # rewrites each of `columns` that the data has
        self.uses = self.adds = tuple(dict.fromkeys(["text", *self.params.columns]))

    def normalize(self, values: pa.Array) -> pa.Array:
        p = self.params
        if p.fix_text:
            import ftfy

            values = pa.array([None if v is None else ftfy.fix_text(v) for v in values.to_pylist()], pa.string())
        if p.unicode != "none":
            values = pc.utf8_normalize(values, form=p.unicode)
        if p.whitespace:
            rules = list(_WHITESPACE)
            if p.collapse_spaces:
                rules.insert(3, (" {2,}", " "))
            for pattern, replacement in rules:
                values = pc.replace_substring_regex(values, pattern=pattern, replacement=replacement)
        return values

    def process(self, table: pa.Table) -> Decision:
        adds = {c: self.normalize(table.column(c).combine_chunks())
                for c in self.params.columns if c in table.column_names}
        text = adds.get("text", table.column("text").combine_chunks())
        empty = pc.fill_null(pc.equal(pc.utf8_length(text), 0), True)
        reason = pc.if_else(empty, pa.scalar("empty_text"), pa.scalar(None, pa.string()))
        return Decision(reason=reason, adds=adds)

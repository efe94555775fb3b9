"""Stage `heuristics`: documented, configurable quality rules (Gopher-style), each with a reason code.

Rules run in this fixed order; the first rule a row fails decides its `reason`, and `score` is the
value of that rule's statistic for the row. A rule whose parameter is null (or false) is off, and a
statistic is only computed when a rule that uses it is on. A row fails a `min_*` rule when its statistic
is below the bound and a `max_*` rule when it is above it (a value equal to the bound passes). A
statistic that cannot be measured (NaN: a text without words, a row without a response) fails nothing.

| #  | reason                      | parameter                               | default | Gopher  |
|----|-----------------------------|-----------------------------------------|---------|---------|
| 1  | `empty_text`                | drop_empty_text                         | true    |         |
| 2  | `empty_response`            | min_response_words (response words = 0) | 1       |         |
| 3  | `response_too_short`        | min_response_words                      | 1       |         |
| 4  | `too_few_words`             | min_words                               | 3       | 50      |
| 5  | `too_many_words`            | max_words                               | 100000  | 100000  |
| 6  | `too_short_chars`           | min_chars                               | 10      |         |
| 7  | `too_long_chars`            | max_chars                               | 1000000 |         |
| 8  | `mean_word_length`          | min_mean_word_length                    | 2       | 3       |
| 9  | `mean_word_length`          | max_mean_word_length                    | 20      | 10      |
| 10 | `low_alpha_words`           | min_alpha_word_fraction                 | 0.2     | 0.8     |
| 11 | `symbol_ratio`              | max_symbol_word_ratio                   | 0.1     | 0.1     |
| 12 | `bullet_lines`              | max_bullet_line_fraction                | 0.9     | 0.9     |
| 13 | `ellipsis_lines`            | max_ellipsis_line_fraction              | 0.3     | 0.3     |
| 14 | `few_stop_words`            | min_stop_words                          | null    | 2       |
| 15 | `duplicate_lines`           | max_duplicate_line_fraction             | 0.4     | 0.3     |
| 16 | `duplicate_line_chars`      | max_duplicate_line_char_fraction        | 0.2     | 0.2     |
| 17 | `duplicate_paragraphs`      | max_duplicate_paragraph_fraction        | 0.3     | 0.3     |
| 18 | `duplicate_paragraph_chars` | max_duplicate_paragraph_char_fraction   | 0.2     | 0.2     |
| 19 | `top_2gram`                 | max_top_2gram_char_fraction             | 0.40    | 0.20    |
| 20 | `top_3gram`                 | max_top_3gram_char_fraction             | 0.36    | 0.18    |
| 21 | `top_4gram`                 | max_top_4gram_char_fraction             | 0.32    | 0.16    |
| 22 | `duplicate_5gram` .. `duplicate_10gram` | max_duplicate_{5..10}gram_char_fraction | 0.30 .. 0.20 | 0.15 .. 0.10 |

Statistics (per row; words are white-space separated, characters are Unicode code points):
- words: words of `text` (a null text has none); response words: words of `response` (NaN where null).
- chars: characters of `text`, white space included.
- mean word length: characters of all words / words.
- alpha word fraction: words containing at least one letter (Unicode category L) / words.
- symbol-word ratio: max(runs of "#", occurrences of "..." or "…") / words. Gopher checks the two
  symbols against one bound, which is the same; a run ("####", "##") counts once so that GSM8K's
  "#### 72" answer marks and Markdown headings stay cheap while hashtag lists do not.
- bullet / ellipsis line fraction: lines (non-blank, trimmed; see `curate.stages.repetition`) that start
  with one of `BULLETS` / end with "..." or "…", over all lines.
- stop words: distinct `stop_words` among the words, lower-cased, with non-alphanumeric characters
  stripped from both ends (Gopher: at least 2 of "the, be, to, of, and, that, have, with").
- duplicate line / paragraph fractions and top / duplicate n-gram char fractions: defined in
  `curate.stages.repetition`. They judge `repetition_field`: by default the response where a row has
  one (answers quote their question: judged on prompt + response, clean Q&A pairs look repetitive),
  else the text.

`gopher_compat: true` reproduces DataTrove's Gopher filters instead (repetition then quality, as DataTrove
runs them by default, on `text`): its spaCy English words (emulated: no spaCy needed), statistics, order and
reason names, each bounded by the parameter of the rule above that it mirrors (Gopher's values by default in
this mode; 0 is off, as in DataTrove). Definitions and reasons: `curate.methods.gopher_datatrove.RULES`.

Why the defaults differ from Gopher: Gopher's rules were tuned on web pages of at least 50 words. The
defaults here also keep short instruction data (math word problems, one-line answers, code): Gopher's
50-word minimum, 3..10 mean word length and 0.8 alpha-word fraction drop most code and math rows, and
on a 40-word answer one phrase said twice already covers 15-30% of the characters, so the repetition
bounds are about twice Gopher's (still far below the 0.5+ of text pasted twice or a looping answer).
`GOPHER` holds the paper's values: `Heuristics(GOPHER)` for web-scale pre-training text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curate.methods.gopher_datatrove import EMPTY, GopherStats
from curate.methods.gopher_datatrove import RULES as COMPAT_RULES
from curate.methods.gopher_datatrove import Rule as CompatRule
from curate.methods.text import Words, split_words
from curate.stages.base import MapStage, Params, register
from curate.stages.decision import Decision
from curate.stages.repetition import (
    PARAGRAPH_BREAK,
    Pieces,
    duplicate_pieces,
    ngram_fractions,
    ratio,
    split_pieces,
)

GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
BULLETS = "-*•‣◦⁃∙"
# n-gram sizes of the top / duplicate n-gram rules, with their Gopher bounds
TOP_NGRAMS = {2: 0.20, 3: 0.18, 4: 0.16}
DUPLICATE_NGRAMS = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}

Bound = float | None


def _fraction(default: float | None, gopher: float | None, what: str) -> Bound:
    return Field(default, ge=0, le=1, description=f"{what} (Gopher: {gopher}; null: off)")


class HeuristicsParams(Params):
    """Bounds of the rules, in rule order; null switches a rule off. See the module docstring."""

    drop_empty_text: bool = Field(True, description="drop rows whose text is null or has no words")
    min_response_words: int | None = Field(
        1, ge=1, description="instruction data (a `response` column): fewest response words; a blank "
        "response is `empty_response`, a shorter one `response_too_short`; null responses are not judged")
    min_words: int | None = Field(3, ge=0, description="fewest words of text (Gopher: 50)")
    max_words: int | None = Field(100_000, ge=0, description="most words of text (Gopher: 100000)")
    min_chars: int | None = Field(10, ge=0, description="fewest characters of text")
    max_chars: int | None = Field(1_000_000, ge=0, description="most characters of text")
    min_mean_word_length: Bound = Field(2.0, ge=0, description="shortest mean word length (Gopher: 3)")
    max_mean_word_length: Bound = Field(20.0, ge=0, description="longest mean word length (Gopher: 10)")
    min_alpha_word_fraction: Bound = _fraction(0.2, 0.8, "least fraction of words with a letter")
    max_symbol_word_ratio: Bound = Field(0.1, ge=0, description="most '#' or ellipses per word (Gopher: 0.1)")
    max_bullet_line_fraction: Bound = _fraction(0.9, 0.9, "most lines starting with a bullet")
    max_ellipsis_line_fraction: Bound = _fraction(0.3, 0.3, "most lines ending with an ellipsis")
    repetition_field: Literal["auto", "text", "response"] = Field(
        "auto", description="what the duplicate line/paragraph/n-gram rules judge: `auto` = the response "
        "where a row has one (prompts are often quoted in answers), else the text; `text`; `response` = "
        "only responses (rows without one are not judged)")
    min_stop_words: int | None = Field(None, ge=0, description="fewest distinct stop words (Gopher: 2)")
    stop_words: tuple[str, ...] = Field(GOPHER_STOP_WORDS,
                                        description="stop words (any case; exact case with gopher_compat)")
    max_duplicate_line_fraction: Bound = _fraction(0.4, 0.3, "most lines repeating an earlier line")
    max_duplicate_line_char_fraction: Bound = _fraction(0.2, 0.2, "most characters in repeated lines")
    max_duplicate_paragraph_fraction: Bound = _fraction(0.3, 0.3, "most paragraphs repeating an earlier one")
    max_duplicate_paragraph_char_fraction: Bound = _fraction(0.2, 0.2, "most characters in repeated paragraphs")
    max_top_2gram_char_fraction: Bound = _fraction(0.40, 0.20, "most characters in the top 2-gram")
    max_top_3gram_char_fraction: Bound = _fraction(0.36, 0.18, "most characters in the top 3-gram")
    max_top_4gram_char_fraction: Bound = _fraction(0.32, 0.16, "most characters in the top 4-gram")
    max_duplicate_5gram_char_fraction: Bound = _fraction(0.30, 0.15, "most characters in repeated 5-grams")
    max_duplicate_6gram_char_fraction: Bound = _fraction(0.28, 0.14, "most characters in repeated 6-grams")
    max_duplicate_7gram_char_fraction: Bound = _fraction(0.26, 0.13, "most characters in repeated 7-grams")
    max_duplicate_8gram_char_fraction: Bound = _fraction(0.24, 0.12, "most characters in repeated 8-grams")
    max_duplicate_9gram_char_fraction: Bound = _fraction(0.22, 0.11, "most characters in repeated 9-grams")
    max_duplicate_10gram_char_fraction: Bound = _fraction(0.20, 0.10, "most characters in repeated 10-grams")
    gopher_compat: bool = Field(False, description="reproduce DataTrove's Gopher filters (its words, statistics, "
                                "order and reason names); bounds default to Gopher's values")

    @model_validator(mode="before")
    @classmethod
    def _gopher_compat_defaults(cls, data: object) -> object:
        if not (isinstance(data, dict) and data.get("gopher_compat")):
            return data
        unused = sorted(k for k, v in data.items() if k in _NOT_IN_DATATROVE and v != _NOT_IN_DATATROVE[k])
        if unused:
            raise ValueError(f"gopher_compat: DataTrove's Gopher filters have no {', '.join(unused)}; leave "
                             f"{'it' if len(unused) == 1 else 'them'} unset")
        return {**GOPHER, **_NOT_IN_DATATROVE, **data}


# The paper's values (Rae et al. 2021, "Scaling Language Models", appendix A), judged on the text.
GOPHER: dict[str, object] = {
    "min_words": 50, "max_words": 100_000, "min_chars": None, "max_chars": None,
    "min_mean_word_length": 3.0, "max_mean_word_length": 10.0, "min_alpha_word_fraction": 0.8,
    "max_symbol_word_ratio": 0.1, "max_bullet_line_fraction": 0.9, "max_ellipsis_line_fraction": 0.3,
    "min_stop_words": 2, "repetition_field": "text",
    "max_duplicate_line_fraction": 0.3, "max_duplicate_line_char_fraction": 0.2,
    "max_duplicate_paragraph_fraction": 0.3, "max_duplicate_paragraph_char_fraction": 0.2,
    **{f"max_top_{n}gram_char_fraction": v for n, v in TOP_NGRAMS.items()},
    **{f"max_duplicate_{n}gram_char_fraction": v for n, v in DUPLICATE_NGRAMS.items()},
}
# parameters without a DataTrove equivalent, as `gopher_compat` needs them (DataTrove always drops empty texts)
_NOT_IN_DATATROVE: dict[str, object] = {"drop_empty_text": True, "min_response_words": None, "min_chars": None,
                                        "max_chars": None, "repetition_field": "text"}


class TextStats:
    """The statistics of one batch of rows, each computed on first use (one value per row)."""

    def __init__(self, texts: pa.Array, responses: pa.Array | None = None,
                 stop_words: tuple[str, ...] = GOPHER_STOP_WORDS, top: tuple[int, ...] = (),
                 duplicate: tuple[int, ...] = (), repetition_field: str = "auto"):
        self.texts = pc.fill_null(texts, "")
        self.responses = responses
        self.stop_word_set = tuple(w.lower() for w in stop_words)
        self.ngram_sizes = top, duplicate
        if repetition_field == "response":  # rows without a response are not judged
            self.repeated = responses if responses is not None else pa.nulls(len(texts), pa.string())
        elif repetition_field == "text" or responses is None:
            self.repeated = self.texts
        else:
            self.repeated = pc.coalesce(responses, self.texts)

    @cached_property
    def words(self) -> Words:
        return split_words(self.texts)

    @cached_property
    def word_count(self) -> np.ndarray:
        return self.words.counts.astype(np.float64)

    @cached_property
    def word_len(self) -> np.ndarray:
        return pc.utf8_length(self.words.flat).to_numpy(zero_copy_only=False).astype(np.int64)

    def _per_doc(self, per_word: np.ndarray) -> np.ndarray:
        return np.bincount(self.words.doc_index, weights=per_word, minlength=len(self.texts))

    @cached_property
    def response_words(self) -> np.ndarray:
        if self.responses is None:
            return np.full(len(self.texts), np.nan)
        counts = split_words(self.responses).counts.astype(np.float64)
        counts[pc.is_null(self.responses).to_numpy(zero_copy_only=False)] = np.nan
        return counts

    @cached_property
    def chars(self) -> np.ndarray:
        return pc.utf8_length(self.texts).to_numpy(zero_copy_only=False).astype(np.float64)

    @cached_property
    def mean_word_length(self) -> np.ndarray:
        return ratio(self._per_doc(self.word_len), self.word_count)

    @cached_property
    def alpha_word_fraction(self) -> np.ndarray:
        alpha = pc.match_substring_regex(self.words.flat, r"\pL").to_numpy(zero_copy_only=False)
        return ratio(self._per_doc(alpha.astype(np.float64)), self.word_count)

    @cached_property
    def symbol_word_ratio(self) -> np.ndarray:
        hashes = pc.count_substring_regex(self.texts, "#+").to_numpy(zero_copy_only=False)
        ellipses = pc.count_substring_regex(self.texts, r"\.\.\.|…").to_numpy(zero_copy_only=False)
        return ratio(np.maximum(hashes, ellipses).astype(np.float64), self.word_count)

    @cached_property
    def lines(self) -> Pieces:
        return split_pieces(self.texts, "\n")

    @cached_property
    def repeated_lines(self) -> Pieces:
        return self.lines if self.repeated is self.texts else split_pieces(self.repeated, "\n")

    @cached_property
    def repeated_paragraphs(self) -> Pieces:
        return split_pieces(self.repeated, PARAGRAPH_BREAK, regex=True)

    @cached_property
    def repeated_words(self) -> tuple[Words, np.ndarray]:
        if self.repeated is self.texts:
            return self.words, self.word_len
        words = split_words(self.repeated)
        return words, pc.utf8_length(words.flat).to_numpy(zero_copy_only=False).astype(np.int64)

    def _line_fraction(self, pattern: str) -> np.ndarray:
        hit = pc.match_substring_regex(self.lines.text, pattern).to_numpy(zero_copy_only=False)
        return ratio(self.lines.per_doc(hit.astype(np.float64)), self.lines.per_doc())

    @cached_property
    def bullet_line_fraction(self) -> np.ndarray:
        return self._line_fraction("^[" + BULLETS.replace("-", r"\-") + "]")

    @cached_property
    def ellipsis_line_fraction(self) -> np.ndarray:
        return self._line_fraction(r"(\.\.\.|…)$")

    @cached_property
    def stop_words(self) -> np.ndarray:
        edge = r"[^\pL\pN]*"
        likely = "(?i)^" + edge + "(?:" + "|".join(map(re.escape, self.stop_word_set)) + ")" + edge + "$"
        picked = pc.match_substring_regex(self.words.flat, likely).to_numpy(zero_copy_only=False)  # a superset
        bare = pc.replace_substring_regex(pc.utf8_lower(self.words.flat.filter(pa.array(picked))),
                                          r"^[^\pL\pN]+|[^\pL\pN]+$", "")
        index = pc.index_in(bare, value_set=pa.array(self.stop_word_set, pa.string()))
        found = pc.is_valid(index).to_numpy(zero_copy_only=False)
        which = pc.fill_null(index, 0).to_numpy(zero_copy_only=False).astype(np.int64)[found]
        kinds = max(len(self.stop_word_set), 1)
        distinct = np.unique(self.words.doc_index[picked][found] * kinds + which) // kinds
        counts = np.bincount(distinct, minlength=len(self.texts)).astype(np.float64)
        counts[self.word_count == 0] = np.nan
        return counts

    @cached_property
    def duplicate_lines(self) -> tuple[np.ndarray, np.ndarray]:
        return duplicate_pieces(self.repeated_lines)

    @cached_property
    def duplicate_paragraphs(self) -> tuple[np.ndarray, np.ndarray]:
        return duplicate_pieces(self.repeated_paragraphs)

    @cached_property
    def ngrams(self) -> dict[tuple[str, int], np.ndarray]:
        return ngram_fractions(*self.repeated_words, *self.ngram_sizes)


@dataclass(frozen=True)
class Rule:
    """One rule: fails a row when `stat` is below (`min`) or above (`max`) the parameter's value."""

    reason: str
    param: str
    bound: str  # "min" or "max"
    stat: Callable[[TextStats], np.ndarray]


RULES: tuple[Rule, ...] = (
    Rule("too_few_words", "min_words", "min", lambda s: s.word_count),
    Rule("too_many_words", "max_words", "max", lambda s: s.word_count),
    Rule("too_short_chars", "min_chars", "min", lambda s: s.chars),
    Rule("too_long_chars", "max_chars", "max", lambda s: s.chars),
    Rule("mean_word_length", "min_mean_word_length", "min", lambda s: s.mean_word_length),
    Rule("mean_word_length", "max_mean_word_length", "max", lambda s: s.mean_word_length),
    Rule("low_alpha_words", "min_alpha_word_fraction", "min", lambda s: s.alpha_word_fraction),
    Rule("symbol_ratio", "max_symbol_word_ratio", "max", lambda s: s.symbol_word_ratio),
    Rule("bullet_lines", "max_bullet_line_fraction", "max", lambda s: s.bullet_line_fraction),
    Rule("ellipsis_lines", "max_ellipsis_line_fraction", "max", lambda s: s.ellipsis_line_fraction),
    Rule("few_stop_words", "min_stop_words", "min", lambda s: s.stop_words),
    Rule("duplicate_lines", "max_duplicate_line_fraction", "max", lambda s: s.duplicate_lines[0]),
    Rule("duplicate_line_chars", "max_duplicate_line_char_fraction", "max", lambda s: s.duplicate_lines[1]),
    Rule("duplicate_paragraphs", "max_duplicate_paragraph_fraction", "max",
         lambda s: s.duplicate_paragraphs[0]),
    Rule("duplicate_paragraph_chars", "max_duplicate_paragraph_char_fraction", "max",
         lambda s: s.duplicate_paragraphs[1]),
    *(Rule(f"top_{n}gram", f"max_top_{n}gram_char_fraction", "max",
           lambda s, n=n: s.ngrams["top", n]) for n in TOP_NGRAMS),
    *(Rule(f"duplicate_{n}gram", f"max_duplicate_{n}gram_char_fraction", "max",
           lambda s, n=n: s.ngrams["duplicate", n]) for n in DUPLICATE_NGRAMS),
)
REASONS = ("empty_text", "empty_response", "response_too_short", *dict.fromkeys(r.reason for r in RULES))
COMPAT_REASONS = (EMPTY, *(r.reason for r in COMPAT_RULES))  # with gopher_compat: DataTrove's names


def _as_strings(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return values if pa.types.is_string(values.type) else pc.cast(values, pa.string())


class _Verdicts:
    """The first failing rule of each row and its statistic."""

    def __init__(self, n: int):
        self.rule = np.full(n, -1, np.int64)
        self.score = np.full(n, np.nan)
        self.codes: list[str] = []

    def fail(self, mask: np.ndarray, reason: str, values: np.ndarray) -> None:
        if reason not in self.codes:
            self.codes.append(reason)
        new = mask & (self.rule < 0)
        self.rule[new] = self.codes.index(reason)
        self.score[new] = values[new]

    def apply(self, rules: list[tuple[Rule, float]] | list[tuple[CompatRule, float]],
              stats: TextStats | GopherStats) -> Decision:
        """Each rule in turn (until every row has failed one), then the decision."""
        for rule, bound in rules:
            if (self.rule >= 0).all():
                break
            values = rule.stat(stats)
            self.fail(values < bound if rule.bound == "min" else values > bound, rule.reason, values)
        return self.decision()

    def decision(self) -> Decision:
        kept = self.rule < 0
        reason = pa.array(self.codes, pa.string()).take(pa.array(self.rule, mask=kept))
        return Decision(reason=reason, score=pa.array(self.score, pa.float64(), mask=kept))


@register
class Heuristics(MapStage):
    """Gopher-style quality and repetition rules; drops a row with the first rule it fails."""

    name = "heuristics"
    Params = HeuristicsParams
    needs = ("text",)
    uses = ("response",)  # the repetition rules judge the response where a row has one

    def enabled_rules(self) -> list[tuple[Rule, float]]:
        """The rules that are on, in order, with their bounds."""
        bounds = [(rule, getattr(self.params, rule.param)) for rule in RULES]
        return [(rule, bound) for rule, bound in bounds if bound is not None]

    def statistics(self, table: pa.Table) -> TextStats:
        """The (lazily computed) statistics of a table's rows, for the rules that are on."""
        on = {rule.param for rule, _ in self.enabled_rules()}
        response = table.column("response") if "response" in table.column_names else None
        return TextStats(
            _as_strings(table.column("text")),
            None if response is None else _as_strings(response),
            tuple(self.params.stop_words),
            top=tuple(n for n in TOP_NGRAMS if f"max_top_{n}gram_char_fraction" in on),
            duplicate=tuple(n for n in DUPLICATE_NGRAMS if f"max_duplicate_{n}gram_char_fraction" in on),
            repetition_field=self.params.repetition_field,
        )

    def process(self, table: pa.Table) -> Decision:
        if self.params.gopher_compat:
            return self._datatrove_gopher(table)
        p = self.params
        stats = self.statistics(table)
        verdicts = _Verdicts(table.num_rows)
        if p.drop_empty_text:
            verdicts.fail(stats.word_count == 0, "empty_text", stats.word_count)
        if p.min_response_words is not None and stats.responses is not None:
            words = stats.response_words
            verdicts.fail(words == 0, "empty_response", words)
            verdicts.fail(words < p.min_response_words, "response_too_short", words)
        return verdicts.apply(self.enabled_rules(), stats)

    def _datatrove_gopher(self, table: pa.Table) -> Decision:
        """`gopher_compat`: DataTrove's checks in its order, with its reason names (a bound of 0 is off, as there)."""
        stats = GopherStats(_as_strings(table.column("text")), tuple(self.params.stop_words))
        verdicts = _Verdicts(table.num_rows)
        verdicts.fail(stats.chars == 0, EMPTY, stats.chars)
        bounds = [(rule, getattr(self.params, rule.param)) for rule in COMPAT_RULES]
        return verdicts.apply([(rule, bound) for rule, bound in bounds if bound], stats)

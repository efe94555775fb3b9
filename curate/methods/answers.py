"""Final answers of math solutions, and whether two agree (held-out accuracy of `evaluate`).

GSM8K-style: the number after the last `####`, else the last number in the text; numbers compare by value
(`1,000` = `1000.0`). Symbolic answers (math-verify) come with the DART stage.
"""

from __future__ import annotations

import re
from fractions import Fraction

_NUMBER = r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?"
_MARKED = re.compile(r"####\s*\$?\s*(" + _NUMBER + ")")
_ANY = re.compile(_NUMBER)


def final_answer(text: str | None) -> str | None:
    """The final number of a solution, as written (None when it has none)."""
    if not text:
        return None
    marked = _MARKED.findall(text)
    if marked:
        return marked[-1]
    numbers = _ANY.findall(text)
    return numbers[-1] if numbers else None


def _value(answer: str) -> Fraction | None:
    try:
        return Fraction(answer.replace(",", "").rstrip("."))
    except (ValueError, ZeroDivisionError):
        return None


def same_answer(predicted: str | None, reference: str | None) -> bool:
    """Whether two final answers are the same number (or, when either is not a number, the same text)."""
    if predicted is None or reference is None:
        return False
    a, b = _value(predicted), _value(reference)
    if a is not None and b is not None:
        return a == b
    return predicted.strip() == reference.strip()


def reference_answer(row: dict) -> str | None:
    """A held-out row's reference: its `answer`, else the final number of its `response` (GSM8K's `#### n`)."""
    answer = row.get("answer")
    if answer is not None and str(answer).strip():
        found = final_answer(str(answer))
        return found if found is not None else str(answer).strip()
    response = row.get("response")
    return _MARKED.findall(response)[-1] if response and _MARKED.search(response) else None

"""Is a generated math solution's final answer the reference answer? (DART's verifier, docs/methods.md §3.6.)

- `extract_answer(text)`: the last `\\boxed{...}` (balanced braces), else what follows the last `####`, else what
  follows the last "answer is", else the whole text when it is a short bare answer, else the last `$...$` formula,
  else the last number (with its `%`).
- `answers_match(predicted, reference)`: plain numbers compare by value (rel 1e-9, abs 1e-8); when either side is
  a percentage, `ref/100` and `ref*100` count too (rel 1e-3); everything else goes to `math-verify` (LaTeX and
  plain expressions parsed to sympy: fractions, roots, intervals, sets, symbolic equality).
- `AnswerChecker`: runs the comparisons in a worker process with a time limit per check. Sympy can take minutes on
  a hostile expression, and `math-verify`'s own timeout uses SIGALRM, which works only on a process's main
  thread; a check past the limit kills the worker (a new one starts on the next check) and counts as wrong, with
  `timed_out` set. Plain numbers are compared in the calling process, without the worker.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import re
import select
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

# math-verify warns on every call that its own (SIGALRM) timeout is off: the limit here is the worker's
logging.getLogger("math_verify").setLevel(logging.ERROR)

_NUMBER = re.compile(r"^\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?|-?\.\d+)\s*(\\?%)?\s*\$?\s*\.?\s*$")
_LAST_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?\s*(?:\\?%)?")
_LEADING_NUMBER = re.compile(r"^\$?\s*(-?\d[\d,]*(?:\.\d+)?\s*(?:\\?%)?)(?![\d.,/^])")
_ANSWER_IS = re.compile(r"answer is[:\s]*", re.IGNORECASE)
_FORMULA = re.compile(r"\$([^$]+)\$")
STARTUP_LIMIT = 120.0  # seconds for a worker to import its verifier
SHORT_ANSWER = 40  # characters: a text this short without a line break is taken as the answer itself


def _last_boxed(text: str) -> str | None:
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[i: j - 1].strip() if depth == 0 else None


def extract_answer(text: str | None) -> str | None:
    """The final answer of a solution, as written (None when none is found)."""
    if not text or not text.strip():
        return None
    if (boxed := _last_boxed(text)) is not None:
        return boxed
    if "####" in text:
        return text.rsplit("####", 1)[1].strip().splitlines()[0].strip() if text.rsplit("####", 1)[1].strip() \
            else None
    found = list(_ANSWER_IS.finditer(text))
    if found:
        tail = text[found[-1].end():].strip()
        tail = re.split(r"(?<!\d)\.(?!\d)|\n", tail, maxsplit=1)[0].strip()
        leading = _LEADING_NUMBER.match(tail)
        if leading and not _NUMBER.match(tail):  # "12 dollars": the number
            return leading.group(1)
        if tail:
            return tail
    if len(text.strip()) <= SHORT_ANSWER and "\n" not in text.strip():
        return text.strip()
    formulas = _FORMULA.findall(text)
    if formulas:
        return formulas[-1].strip()
    numbers = _LAST_NUMBER.findall(text)
    return numbers[-1].strip() if numbers else None


def _plain_number(answer: str) -> tuple[float, bool] | None:
    """(value, is a percentage) of a plain number such as `1,000`, `-3.5`, `50\\%`; None for anything else."""
    found = _NUMBER.match(answer)
    if not found:
        return None
    try:
        return float(found.group(1).replace(",", "")), found.group(2) is not None
    except ValueError:
        return None


def numbers_match(predicted: str, reference: str) -> bool | None:
    """True/False when both are plain numbers (docs/methods.md §3.6's numeric rule), None otherwise."""
    a, b = _plain_number(predicted), _plain_number(reference)
    if a is None or b is None:
        return None
    (p, p_pct), (r, r_pct) = a, b
    if math.isclose(p, r, rel_tol=1e-9, abs_tol=1e-8):
        return True
    if p_pct or r_pct:  # a percentage surface form: 50% is 0.5, and 0.5 is 50%
        return any(math.isclose(p, c, rel_tol=1e-3) for c in (r / 100, r * 100))
    return False


def answers_match(predicted: str, reference: str) -> bool:
    """Whether two extracted answers are equal (plain numbers by value, else symbolically with math-verify)."""
    quick = numbers_match(predicted, reference)
    if quick is not None:
        return quick
    if predicted.strip() == reference.strip():
        return True
    from math_verify import parse, verify

    wrap = lambda s: s if "$" in s else f"${s}$"  # noqa: E731 (math-verify reads LaTeX inside $...$)
    gold = parse(wrap(reference), parsing_timeout=None)
    guess = parse(wrap(predicted), parsing_timeout=None)
    if not gold or not guess:
        return False
    if verify(gold, guess, timeout_seconds=None):
        return True
    # a percentage in LaTeX (`50\%`) parses to 50/100: compare its value as a plain number too
    strip = lambda s: s.replace("\\%", "%").replace("$", "").strip()  # noqa: E731
    again = numbers_match(strip(predicted), strip(reference))
    return bool(again)


def verify_solution(solution: str, reference: str) -> bool:
    """Whether a generated solution's final answer equals the reference answer."""
    answer = extract_answer(solution)
    gold = extract_answer(reference) if reference and ("\\boxed" in reference or "####" in reference) else reference
    if answer is None or gold is None or not str(gold).strip():
        return False
    return answers_match(answer, str(gold).strip())


@dataclass(frozen=True)
class Verdict:
    correct: bool
    timed_out: bool = False


def serve(verifier: str) -> None:
    """The worker: one JSON `[solution, reference]` per stdin line, one `true`/`false` per stdout line."""
    module, _, name = verifier.partition(":")
    check = getattr(importlib.import_module(module), name)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            result = bool(check(*json.loads(line)))
        except Exception:  # an expression the parser cannot take is simply not a match
            result = False
        out.write("true\n" if result else "false\n")
        out.flush()


class AnswerChecker:
    """`verify_solution` (or `verifier`, an import path `module:function`) in a worker process, at most
    `time_limit` seconds per check. Thread-safe; one worker per checker, started at the first check that needs it.

    The worker is a plain subprocess (`python -c`), not `multiprocessing`: spawning would re-import the user's main
    module, and forking a process that holds torch's threads is unsafe.
    """

    def __init__(self, time_limit: float = 5.0, verifier: str = "curate.methods.math_check:verify_solution"):
        self.time_limit, self.verifier = time_limit, verifier
        self.timeouts = 0
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None

    def _read_line(self, limit: float) -> str | None:
        ready, _, _ = select.select([self._process.stdout], [], [], limit)
        return self._process.stdout.readline().strip() if ready else None

    def _start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._process = subprocess.Popen(
            [sys.executable, "-c", f"from curate.methods.math_check import serve; serve({self.verifier!r})"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        # the worker imports its verifier (sympy: seconds) before the first check's time limit starts
        if self._read_line(STARTUP_LIMIT) != "ready":
            self._stop()
            raise RuntimeError(f"the answer-checking worker did not start within {STARTUP_LIMIT} s")

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            for stream in (self._process.stdin, self._process.stdout):
                stream.close()
        self._process = None

    def check(self, solution: str, reference: str) -> Verdict:
        if self.verifier == "curate.methods.math_check:verify_solution":
            answer = extract_answer(solution)
            if answer is None:
                return Verdict(False)
            quick = numbers_match(answer, str(reference).strip())
            if quick is not None:
                return Verdict(quick)
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._start()
            self._process.stdin.write(json.dumps([solution, reference]) + "\n")
            self._process.stdin.flush()
            answer = self._read_line(self.time_limit)
            if answer in ("true", "false"):
                return Verdict(answer == "true")
            self.timeouts += 1
            self._stop()
            return Verdict(False, timed_out=True)

    def check_many(self, solutions: Sequence[str], references: Sequence[str]) -> list[Verdict]:
        return [self.check(s, r) for s, r in zip(solutions, references, strict=True)]

    def close(self) -> None:
        with self._lock:
            self._stop()

    def __del__(self) -> None:
        try:  # noqa: SIM105 (not contextlib: at interpreter exit that module may already be gone)
            self.close()
        except Exception:
            pass

"""DART's answer verifier (docs/methods.md §3.6, §3.10): extraction, the spec's cases, and the time limit."""

from __future__ import annotations

import time

import pytest

from curate.methods.math_check import AnswerChecker, extract_answer, verify_solution


@pytest.fixture(scope="module")
def checker():
    checker = AnswerChecker(time_limit=5.0)
    yield checker
    checker.close()


@pytest.mark.parametrize(("solution", "reference", "expected"), [
    ("\\boxed{\\frac{1}{2}}", "0.5", True),  # §3.10
    ("50\\%", "0.5", True),  # the percent rule
    ("x^2-1", "(x-1)(x+1)", True),  # symbolic
    ("3", "4", False),
    ("She pays 3*4=<<3*4=12>>12 dollars.\n#### 12", "12", True),
    ("so the total is 1,000.\n#### 1,000", "1000", True),
    ("Adding them, the answer is $\\frac{3}{4}$.", "0.75", True),
    ("The answer is 12 dollars.", "12", True),
    ("... so we get $\\boxed{\\sqrt{8}}$", "2\\sqrt{2}", True),
    ("The interval is \\boxed{[1, 2)}", "[1,2)", True),
    ("\\boxed{(1, 2)}", "(2, 1)", False),
    ("I think 50", "0.5", False),  # no percent sign: 50 is not 0.5
    ("no answer here at all, just words and more words to make it long", "7", False),
])
def test_verifier_cases(checker, solution, reference, expected):
    assert checker.check(solution, reference).correct is expected
    assert verify_solution(solution, reference) is expected  # the same answer without the worker


def test_extraction_prefers_the_last_box_then_the_marker_then_the_last_number():
    assert extract_answer("first \\boxed{1} then \\boxed{\\frac{2}{3}}") == "\\frac{2}{3}"
    assert extract_answer("\\boxed{\\frac{1}{\\sqrt{2}}}") == "\\frac{1}{\\sqrt{2}}"  # balanced braces
    assert extract_answer("5 + 6 = 11\n#### 11") == "11"
    assert extract_answer("We have 3 apples and 4 pears, so there are 7 fruits in the basket now") == "7"
    assert extract_answer("") is None


def test_a_check_past_the_time_limit_is_cut_off_and_the_next_one_runs():
    checker = AnswerChecker(time_limit=1.0, verifier="tests.slow_verifier:verify")
    try:
        assert checker.check("7", "7").correct  # the worker is up
        start = time.perf_counter()
        verdict = checker.check("7", "hang")
        assert time.perf_counter() - start < 3
        assert verdict.timed_out and not verdict.correct and checker.timeouts == 1
        assert checker.check("8", "8").correct  # a fresh worker took over
    finally:
        checker.close()

"""Shared set-up of the peer packages that benchmarks compare against (installed by the `bench` extra)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def datatrove_whitespace_tokenizer() -> Any:
    """A DataTrove word tokenizer that splits on white space, as curate does.

    DataTrove's English default needs spaCy (not installed by the `bench` extra, and slower), so both
    benchmarks give DataTrove this one; it favours DataTrove.
    """
    from datatrove.utils.word_tokenizers import WordTokenizer

    class WhitespaceWords(WordTokenizer):
        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    return WhitespaceWords()


@contextlib.contextmanager
def quiet_datatrove(log_path: str | Path) -> Iterator[None]:
    """DataTrove logs every task's stats to stderr, from its worker processes too: send file descriptor 2
    to a log file while it runs."""
    import os
    import sys

    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(log_path, "w") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)

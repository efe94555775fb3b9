"""`curate.methods.text.split_words` on the arrays stages hand it: sliced batches, nulls, empty and blank texts, and
large strings, against Python's own `str.split()`."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.methods.text import iter_ngram_hashes, split_words

texts = st.lists(st.none() | st.text(alphabet=st.sampled_from(list(" \t\nab é")), max_size=12), max_size=20)


@settings(max_examples=300, deadline=None)
@given(texts, st.integers(0, 5), st.booleans())
def test_words_and_offsets_match_python(values: list[str | None], cut: int, large: bool) -> None:
    array = pa.array(values, pa.large_string() if large else pa.string())
    array = array.slice(min(cut, len(values)))  # a batch sliced out of a larger array
    words = split_words(array)
    expected = [(v or "").split() for v in values[min(cut, len(values)):]]
    assert words.flat.to_pylist() == [w for row in expected for w in row]
    assert words.offsets.tolist() == [0, *np.cumsum([len(row) for row in expected]).tolist()]


def test_unigrams_are_every_word_in_place() -> None:
    words = split_words(pa.array(["a b", "", "c d e"]))
    hashes = np.arange(5, dtype=np.uint64) * np.uint64(7)
    ((n, got, starts), (m, pairs, pair_starts)) = list(iter_ngram_hashes(hashes, words.offsets, [1, 2]))
    assert (n, m) == (1, 2)
    assert got.tolist() == hashes.tolist() and starts.tolist() == [0, 1, 2, 3, 4]
    assert pair_starts.tolist() == [0, 2, 3] and len(pairs) == 3  # no bigram across two documents


def test_the_last_text_s_trailing_white_space_is_never_a_word() -> None:
    """Arrow's utf8_split_whitespace sometimes returned the trailing white space of an array's last text as a word
    (it reads past the data buffer); seen once in CI through the hypothesis test above, about once in 300 arrays."""
    rng = np.random.default_rng(0)
    alphabet = np.array(list(" \t\nab é"))
    for _ in range(5000):
        values = ["".join(rng.choice(alphabet, rng.integers(0, 12))) for _ in range(rng.integers(1, 8))]
        values[-1] += "a \t\n"[: rng.integers(2, 5)]
        words = split_words(pa.array(values))
        assert words.flat.to_pylist() == [w for v in values for w in v.split()], values

"""fastText supervised prediction for a whole batch of texts at once, with fastText's own numbers.

fastText predicts one line at a time: it splits the line on ASCII white space, looks up each word's input ids
(the word itself and its character n-grams), averages their input vectors into a hidden vector, and scores the
labels from it (hierarchical softmax for `lid.176`). Almost all of that time goes into the per-word n-gram
hashing, repeated for every occurrence of a word. The hidden vector is an average over ids, so it only needs,
per distinct word, the sum of its ids' vectors and how many ids it has: those come from fastText once per
distinct word (cached across batches), and the rest is one sparse product and one matrix product per batch.
Labels equal fastText's per-line `predict(k=1)` and scores agree to float rounding (tests/stages/test_language.py).
"""

from __future__ import annotations

import re
import threading
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import sparse

LABEL_PREFIX = "__label__"
EOS = "</s>"
_LOG_EPS = 1e-5  # fastText's std_log(x) = log(x + 1e-5)


def batchable(model: Any) -> bool:
    """Whether `BatchedFastText` reproduces this model: word n-grams and a quantized output layer are not, and a
    predict-only fastText build (`fasttext-predict`) lacks the calls it needs."""
    if not all(hasattr(model.f, call) for call in ("getArgs", "getOutputMatrix", "getSubwords", "getWordVector")):
        return False
    args = model.f.getArgs()
    return args.wordNgrams <= 1 and not (model.is_quantized() and args.qout) and args.loss.name in ("hs", "softmax")


def huffman_paths(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right, left): 0/1 matrices (inner node x label) of the hierarchical-softmax tree fastText builds from
    the label counts (HierarchicalSoftmaxLoss::buildTree), marking the inner nodes each label's path goes
    right or left through."""
    osz = len(counts)
    size = 2 * osz - 1
    parent = np.full(size, -1)
    goes_right = np.zeros(size, dtype=bool)
    count = np.full(size, 1e15)
    count[:osz] = counts
    leaf, node = osz - 1, osz
    for inner in range(osz, size):
        pair = []
        for _ in range(2):
            if leaf >= 0 and count[leaf] < count[node]:
                pair.append(leaf)
                leaf -= 1
            else:
                pair.append(node)
                node += 1
        count[inner] = count[pair[0]] + count[pair[1]]
        parent[pair[0]] = parent[pair[1]] = inner
        goes_right[pair[1]] = True
    right = np.zeros((osz - 1, osz), dtype=np.float32)
    left = np.zeros((osz - 1, osz), dtype=np.float32)
    for label in range(osz):
        node = label
        while parent[node] != -1:
            (right if goes_right[node] else left)[parent[node] - osz, label] = 1.0
            node = parent[node]
    return right, left


class BatchedFastText:
    """Top-1 label and probability for each text of a batch, as fastText's `predict(text, k=1)` gives them.

    Texts must already be one line each (no newline inside, as fastText's own predict requires). Keeps at most
    `max_words` distinct words' vectors between batches (about 100 bytes each)."""

    def __init__(self, model: Any, max_words: int = 1_000_000) -> None:
        if not batchable(model):
            raise ValueError("this fastText model uses word n-grams or a quantized output layer")
        self.model = model
        self.max_words = max_words
        labels, counts = model.get_labels(include_freq=True)
        self.labels = [label.removeprefix(LABEL_PREFIX) for label in labels]
        self.output = np.array(model.f.getOutputMatrix(), dtype=np.float32)
        self.hierarchical = model.f.getArgs().loss.name == "hs"
        if self.hierarchical:
            self.right, self.left = huffman_paths(np.asarray(counts, dtype=np.float64))
        self.eos_sum, self.eos_ids = self._word_sums([EOS])
        self._lock = threading.Lock()
        self._reset_cache()

    def _reset_cache(self) -> None:
        self.words = pa.array([], pa.string())
        self.sums = np.zeros((0, self.output.shape[1]), dtype=np.float32)
        self.id_counts = np.zeros(0, dtype=np.float32)

    def _word_sums(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per word: the sum of its input ids' vectors and how many ids it has, as fastText's getLine adds them
        (empty tokens and label tokens add nothing)."""
        sums = np.zeros((len(words), self.output.shape[1]), dtype=np.float32)
        id_counts = np.zeros(len(words), dtype=np.float32)
        for i, word in enumerate(words):
            if not word or word.startswith(LABEL_PREFIX):
                continue
            ids = self.model.get_subwords(word)[1]
            id_counts[i] = len(ids)
            if len(ids):
                sums[i] = self.model.get_word_vector(word) * len(ids)
        return sums, id_counts

    def _distinct_sums(self, distinct: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """`_word_sums` of these distinct words, from the cache, adding the words it does not have yet. Worker
        threads share one instance: the cache changes under a lock."""
        with self._lock:
            rows = self._cached_rows(distinct)
            return self.sums[rows], self.id_counts[rows]

    def _cached_rows(self, distinct: pa.Array) -> np.ndarray:
        if len(self.words) + len(distinct) > self.max_words:
            self._reset_cache()
        rows = pc.index_in(distinct, value_set=self.words)
        missing = pc.is_null(rows)
        if pc.any(missing).as_py():
            new = distinct.filter(missing)
            sums, id_counts = self._word_sums(new.to_pylist())
            self.words = pa.concat_arrays([self.words, new])
            self.sums = np.concatenate([self.sums, sums])
            self.id_counts = np.concatenate([self.id_counts, id_counts])
            rows = pc.index_in(distinct, value_set=self.words)
        return rows.to_numpy()

    def hidden(self, lines: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """fastText's hidden vector per line (the mean input vector over all the line's ids, end of line included),
        and the lines holding a literal `</s>` token, where fastText stops reading (their vectors are not exact)."""
        lines = pc.fill_null(lines, "")
        if pc.any(pc.match_substring(lines, "\x00")).as_py():
            lines = pc.replace_substring(lines, "\x00", " ")  # fastText also splits on NUL; Arrow does not
        tokens = pc.ascii_split_whitespace(lines)
        flat = pc.list_flatten(tokens)
        encoded = flat.dictionary_encode()
        stops = np.zeros(0, dtype=np.int64)
        if pc.any(pc.equal(encoded.dictionary, EOS)).as_py():
            stops = np.unique(pc.list_parent_indices(tokens).to_numpy()[pc.equal(flat, EOS).to_numpy(
                zero_copy_only=False)])
        word_sums, word_ids = self._distinct_sums(encoded.dictionary)
        offsets = tokens.offsets.to_numpy() - tokens.offsets[0].as_py()
        counts = sparse.csr_matrix((np.ones(len(encoded), dtype=np.float32), encoded.indices.to_numpy(), offsets),
                                   shape=(len(lines), len(word_ids)))
        sums = counts @ word_sums + self.eos_sum
        id_counts = counts @ word_ids + self.eos_ids
        return (sums / np.maximum(id_counts, 1.0)[:, None]).astype(np.float32), stops

    def predict(self, lines: pa.Array) -> tuple[list[str], np.ndarray]:
        """(label, probability) per line, fastText's top-1 prediction."""
        hidden, stops = self.hidden(lines)
        if self.hierarchical:
            # a label's log-probability: the sum over its path of log(sigmoid) right, log(1 - sigmoid) left
            node = 1.0 / (1.0 + np.exp(-(hidden @ self.output[:-1].T)))
            log_prob = np.log(node + _LOG_EPS) @ self.right + np.log(1.0 - node + _LOG_EPS) @ self.left
        else:
            logits = hidden @ self.output.T
            prob = np.exp(logits - logits.max(axis=1, keepdims=True))
            log_prob = np.log(prob / prob.sum(axis=1, keepdims=True) + _LOG_EPS)
        best = log_prob.argmax(axis=1)
        labels, probs = [self.labels[i] for i in best], np.exp(log_prob[np.arange(len(best)), best])
        for row in stops:  # fastText stops reading a line at a literal end-of-line token: ask it
            line = re.sub(r"[\t\n\f\r ]+", " ", lines[row].as_py() or "")  # one line, as the per-row path makes it
            found, found_probs = self.model.predict(line, k=1)
            labels[row] = found[0].removeprefix(LABEL_PREFIX) if found else "unknown"
            probs[row] = found_probs[0] if len(found_probs) else 0.0
        return labels, probs

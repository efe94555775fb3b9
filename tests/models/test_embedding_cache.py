"""The embedding cache alone: exact round trips, namespaces, chunked lookups, concurrent writers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from curate.models.embedding_cache import CHUNK, EmbeddingCache, cache_root, namespace_id, text_keys
from tests.threads import run_in_threads

DIM = 8
ROOT = Path(__file__).resolve().parents[2]


def vector_for(key: bytes) -> np.ndarray:
    """A deterministic vector per key, so any writer's value for a key can be checked."""
    return np.random.default_rng(int.from_bytes(key[:8], "little")).standard_normal(DIM).astype(np.float32)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("CURATE_CACHE_DIR", str(folder))
    return folder


def test_text_keys_are_16_byte_content_hashes():
    keys = text_keys(["a", "a ", "a", "", "é"])
    assert all(len(k) == 16 for k in keys)
    assert keys[0] == keys[2] and len(set(keys)) == 4  # white space counts; equal texts share a key
    assert text_keys(["a"]) == keys[:1]  # stable between calls (xxh3, not Python's salted hash)


def test_round_trip_is_exact_and_misses_are_flagged(cache_dir):
    cache = EmbeddingCache({"model": "m"}, DIM)
    assert cache_root() == cache_dir and cache.path.parent == cache_dir / "embeddings"
    keys = text_keys([f"text {i}" for i in range(10)])
    vectors = np.stack([vector_for(k) for k in keys])
    cache.put(keys[:6], vectors[:6])
    hit, got = cache.get(keys)
    assert hit.tolist() == [True] * 6 + [False] * 4
    assert np.array_equal(got[:6], vectors[:6]) and not got[6:].any()
    assert len(cache) == 6 and cache.describe()["model"] == "m"


def test_namespaces_do_not_share_vectors(cache_dir):
    keys = text_keys(["same text"])
    EmbeddingCache({"model": "m", "max_seq_length": 256}, DIM).put(keys, np.ones((1, DIM), np.float32))
    other = EmbeddingCache({"model": "m", "max_seq_length": 128}, DIM)
    assert not other.get(keys)[0].any()
    assert namespace_id({"a": 1, "b": 2}) == namespace_id({"b": 2, "a": 1})  # canonical, order-free
    assert EmbeddingCache({"model": "m", "max_seq_length": 256}, DIM).get(keys)[0].all()


def test_first_vector_for_a_key_stays(cache_dir):
    cache = EmbeddingCache({"model": "m"}, DIM)
    keys = text_keys(["x"])
    cache.put(keys, np.zeros((1, DIM), np.float32))
    cache.put(keys, np.ones((1, DIM), np.float32))  # a racing writer with the same text: ignored, no error
    assert not cache.get(keys)[1].any() and len(cache) == 1


def test_lookups_span_several_chunks(cache_dir):
    cache = EmbeddingCache({"model": "m"}, DIM)
    keys = text_keys([str(i) for i in range(2 * CHUNK + 123)])
    vectors = np.stack([vector_for(k) for k in keys])
    cache.put(keys[::2], vectors[::2])
    hit, got = cache.get(keys)
    assert hit.sum() == len(keys[::2]) and hit[::2].all() and not hit[1::2].any()
    assert np.array_equal(got[hit], vectors[hit])


def test_wrong_shapes_are_refused(cache_dir):
    cache = EmbeddingCache({"model": "m"}, DIM)
    with pytest.raises(ValueError, match="keys"):
        cache.put(text_keys(["a", "b"]), np.zeros((1, DIM), np.float32))
    with pytest.raises(ValueError, match="dim"):
        cache.put(text_keys(["a"]), np.zeros((1, DIM + 1), np.float32))


def check_consistent(cache: EmbeddingCache, keys: list[bytes]) -> None:
    hit, got = cache.get(keys)
    assert hit.all()
    assert np.array_equal(got, np.stack([vector_for(k) for k in keys]))
    with sqlite3.connect(cache.path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchall() == [("wal",)]


def test_two_threads_writing_overlapping_keys_do_not_corrupt_it(cache_dir):
    cache = EmbeddingCache({"model": "m"}, DIM)  # one object shared, as the stage's worker threads do
    keys = text_keys([f"row {i}" for i in range(3000)])

    def writer(offset: int) -> None:
        for start in range(offset, offset + 2000, 100):  # the threads overlap on rows 1000..1999
            chunk = keys[start:start + 100]
            cache.get(chunk)
            cache.put(chunk, np.stack([vector_for(k) for k in chunk]))

    run_in_threads(writer, (0, 1000))  # re-raises a thread's exception
    assert len(cache) == 3000
    check_consistent(cache, keys)


def test_opening_waits_while_another_connection_holds_the_new_file(cache_dir):
    """Switching a new file to WAL does not busy-wait in SQLite: opened while another process's connection was
    writing the new file, the cache failed at once with "database is locked" (2 of 160 opens of four processes at
    once, here). It now waits: the write is held for 0.3 s, and the cache opens after it."""
    cache = EmbeddingCache({"model": "m"}, 4)
    cache.path.parent.mkdir(parents=True, exist_ok=True)
    holder = sqlite3.connect(cache.path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE first_writer (a)")  # a new file, still in rollback-journal mode...
    holder.execute("BEGIN IMMEDIATE")  # ...and mid-write: SQLite refuses the WAL switch at once
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    cache.put(text_keys(["a", "b"]), np.ones((2, 4), np.float32))
    waited = time.monotonic() - started
    release.join()
    holder.close()
    assert waited >= 0.25 and len(cache) == 2


def test_two_processes_writing_at_once_do_not_corrupt_it(cache_dir):
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        sys.path.insert(0, {str(ROOT)!r})
        from curate.models.embedding_cache import EmbeddingCache, text_keys
        DIM = {DIM}

        def vector_for(key):
            seed = int.from_bytes(key[:8], "little")
            return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)

        offset = int(sys.argv[1])
        cache = EmbeddingCache({{"model": "m"}}, DIM)
        keys = text_keys([f"row {{i}}" for i in range(offset, offset + 2000)])
        for start in range(0, len(keys), 50):
            chunk = keys[start:start + 50]
            cache.put(chunk, np.stack([vector_for(k) for k in chunk]))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(offset)], cwd=ROOT, stderr=subprocess.PIPE)
             for offset in (0, 1000)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    cache = EmbeddingCache({"model": "m"}, DIM)
    assert len(cache) == 3000
    check_consistent(cache, text_keys([f"row {i}" for i in range(3000)]))

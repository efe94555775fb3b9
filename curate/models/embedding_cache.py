"""A content-hash cache of embeddings, so that re-embedding unchanged rows costs nothing across runs.

- **Key**: the 128-bit xxh3 hash of a text's UTF-8 bytes (`text_keys`), within a **namespace**.
- **Namespace**: sha256 of the canonical JSON of everything that changes the vectors (`Embedder.namespace`:
  the model's identity, max_seq_length, prompt, truncation, normalisation, dimension) plus the cache format
  version. Batch size, device and output dtype are not part of it: every config of one model shares vectors.
- **Storage**: one SQLite file per namespace, `$CURATE_CACHE_DIR/embeddings/<namespace>.sqlite` (default
  `~/.cache/curate`), in WAL mode with a busy timeout, so several threads (one connection each) and several
  processes can read while one writes. Table `vectors(k BLOB PRIMARY KEY, v BLOB)` holds float32 vectors as
  little-endian bytes; `meta` records the namespace description for people who look inside.
- Lookups go in chunks of 900 keys (`IN (...)`, under SQLite's variable limit); inserts go in one
  `BEGIN IMMEDIATE` transaction per batch with `INSERT OR IGNORE`, so two writers racing on the same
  text both succeed and the first vector stays.

The cache only ever holds derived data: deleting the folder is always safe. It belongs on a local disk:
SQLite's locking is unreliable on network file systems, so on a cluster (Ray) each machine keeps its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from curate.data.errors import CurateError
from curate.data.hashing import canonical_json, fingerprint

FORMAT = 1  # bump when the stored layout or key definition changes: old namespaces are then never read
CHUNK = 900  # keys per SELECT ... IN (...); older SQLite builds allow at most 999 variables
_SETUP_LOCK = threading.Lock()
BUSY_TIMEOUT_S = 120.0  # a writer holds the lock for one batch insert (tens of ms); wait long rather than fail


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    """`PRAGMA journal_mode = WAL`, retried while another process holds the file (SQLite does not busy-wait
    for a journal mode change)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.2)


def cache_root() -> Path:
    """`$CURATE_CACHE_DIR`, or `~/.cache/curate`."""
    configured = os.environ.get("CURATE_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "curate"


def text_keys(texts: Sequence[str]) -> list[bytes]:
    """The cache key of each text: its 128-bit xxh3 digest (16 bytes)."""
    digest = xxhash.xxh3_128_digest
    return [digest(t.encode("utf-8", "surrogatepass")) for t in texts]


def namespace_id(description: dict[str, Any]) -> str:
    """The namespace name (32 hex chars) of a description of everything that changes the vectors."""
    return fingerprint({"format": FORMAT, **description})


class EmbeddingCache:
    """Float32 vectors by text key within one namespace. Safe to share between threads and processes."""

    def __init__(self, description: dict[str, Any], dim: int, root: str | Path | None = None):
        self.description = {"format": FORMAT, **description}
        self.namespace = namespace_id(description)
        self.dim = int(dim)
        self.path = Path(root) if root is not None else cache_root()
        self.path = self.path / "embeddings" / f"{self.namespace}.sqlite"
        self._local = threading.local()
        self._connections: list[tuple[int, sqlite3.Connection]] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------ connections

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (sqlite3 connections must not be shared between threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a writer takes the write lock
        # up front (waiting under the busy timeout) instead of failing when upgrading a read lock.
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        # One connection of this process sets the file up at a time: switching a new file to WAL fails at once
        # ("database is locked", no busy wait) while another connection is opening it; another process's
        # connection is waited for by retrying.
        with _SETUP_LOCK:
            _switch_to_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL survives crashes of the process
            conn.execute("CREATE TABLE IF NOT EXISTS vectors (k BLOB PRIMARY KEY, v BLOB NOT NULL)")
            conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('namespace', ?), ('dim', ?)",
                         (canonical_json(self.description), str(self.dim)))
        stored = conn.execute("SELECT value FROM meta WHERE name = 'dim'").fetchall()
        if stored and int(stored[0][0]) != self.dim:
            raise CurateError(f"embedding cache {self.path} holds {stored[0][0]}-d vectors, not {self.dim}-d; "
                              "delete the file")
        self._local.conn, self._local.pid = conn, os.getpid()
        with self._lock:
            self._connections.append((os.getpid(), conn))
        return conn

    def close(self) -> None:
        """Close every connection this cache opened (any thread's)."""
        with self._lock:
            for pid, conn in self._connections:
                if pid != os.getpid():  # inherited through fork: the parent still owns it
                    continue
                # one made in another thread refuses; it closes when that thread's local storage goes
                with contextlib.suppress(sqlite3.ProgrammingError):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()

    # ------------------------------------------------------------ reads and writes

    def get(self, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(hit mask, vectors): `vectors[i]` is key i's cached vector where `hit[i]`, zeros elsewhere."""
        conn = self._connection()
        found: dict[bytes, bytes] = {}
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start:start + CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(conn.execute(f"SELECT k, v FROM vectors WHERE k IN ({marks})", chunk).fetchall())
        hit = np.fromiter((k in found for k in keys), dtype=bool, count=len(keys))
        vectors = np.zeros((len(keys), self.dim), dtype=np.float32)
        if found:
            blob = b"".join([found[k] for k, h in zip(keys, hit, strict=True) if h])
            if len(blob) != int(hit.sum()) * self.dim * 4:
                raise CurateError(f"embedding cache {self.path} holds vectors of the wrong size; delete the file")
            vectors[hit] = np.frombuffer(blob, dtype="<f4").reshape(-1, self.dim)
        return hit, vectors

    def put(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Store vectors (n, dim) under their keys in one transaction; keys already present keep theirs."""
        if len(keys) != len(vectors) or (len(keys) and vectors.shape[1] != self.dim):
            raise ValueError(f"put: {len(keys)} keys for vectors of shape {vectors.shape}, dim {self.dim}")
        if not len(keys):
            return
        data = np.ascontiguousarray(vectors, dtype="<f4").tobytes()
        step = self.dim * 4
        blobs = [data[i:i + step] for i in range(0, len(data), step)]
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR IGNORE INTO vectors (k, v) VALUES (?, ?)", zip(keys, blobs, strict=True))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def __len__(self) -> int:
        """Number of cached vectors in this namespace."""
        return int(self._connection().execute("SELECT count(*) FROM vectors").fetchall()[0][0])

    def describe(self) -> dict[str, Any]:
        """The namespace description as stored in the file."""
        rows = self._connection().execute("SELECT value FROM meta WHERE name = 'namespace'").fetchall()
        return json.loads(rows[0][0]) if rows else {}

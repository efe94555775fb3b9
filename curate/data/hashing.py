"""Stable hashes: fingerprints of stages and content ids of rows.

Both must be identical across processes, machines and runs, so they use xxhash (seeded) and
canonical JSON, never Python's `hash()`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import xxhash


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal configs hash equally."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def fingerprint(*parts: Any) -> str:
    """Hash of any JSON-serialisable parts (parents' fingerprints, stage name, config, version)."""
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()[:32]


def content_ids(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A 128-bit content hash (32 hex chars) per text; null texts hash as the empty string."""
    values = texts.to_pylist()
    return pa.array([xxhash.xxh3_128_hexdigest((t or "").encode("utf-8", "surrogatepass")) for t in values],
                    type=pa.string())


def file_sha256(path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_strings_u64(values: Iterable[str | None], seed: int = 0) -> list[int]:
    """64-bit xxhash of each string (None hashes as the empty string)."""
    h = xxhash.xxh3_64_intdigest
    return [h((v or "").encode("utf-8", "surrogatepass"), seed) for v in values]

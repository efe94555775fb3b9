"""PII over whole Arrow columns (docs/methods.md §16.6): one RE2 pass (Arrow's `match_substring_regex`) picks the
rows that contain anything a detector could match, and only those rows go through the validating Python
detectors of `curate.methods.pii`. Most rows of real text hold no candidate, so most rows never reach Python.

The audit of a batch is one record per span: the row, the column (`messages[2]` for a chat turn), type, offsets
in the original and in the output, the action, and a keyed digest of the value (HMAC-SHA256, first 16 bytes):
the same value gives the same digest under one key, so "which rows had this address" can be answered without
keeping the address.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.methods.pii import Span, Style, find_spans, redact

KEY_ENV = "CURATE_PII_KEY"
# what any detector needs somewhere in a text; a superset of their matches, in RE2 syntax (no look-arounds)
PREFILTER = {
    "email": r"@", "ip": r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]",
    "phone": r"\d[\d .()-]{7,}\d", "credit_card": r"\d[\d -]{11,}\d", "iban": r"[A-Z]{2}\d{2}",
    "private_key": r"-----BEGIN", "jwt": r"eyJ",
    "secret": r"A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA|gh[pousr]_|glpat-|xox[abposr]-|hooks\.slack\.com|k_live_|T3BlbkFJ"
              r"|://[^\s:/@]+:[^\s/@]+@|(?i:aws)",
    "high_entropy": r"[\"'][A-Za-z0-9+/=_-]{20,}[\"']"}
AUDIT_TYPE = pa.struct([("column", pa.string()), ("type", pa.string()), ("subtype", pa.string()),
                        ("start", pa.int64()), ("end", pa.int64()), ("out_start", pa.int64()),
                        ("out_end", pa.int64()), ("length", pa.int64()), ("action", pa.string()),
                        ("allow_reason", pa.string()), ("digest", pa.string())])


def pii_key() -> bytes:
    """The audit's HMAC key: `$CURATE_PII_KEY`, else a random key kept in the user's config folder (created on first
    use, readable by the user only). Never in the run folder: with the key beside the digests, a 10-digit phone
    number is found by brute force in seconds (§16.3)."""
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV].encode()
    root = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "curate"
    path = root / "pii.key"
    if not path.is_file():
        root.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32).hex().encode())
    return path.read_bytes()


def key_id(key: bytes) -> str:
    """A name for the key that reveals nothing about it (part of a step's fingerprint: another key, other digests)."""
    return hmac.new(key, b"curate-pii-key-id", hashlib.sha256).hexdigest()[:12]


def digest(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()[:16].hex()


@dataclass
class ColumnScan:
    """What a scan found in one column of a batch."""

    values: pa.Array  # the column with every redacted span replaced
    rows: list[int] = field(default_factory=list)  # per span: its row
    items: list[int | None] = field(default_factory=list)  # per span: its list item (chat turns), else None
    spans: list[Span] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)


class Scanner:
    """Finds and redacts PII of `types` in string columns."""

    def __init__(self, types: Sequence[str], style: Style = "typed", public_only: bool = True,
                 phone: Callable[[str], Iterable[Span]] | None = None, key: bytes | None = None):
        self.types, self.style, self.public_only, self.phone = tuple(types), style, public_only, phone
        self.key = key if key is not None else pii_key()
        self.prefilter = "|".join(f"(?:{PREFILTER[t]})" for t in self.types)

    def candidates(self, texts: pa.Array) -> np.ndarray:
        """Positions of the rows that may hold PII (one RE2 pass over the column)."""
        if not self.types or not len(texts):
            return np.zeros(0, np.int64)
        hit = pc.match_substring_regex(texts, self.prefilter)
        return np.flatnonzero(pc.fill_null(hit, False).to_numpy(zero_copy_only=False))

    def scan(self, texts: pa.Array, parents: np.ndarray | None = None) -> ColumnScan:
        """`texts` with PII redacted; `parents` maps flattened list items (chat turns) to their rows."""
        if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
            texts = texts.cast(pa.string())
        positions = self.candidates(texts)
        result = ColumnScan(texts)
        changed_at, changed = [], []
        for position in positions.tolist():
            text = texts[position].as_py()
            spans = find_spans(text, self.types, self.public_only, self.phone)
            if not spans:
                continue
            new, placed = redact(text, spans, self.style)
            if new != text:
                changed_at.append(position)
                changed.append(new)
            for span in placed:
                result.rows.append(int(parents[position]) if parents is not None else position)
                result.items.append(position if parents is not None else None)
                result.spans.append(span)
                result.digests.append(digest(self.key, text[span.start:span.end]))
        if changed_at:
            mask = np.zeros(len(texts), bool)
            mask[changed_at] = True
            result.values = pc.replace_with_mask(texts, pa.array(mask), pa.array(changed, texts.type))
        return result


def chat_contents(messages: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(every turn's content, each turn's row, each turn's index in its row) of a list<struct{role, content}>."""
    turns = pc.list_flatten(messages)
    parents = pc.list_parent_indices(messages).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = messages.offsets.to_numpy()[:-1] - messages.offsets[0].as_py()
    index = np.arange(len(parents)) - offsets[parents] if len(parents) else np.zeros(0, np.int64)
    return turns.field("content"), parents, index


def with_contents(messages: pa.Array, contents: pa.Array) -> pa.Array:
    """`messages` with each turn's content replaced by `contents` (flattened, in order)."""
    turns = pc.list_flatten(messages)
    fields = [contents if f.name == "content" else turns.field(f.name) for f in turns.type]
    rebuilt = pa.StructArray.from_arrays(fields, fields=list(turns.type))
    offsets = pc.subtract(messages.offsets, messages.offsets[0])
    return pa.ListArray.from_arrays(offsets, rebuilt, mask=messages.is_null())


def audit_column(n_rows: int, scans: Sequence[tuple[str, ColumnScan, np.ndarray | None]]) -> pa.Array:
    """One list of audit records per row (list<AUDIT_TYPE>), from the scans of each column."""
    rows, records = [], []
    for name, scan, item_index in scans:
        for row, item, span, value_digest in zip(scan.rows, scan.items, scan.spans, scan.digests, strict=True):
            column = name if item is None else f"{name}[{int(item_index[item])}]"
            rows.append(row)
            records.append({"column": column, "type": span.type, "subtype": span.subtype or None,
                            "start": span.start, "end": span.end, "out_start": span.out_start,
                            "out_end": span.out_end, "length": span.end - span.start, "action": span.action,
                            "allow_reason": span.allow_reason, "digest": value_digest})
    order = np.argsort(np.array(rows, np.int64), kind="stable")
    counts = np.bincount(np.array(rows, np.int64), minlength=n_rows) if rows else np.zeros(n_rows, np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    flat = pa.array([records[i] for i in order], AUDIT_TYPE)
    return pa.ListArray.from_arrays(pa.array(offsets), flat)

"""`pii`: find personal data and secrets, redact them or drop their rows, and keep an audit that holds no value
(docs/methods.md §16).

Each of `columns` that the rows have (`text`, `prompt`, `response`, and the `content` of every chat turn in
`messages`) is scanned for `types` (§16.4: email, phone, IPv4/IPv6, credit card, IBAN, secrets, JWT, private key;
`high_entropy` on request). `mode`:
- `redact` (default): every found value becomes a typed placeholder (`<EMAIL>`; `style: dolma` or `fake`);
- `drop`: a row with a value of `drop_types` is dropped with reason `pii:<types>`;
- `redact_or_drop`: redact, but drop rows with more than `drop_if_more_than` values (5, as Dolma).

No original value is kept: the output and the rejected rows hold the redacted text (§16.3 overrides the usual
"a rejected row is the original row"), and the audit column `pii_spans` (SQL: `<label>_pii`, one row per value)
holds offsets and a keyed digest (HMAC-SHA256 with `$CURATE_PII_KEY` or a key in the user's config folder).
`pii_count` counts the values replaced or dropped per row; `pii_types` lists their types.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from curate.methods.pii import DEFAULT_TYPES, TYPES, Style, validated_phones
from curate.methods.pii_columns import (
    AUDIT_TYPE,
    Scanner,
    audit_column,
    chat_contents,
    key_id,
    pii_key,
    with_contents,
)
from curate.stages.base import MapStage, Params, register
from curate.stages.decision import Decision

PiiType = Literal["private_key", "secret", "jwt", "credit_card", "iban", "email", "ip", "phone", "high_entropy"]


class PiiParams(Params):
    types: tuple[PiiType, ...] = DEFAULT_TYPES
    mode: Literal["redact", "drop", "redact_or_drop"] = "redact"
    drop_types: tuple[PiiType, ...] | None = None  # mode drop: the types that drop a row (default: all of `types`)
    drop_if_more_than: int = Field(5, ge=0)  # mode redact_or_drop
    style: Style = "typed"
    columns: tuple[str, ...] = ("text", "prompt", "response", "messages")
    public_only: bool = True  # private, loopback and documentation addresses are not personal data
    phone_region: str | None = None  # with `phonenumbers` installed: its validated matcher for this region

    @field_validator("types", "drop_types")
    @classmethod
    def _known(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else tuple(dict.fromkeys(value))


@register
class Pii(MapStage):
    name = "pii"
    Params = PiiParams
    needs = ("id",)
    report_score = None
    selection_reasons = ()
    audit_views: ClassVar[dict[str, str]] = {"pii": "pii_spans"}  # SQL: `<label>_pii`, one row per found value

    def configure(self) -> None:
        p = self.params
        self.uses = p.columns
        self.adds = (*p.columns, "pii_count", "pii_types", "pii_spans")
        if p.phone_region is not None:
            self.requires = ("phonenumbers",)

    def fingerprint_extra(self) -> dict[str, Any]:
        return {"key_id": key_id(pii_key())}  # another key gives other digests

    def setup(self) -> None:
        p = self.params
        phone = validated_phones(p.phone_region) if p.phone_region is not None else None
        self.scanner = Scanner(p.types, p.style, p.public_only, phone)

    def process(self, table: pa.Table) -> Decision:
        p = self.params
        n = table.num_rows
        adds: dict[str, pa.Array] = {}
        scans = []
        for name in p.columns:
            if name not in table.column_names:
                continue
            column = table.column(name).combine_chunks()
            if pa.types.is_list(column.type) and pa.types.is_struct(column.type.value_type):
                contents, parents, index = chat_contents(column)
                scan = self.scanner.scan(contents, parents)
                adds[name] = with_contents(column, scan.values)
                scans.append((name, scan, index))
            elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                scan = self.scanner.scan(column)
                adds[name] = scan.values
                scans.append((name, scan, None))
        audit = audit_column(n, scans)
        found, types = _redacted_per_row(audit, n)
        adds |= {"pii_count": pa.array(found, pa.int64()), "pii_types": types, "pii_spans": audit}
        reason = self._reasons(found, types.to_pylist() if p.mode != "redact" else None)
        return Decision(reason=reason, score=pa.array(found.astype(np.float64)), adds=adds)

    def _reasons(self, found: np.ndarray, types: list[list[str]] | None) -> pa.Array | None:
        p = self.params
        if p.mode == "redact":
            return None
        if p.mode == "redact_or_drop":
            drop = found > p.drop_if_more_than
        else:
            deciding = set(p.drop_types or p.types)
            drop = np.array([bool(deciding.intersection(t)) for t in types], bool)
        return pa.array([f"pii:{'+'.join(t)}" if d else None for d, t in zip(drop, types, strict=True)], pa.string())


def _redacted_per_row(audit: pa.ListArray, n: int) -> tuple[np.ndarray, pa.Array]:
    """Each row's count of redacted values, and their types (sorted, distinct), from its audit records: Python
    touches only the rows that have some."""
    flat = pc.list_flatten(audit)
    found = np.zeros(n, np.int64)
    lengths = np.zeros(n, np.int64)
    values: list[str] = []
    if len(flat):
        parents = pc.list_parent_indices(audit).to_numpy(zero_copy_only=False)
        redacted = pc.equal(flat.field("action"), "redacted").to_numpy(zero_copy_only=False)
        found = np.bincount(parents[redacted], minlength=n)
        per_row: dict[int, set[str]] = {}
        for row, kind in zip(parents[redacted].tolist(), flat.field("type").filter(pa.array(redacted)).to_pylist(),
                             strict=True):
            per_row.setdefault(row, set()).add(kind)
        for row in sorted(per_row):
            kinds = sorted(per_row[row])
            lengths[row] = len(kinds)
            values += kinds
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return found, pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.string()))


__all__ = ["AUDIT_TYPE", "TYPES", "Pii", "PiiParams"]

"""Texts of one field from any input curate reads (a file, glob or folder in any supported format, or a curate
dataset folder), mapped as ingest maps them: instruction rows get `text = prompt + blank line + response`, chats
are rendered, and so on. For tools that need plain texts (training a small LM), not for pipeline runs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from curate.data.dataset import Dataset
from curate.data.errors import ConfigError, CurateError

log = logging.getLogger("curate")
PROMPT_RESPONSE = "prompt+response"


def _values(table: pa.Table, field: str, where: str) -> list[str]:
    names = ["prompt", "response"] if field == PROMPT_RESPONSE else [field]
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise CurateError(f"{where} has no field {missing[0]!r}; it has {table.column_names}")
    if field == PROMPT_RESPONSE:
        # one text per pair; the newline keeps the prompt's last word apart from the response's first
        pairs = zip(table.column("prompt").to_pylist(), table.column("response").to_pylist(), strict=True)
        return [f"{p or ''}\n{r}" for p, r in pairs if r]
    values = table.column(field).to_pylist()
    return [v if isinstance(v, str) else str(v) for v in values if v is not None and v != ""]


def _mapped_tables(units: list) -> Iterator[tuple[str, pa.Table, int]]:
    """(file, rows ingest keeps, rows it would reject) per chunk of the input files."""
    from curate.io.formats import read_unit
    from curate.io.mapping import map_chunk, typed_sources

    for unit in units:
        for chunk in read_unit(unit, typed_sources({})):
            if not chunk.table.num_rows:
                yield unit.path, chunk.table, len(chunk.bad)
                continue
            table, reasons = map_chunk(chunk.table, unit)
            ok = pc.is_null(reasons)
            kept = table.filter(ok)
            yield unit.path, kept, len(chunk.bad) + table.num_rows - kept.num_rows


def read_rows(source: str | Path, limit: int | None = None) -> pa.Table:
    """The first `limit` rows of any input curate reads (or of a curate dataset folder), mapped as ingest maps
    them. Rows that ingest would reject (malformed records, missing fields) are skipped with a warning."""
    from curate.data.schemas import conform, unify_schemas
    from curate.io.sources import units_for
    from curate.io.specs import InputSpec

    path = Path(source).expanduser()
    if Dataset.exists(path):
        return Dataset.open(path).to_table().slice(0, limit)
    spec = InputSpec(path=str(path))
    try:
        units = units_for(spec, "input")
    except ConfigError as error:
        raise CurateError(str(error).replace("input.path: ", "")) from None
    tables: list[pa.Table] = []
    rows = skipped = 0
    for _, table, bad in _mapped_tables(units):
        skipped += bad
        table = table.slice(0, None if limit is None else limit - rows)
        rows += table.num_rows
        if table.num_rows:
            tables.append(table)
        if limit is not None and rows >= limit:
            break
    if skipped:
        log.warning("%s: skipped %d malformed or incomplete rows", path, skipped)
    if not tables:
        raise CurateError(f"{str(path)!r} holds no rows curate can read")
    schema = unify_schemas([t.schema for t in tables])
    return pa.concat_tables([conform(t, schema) for t in tables])


def read_texts(source: str | Path, field: str = "text", limit: int | None = None) -> list[str]:
    """Non-empty values of `field` (or `prompt+response`, joined by a newline) of the first `limit` rows (see
    `read_rows`)."""
    return _values(read_rows(source, limit), field, repr(str(source)))

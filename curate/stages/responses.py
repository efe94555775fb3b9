"""Shared parts of the stages that generate or replace responses of instruction rows (`dart`, `clear`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curate.methods.math_check import extract_answer


def render_prompts(table: pa.Table, template: str) -> list[str]:
    """Each row's prompt for the generator: `template` filled with the row's columns (`{prompt}` at least)."""
    rows = table.to_pylist()
    try:
        return [template.format(**row) for row in rows]
    except KeyError as missing:
        from curate.data.errors import CurateError

        raise CurateError(f"prompt_template {template!r} names the column {missing}, which the rows lack; they "
                          f"have {table.column_names}") from None


def with_responses(table: pa.Table, responses: Sequence[str | None] | pa.Array) -> dict[str, pa.Array]:
    """The `response` and `text` columns of rows whose responses are replaced (None keeps a row's own): the text of
    an instruction row is its prompt and response, joined as ingest joins them."""
    from curate.io.mapping import PAIR_SEPARATOR  # (curate.io imports the config, which imports the stages)

    new = responses if isinstance(responses, pa.Array) else pa.array(list(responses), pa.string())
    response = pc.coalesce(new, table.column("response").combine_chunks())
    rendered = pc.binary_join_element_wise(table.column("prompt").combine_chunks(), response, PAIR_SEPARATOR)
    text = pc.if_else(pc.is_null(new), table.column("text").combine_chunks(), rendered) \
        if "text" in table.column_names else rendered
    return {"response": response, "text": text}


def reference_answers(table: pa.Table, column: str) -> list[str | None]:
    """Each row's reference final answer: `column` where the rows have it, else the final answer of `response`."""
    if column in table.column_names:
        values: list[Any] = table.column(column).to_pylist()
        fallback = table.column("response").to_pylist() if "response" in table.column_names else [None] * len(values)
        return [str(v).strip() if v is not None and str(v).strip() else extract_answer(r)
                for v, r in zip(values, fallback, strict=True)]
    return [extract_answer(r) for r in table.column("response").to_pylist()]

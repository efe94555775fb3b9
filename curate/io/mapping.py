"""Field mapping: raw input columns -> the data contract (`id`, `source`, `text`, `prompt`, ...).

Rules (documented in the README):
- `fields: {text: body}` maps contract names to source columns; contract names not mapped default to a
  source column of the same name, unless that column is already mapped to another name.
- `text` for instruction rows without one is `prompt + "\\n\\n" + response` (one file may mix text rows
  and instruction rows); for chat `messages` it is every turn rendered as `Role: content`, joined by blank
  lines (`prompt` = the turns before the last assistant turn, `response` = the last assistant turn).
- `id` comes from the source when it has one, else a 128-bit hash of `text`.
- All other source columns pass through untouched; one whose name a contract column takes is kept as
  `<name>_original`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.data.hashing import content_ids
from curate.data.targets import TARGET_NAME, TARGET_WEIGHT
from curate.io.chat_turns import vectorised_turns
from curate.io.json_text import parse_json_texts
from curate.io.readers import TypedFields, decode_utf8
from curate.io.sources import InputUnit

CONTRACT = ("id", "source", "text", "prompt", "response", "answer", "messages")
TEXT_FIELDS = ("text", "prompt", "response")
PAIR_SEPARATOR = "\n\n"  # between an instruction row's prompt and response, wherever they are joined
ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}
ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}
MESSAGE_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def completion_prompt(prompt: str | None) -> str:
    """An instruction row's prompt as a model reads it before the response: followed by the blank line that `text`
    has between the two (an empty prompt stays empty). Fine-tuning, generation and the prompt-completion export
    all use it, so every trainer sees the same tokens."""
    return f"{prompt}{PAIR_SEPARATOR}" if prompt else ""


def resolve_fields(columns: list[str], explicit: dict[str, str]) -> dict[str, str]:
    """Contract name -> source column, explicit mappings first, then same-name defaults."""
    mapping = dict(explicit)
    used = set(mapping.values())
    for name in ("id", "text", "prompt", "response", "answer", "messages"):
        if name not in mapping and name in columns and name not in used:
            mapping[name] = name
    return mapping


def typed_sources(explicit: dict[str, str]) -> TypedFields:
    """Source column -> (contract name, Python type it must hold), for readers that see raw records."""
    sources = {}
    for name, kind in [*((n, str) for n in TEXT_FIELDS), ("messages", (list, str))]:  # str: JSON text
        column = explicit.get(name, name)
        if name in explicit or column not in explicit.values():
            sources[column] = (name, kind)
    return sources


class _Reasons:
    """First failing reason per row (later checks never overwrite an earlier reason)."""

    def __init__(self, n: int):
        self.values = np.full(n, None, dtype=object)

    def set(self, mask: np.ndarray, reason: str) -> None:
        self.values[mask & np.equal(self.values, None)] = reason

    def array(self) -> pa.Array:
        return pa.array(self.values, pa.string())


def _mask(array: pa.Array) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=bool)


def _text_column(table: pa.Table, name: str, column: str, reasons: _Reasons) -> pa.Array:
    """A text field as strings; wrong types and undecodable bytes are flagged, nulls are left to the caller."""
    n = table.num_rows
    if column not in table.column_names:
        return pa.nulls(n, pa.string())
    values = table.column(column).combine_chunks()
    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        values = pc.cast(values, pa.string())
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        values, undecodable = decode_utf8(values)
        reasons.set(undecodable, "undecodable_bytes")
    elif not pa.types.is_null(kind):
        reasons.set(_mask(pc.is_valid(values)), f"wrong_type:{name}")
        values = pa.nulls(n, pa.string())
    else:
        values = pa.nulls(n, pa.string())
    return values


def _text_fields(table: pa.Table, mapping: dict[str, str], reasons: _Reasons) -> dict[str, pa.Array]:
    """`text`, `prompt`, `response` per row. A row needs a text, or a prompt and a response to render one;
    so one file may mix plain-text rows and instruction rows."""
    out = {name: _text_column(table, name, mapping[name], reasons) for name in TEXT_FIELDS if name in mapping}
    text = out.get("text")
    if "prompt" in out or "response" in out:
        for name in ("prompt", "response"):
            out.setdefault(name, pa.nulls(table.num_rows, pa.string()))
        rendered = pc.binary_join_element_wise(out["prompt"], out["response"], PAIR_SEPARATOR)
        text = rendered if text is None else pc.coalesce(text, rendered)
    out["text"] = text if text is not None else pa.nulls(table.num_rows, pa.string())
    missing = _mask(pc.is_null(out["text"]))
    for name in ("prompt", "response"):
        if name in out:
            reasons.set(missing & _mask(pc.is_null(out[name])), f"missing_field:{name}")
    reasons.set(missing, "missing_field:text")
    return out


def _scalar_as_string(table: pa.Table, name: str, column: str, reasons: _Reasons) -> pa.Array | None:
    """`id` / `answer`: strings, or numbers and booleans written as strings."""
    if column not in table.column_names:
        return None
    values = table.column(column).combine_chunks()
    try:
        return pc.cast(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        reasons.set(_mask(pc.is_valid(values)), f"wrong_type:{name}")
        return pa.nulls(table.num_rows, pa.string())


def _render_turns(turns: list[tuple[str, str]]) -> str:
    return PAIR_SEPARATOR.join(f"{ROLE_NAMES.get(role, role.title())}: {content}" for role, content in turns)


def _parse_turns(conversation: object) -> list[tuple[str, str]] | None:
    """[(role, content)] from OpenAI-style {role, content} or ShareGPT-style {from, value} turns."""
    if not isinstance(conversation, list) or not conversation:
        return None
    turns = []
    for message in conversation:
        if not isinstance(message, dict):
            return None
        role = message.get("role")
        role = message.get("from") if role is None else role
        content = message.get("content")
        content = message.get("value") if content is None else content
        if not isinstance(role, str) or not isinstance(content, str):
            return None
        turns.append((ROLE_ALIASES.get(role.lower(), role.lower()), content))
    return turns


def _messages(table: pa.Table, column: str, reasons: _Reasons) -> dict[str, pa.Array]:
    """Chat turns -> normalised `messages`, `prompt`, `response`, `text`: with Arrow compute for a typed column
    (`curate.io.chat_turns`), else a loop per row. Conversations stored as JSON text are parsed first."""
    n = table.num_rows
    chats: pa.Array | pa.ChunkedArray | list = table.column(column) if column in table.column_names else [None] * n
    if isinstance(chats, pa.ChunkedArray) and (pa.types.is_string(chats.type) or pa.types.is_large_string(chats.type)):
        chats, not_json = parse_json_texts(chats)
        reasons.set(not_json, "bad_messages")
    if not isinstance(chats, list) and (turns := vectorised_turns(
            chats, ROLE_ALIASES, ROLE_NAMES, PAIR_SEPARATOR)) is not None:
        reasons.set(turns.missing, "missing_field:messages")
        reasons.set(turns.bad, "bad_messages")
        reasons.set(turns.no_answer, "no_assistant_turn")
        return {"messages": turns.messages.cast(MESSAGE_TYPE), "prompt": turns.prompt, "response": turns.response,
                "text": turns.text}
    out: dict[str, list] = {name: [None] * n for name in ("messages", "prompt", "response", "text")}
    missing, bad, no_answer = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    values = chats if isinstance(chats, list) else chats.to_pylist()
    for i, conversation in enumerate(values):
        if conversation is None:
            missing[i] = True
            continue
        turns = _parse_turns(conversation)
        if turns is None:
            bad[i] = True
            continue
        out["messages"][i] = [{"role": r, "content": c} for r, c in turns]
        out["text"][i] = _render_turns(turns)
        if turns[-1][0] != "assistant":
            no_answer[i] = True
            continue
        out["response"][i] = turns[-1][1]
        before = turns[:-1]
        out["prompt"][i] = before[0][1] if len(before) == 1 else _render_turns(before)
    reasons.set(missing, "missing_field:messages")
    reasons.set(bad, "bad_messages")
    reasons.set(no_answer, "no_assistant_turn")
    return {"messages": pa.array(out["messages"], MESSAGE_TYPE),
            **{k: pa.array(out[k], pa.string()) for k in ("prompt", "response", "text")}}


def map_chunk(table: pa.Table, unit: InputUnit) -> tuple[pa.Table, pa.Array]:
    """Map one chunk of raw rows. Returns the contract table (all rows) and a reason per row (null = ok)."""
    n = table.num_rows
    mapping = resolve_fields(table.column_names, dict(unit.fields))
    reasons = _Reasons(n)
    out: dict[str, pa.Array] = {}

    if "messages" in mapping and not set(TEXT_FIELDS) & set(mapping):
        out.update(_messages(table, mapping["messages"], reasons))
    else:
        out.update(_text_fields(table, mapping, reasons))
        if "messages" in mapping and mapping["messages"] in table.column_names:
            out["messages"] = table.column(mapping["messages"])
    answer = _scalar_as_string(table, "answer", mapping["answer"], reasons) if "answer" in mapping else None
    if answer is not None:
        out["answer"] = answer

    ids = _scalar_as_string(table, "id", mapping["id"], reasons) if "id" in mapping else None
    hashed = content_ids(out["text"])
    if ids is not None:  # rows without a source id fall back to the content hash
        hashed = pc.if_else(pc.or_kleene(pc.is_null(ids), pc.equal(ids, "")), hashed, ids)
    ids = hashed

    used = set(mapping.values())
    data_source = table.column("source") if "source" in table.column_names else None
    if not unit.source and data_source is not None and pa.types.is_string(data_source.type):
        source = pc.fill_null(data_source.combine_chunks(), unit.stem)
        used.add("source")
    else:
        source = pa.array([unit.source or unit.stem] * n, pa.string())

    columns = {"id": ids, "source": source, "text": out["text"]}
    for name in ("prompt", "response", "answer", "messages"):
        if name in out:
            columns[name] = out[name]
    if unit.target:  # a target file: which target, with what weight (curate.data.targets)
        columns[TARGET_NAME] = pa.array([unit.target] * n, pa.string())
        columns[TARGET_WEIGHT] = pa.array([unit.target_weight] * n, pa.float64())
    for name in table.column_names:
        if name not in used:
            columns[f"{name}_original" if name in columns else name] = table.column(name)
    return pa.table(columns), reasons.array()

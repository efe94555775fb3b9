"""Training examples for fine-tuning: token ids with a loss mask, and their packing into fixed-length rows.

What is supervised (docs/methods.md §12):
- plain text (`text`): every token (the start token is input only);
- instruction rows (`prompt`/`response`): the response tokens and the end token; the prompt, followed by the blank
  line that `text` has between the two (`curate.io.mapping.completion_prompt`), is context only. As TRL's
  SFTTrainer does with a prompt-completion record, `prompt + response` is tokenised whole and its first
  `len(tokens(prompt))` tokens are the context (`start + tokens + eos`), so an exported mixture trains the same;
- chats (`messages`): every assistant turn. With a chat template, the conversation is rendered by it and each
  turn's tokens are found by rendering growing prefixes; without one, turns are `Role: content` blocks joined
  by blank lines (ingest's rendering), each assistant block's content supervised.
Examples are cut to `max_length` tokens (keeping the start); one left with no supervised token is skipped.

Packing (`pack_rows`): examples, in the order given, fill rows of at most `max_length` tokens (an example goes
to a new row when the current one cannot hold it). Position ids restart at every example, and attention stays
inside each example (block-diagonal causal masks, which transformers builds from such position ids), so a
packed row computes the same losses as its examples one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from curate.kernels.common import IGNORE_INDEX


@dataclass(frozen=True)
class Example:
    ids: np.ndarray  # int64 token ids
    supervised: np.ndarray  # bool per token: the loss predicts this token (from the tokens before it)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def scored(self) -> int:
        return int(self.supervised[1:].sum())


def _turns_without_template(tokenizer: Any, messages: list[dict], start: list[int], eos: list[int]
                            ) -> tuple[list[int], list[bool]]:
    from curate.io.mapping import PAIR_SEPARATOR, ROLE_NAMES  # ingest's rendering of chats

    ids, sup = list(start), [False] * len(start)
    for i, turn in enumerate(messages):
        role = ROLE_NAMES.get(turn["role"], str(turn["role"]).title())
        head = (PAIR_SEPARATOR if i else "") + f"{role}: "
        head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        body = tokenizer(turn["content"] or "", add_special_tokens=False)["input_ids"]
        assistant = turn["role"] == "assistant"
        ids += head_ids + body
        sup += [False] * len(head_ids) + [assistant] * len(body)
    return ids + eos, sup + [messages[-1]["role"] == "assistant"] * len(eos)


def _turns_with_template(tokenizer: Any, messages: list[dict]) -> tuple[list[int], list[bool]]:
    """Render with the tokenizer's chat template; a turn's tokens are what its prefix adds to the one before."""
    ids: list[int] = []
    sup: list[bool] = []
    for i, turn in enumerate(messages):
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=True, add_generation_prompt=False)
        upto = list(upto["input_ids"] if hasattr(upto, "keys") else upto)  # transformers 5: a BatchEncoding
        if upto[: len(ids)] != ids:  # a template that rewrites earlier turns: supervise only the last one
            ids, sup = upto, [False] * len(upto)
            continue
        new = upto[len(ids):]
        ids += new
        sup += [turn["role"] == "assistant"] * len(new)
    return ids, sup


def _ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return list(tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else []


def _encoded_rows(rows: Sequence[dict[str, Any]], tokenizer: Any, max_length: int, start: int | None,
                  eos: int | None) -> list[Example | None]:
    """Each row's example, or None where it has nothing supervised (see `encode_examples`)."""
    head = [start] if start is not None else []
    tail = [eos] if eos is not None else []
    template = getattr(tokenizer, "chat_template", None)
    chats = [i for i, r in enumerate(rows) if r.get("messages")]
    pairs = [i for i, r in enumerate(rows) if not r.get("messages") and r.get("response") is not None]
    plain = sorted(set(range(len(rows))) - set(chats) - set(pairs))
    built: dict[int, tuple[list[int], list[bool]]] = {}
    from curate.io.mapping import completion_prompt

    context = [completion_prompt(rows[i].get("prompt")) for i in pairs]
    prompts = _ids(tokenizer, context)
    joined = _ids(tokenizer, [c + rows[i]["response"] for c, i in zip(context, pairs, strict=True)])
    for i, p, whole in zip(pairs, prompts, joined, strict=True):
        k = min(len(p), len(whole))
        built[i] = (head + whole + tail, [False] * (len(head) + k) + [True] * (len(whole) - k + len(tail)))
    for i, body in zip(plain, _ids(tokenizer, [rows[i].get("text") or "" for i in plain]), strict=True):
        built[i] = (head + body + tail, [False] * len(head) + [True] * (len(body) + len(tail)))
    for i in chats:
        messages = list(rows[i]["messages"])
        built[i] = (_turns_with_template(tokenizer, messages) if template
                    else _turns_without_template(tokenizer, messages, head, tail))
    out: list[Example | None] = []
    for i in range(len(rows)):
        ids, sup = built[i]
        example = Example(np.asarray(ids[:max_length], np.int64), np.asarray(sup[:max_length], bool))
        out.append(None if len(example) < 2 or example.scored == 0 else example)
    return out


def encode_examples(rows: Sequence[dict[str, Any]], tokenizer: Any, max_length: int,
                    start: int | None, eos: int | None) -> tuple[list[Example], int]:
    """Examples of `rows` (dicts with `text`, and `prompt`/`response` or `messages` where present), in order;
    returns them and the number of rows skipped (nothing supervised). `start`/`eos`: token ids put around each
    example. Texts are tokenised in batches (one tokenizer call per field), chats row by row."""
    encoded = _encoded_rows(rows, tokenizer, max_length, start, eos)
    out = [e for e in encoded if e is not None]
    return out, len(encoded) - len(out)


def trained_tokens(rows: Sequence[dict[str, Any]], tokenizer: Any, max_length: int, start: int | None,
                   eos: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, supervised targets) that fine-tuning trains on per row, as `encode_examples` builds them: cut to
    `max_length`, 0 for a row it skips."""
    encoded = _encoded_rows(rows, tokenizer, max_length, start, eos)
    tokens = np.fromiter((len(e) if e else 0 for e in encoded), np.int64, len(encoded))
    scored = np.fromiter((e.scored if e else 0 for e in encoded), np.int64, len(encoded))
    return tokens, scored


def pack_rows(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Example indices per packed row: in the given order, each row holding at most `max_length` tokens."""
    rows: list[list[int]] = []
    used = max_length + 1
    for i, n in enumerate(lengths):
        if used + n > max_length:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += n
    return rows


@dataclass
class PackedBatch:
    """Rows of packed examples as arrays: ids, next-token targets (IGNORE_INDEX where nothing is scored) and
    position ids restarting at each example (padding continues as one more block of its own)."""

    input_ids: np.ndarray  # (rows, width) int64
    targets: np.ndarray  # (rows, width) int64: the token position t predicts, or IGNORE_INDEX
    position_ids: np.ndarray  # (rows, width) int64
    tokens: int  # real (non-padding) tokens
    scored: int  # supervised targets


def build_batch(examples: Sequence[Example], rows: Sequence[Sequence[int]], pad_id: int) -> PackedBatch:
    """The arrays of `rows` (lists of indices into `examples`), right-padded to the longest row."""
    width = max(sum(len(examples[i]) for i in row) for row in rows)
    ids = np.full((len(rows), width), pad_id, np.int64)
    targets = np.full((len(rows), width), IGNORE_INDEX, np.int64)
    positions = np.zeros((len(rows), width), np.int64)
    tokens = 0
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            ex = examples[i]
            n = len(ex)
            ids[r, at: at + n] = ex.ids
            # position t predicts token t + 1 of the same example, when that token is supervised
            targets[r, at: at + n - 1] = np.where(ex.supervised[1:], ex.ids[1:], IGNORE_INDEX)
            positions[r, at: at + n] = np.arange(n)
            at += n
        tokens += at
        positions[r, at:] = np.arange(width - at)
    return PackedBatch(ids, targets, positions, tokens, int((targets != IGNORE_INDEX).sum()))


def prompt_ids(row: dict[str, Any], tokenizer: Any, start: int | None) -> list[int] | None:
    """The tokens a model continues to answer `row` as the examples above train it: `start + prompt` for
    instruction rows; a chat up to its last assistant turn (with the template's generation prompt, or an
    `Assistant: ` block without a template). None for rows with nothing to answer (plain text)."""
    head = [start] if start is not None else []
    messages = list(row.get("messages") or [])
    if messages:
        if messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        if getattr(tokenizer, "chat_template", None):
            ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
            return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        from curate.io.mapping import PAIR_SEPARATOR, ROLE_NAMES

        blocks = [f"{ROLE_NAMES.get(t['role'], str(t['role']).title())}: {t['content'] or ''}" for t in messages]
        text = PAIR_SEPARATOR.join([*blocks, "Assistant: "])
        return head + list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if row.get("response") is None:
        return None
    from curate.io.mapping import completion_prompt

    return head + list(tokenizer(completion_prompt(row.get("prompt")), add_special_tokens=False)["input_ids"])

"""The vectorised chat mapping (`curate.io.chat_turns`) gives the row loop's result, value for value, on chats made
of real GSM8K rows and on any mix of roles, aliases, empty and missing turns (hypothesis)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import curate.io.mapping as mapping

DATA = Path(__file__).resolve().parents[1] / "data"


def mapped(table: pa.Table, vectorised: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, list]:
    with monkeypatch.context() as patch:
        if not vectorised:
            patch.setattr(mapping, "vectorised_turns", lambda *_: None)
        reasons = mapping._Reasons(table.num_rows)
        out = mapping._messages(table, "messages", reasons)
    return {k: v.to_pylist() for k, v in out.items()}, list(reasons.values)


def same(table: pa.Table, monkeypatch: pytest.MonkeyPatch) -> None:
    assert mapping.vectorised_turns(table.column("messages"), mapping.ROLE_ALIASES, mapping.ROLE_NAMES,
                                    mapping.PAIR_SEPARATOR) is not None  # the typed path is the one measured
    assert mapped(table, True, monkeypatch) == mapped(table, False, monkeypatch)


def hh_chats() -> list[list[dict]]:
    """Chats from the GSM8K sample's real problems and solutions: user then assistant; every third with a system
    turn first, every fifth with a follow-up whose roles are ShareGPT-style aliases (Human, GPT)."""
    rows = [json.loads(line) for line in (DATA / "finetune_gsm8k.jsonl").read_text().split("\n") if line.strip()]
    chats = []
    for i, r in enumerate(rows):
        turns = [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}]
        if i % 3 == 0:
            turns = [{"role": "system", "content": "Solve step by step."}, *turns]
        if i % 5 == 0:  # a follow-up, split where the answer states its result
            head, _, tail = r["response"].partition("####")
            turns[-1:] = [{"role": "assistant", "content": head}, {"role": "Human", "content": "And so?"},
                          {"role": "GPT", "content": re.sub(r"\s+", " ", tail)}]
        chats.append(turns)
    return chats


def test_real_chats(monkeypatch):
    same(pa.table({"messages": pa.array(hh_chats())}), monkeypatch)


def test_sharegpt_keys_and_chunks(monkeypatch):
    chats = [[{"from": t["role"], "value": t["content"]} for t in chat] for chat in hh_chats()[:50]]
    table = pa.table({"messages": pa.chunked_array([pa.array(chats[:20]), pa.array(chats[20:])])})
    same(table, monkeypatch)


ROLES = st.sampled_from(["user", "User", "assistant", "ASSISTANT", "system", "human", "gpt", "bot", "model",
                         "tool_call", "it's", "ß", ""])
TURN = st.one_of(st.none(), st.fixed_dictionaries({"role": st.one_of(st.none(), ROLES),
                                                   "content": st.one_of(st.none(), st.text(max_size=12))}))
CHAT = st.one_of(st.none(), st.lists(TURN, max_size=5))


@settings(max_examples=150, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(CHAT, min_size=1, max_size=12))
def test_any_chats(monkeypatch, chats):
    typed = pa.array(chats, pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])))
    same(pa.table({"messages": typed}), monkeypatch)

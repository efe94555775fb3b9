"""The `pii` stage (docs/methods.md §16): the known answers of §16.8, precision and recall per type on a generated
labelled set, the audit (keyed digests, never a value), chat turns, hostile text, and a run through the CLI whose
files hold no planted value."""

from __future__ import annotations

import itertools
import json
import os
import stat
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.methods.pii import find_spans, placeholder, redact
from curate.methods.pii_columns import digest, pii_key
from curate.stages.pii import Pii
from tests.cli_runner import curate
from tests.stages.pii_cases import in_sentence, negatives, positives


@pytest.fixture(autouse=True)
def audit_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATE_PII_KEY", "test-key")


def redacted(text: str) -> str:
    return redact(text, find_spans(text))[0]


@pytest.mark.parametrize(("text", "expected"), [
    ("Contact jane.doe@acme-corp.io today", "Contact <EMAIL> today"),
    ("mail user@example.com", "mail user@example.com"),
    ("server 8.8.8.8 responded", "server <IP_ADDRESS> responded"),
    ("2001:4860:4860::8888", "<IP_ADDRESS>"),
    *[(t, t) for t in ("router 192.168.1.1", "version 1.2.3.4", "1.2.3.4.5", "2001:db8::1", "std::vector", "a::b",
                       "10:30:00", "00:1A:2B:3C:4D:5E")],
    ("call +1 650-253-0000", "call <PHONE>"),
    *[(t, t) for t in ("2024-01-15 10:30:00", "ISBN 978-3-16-148410-0", "order #123-456-7890")],
    *[(t, "<CREDIT_CARD>") for t in ("4111 1111 1111 1111", "378282246310005", "5500-0000-0000-0004")],
    *[(t, t) for t in ("4111 1111 1111 1112", "1234 5678 9012 3456")],
    ("GB82 WEST 1234 5698 7654 32", "<IBAN>"), ("DE89 3704 0044 0532 0130 00", "<IBAN>"),
    ("GB82 WEST 1234 5698 7654 33", "GB82 WEST 1234 5698 7654 33"),
    ("AKIAIOSFODNN7EXAMPLE", "<SECRET>"),
    ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.sig", "<SECRET>"),
    ("eyJnotjson.abc.def", "eyJnotjson.abc.def"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\nabcd\nefgh\n-----END RSA PRIVATE KEY-----\nkept", "<PRIVATE_KEY>\nkept"),
    ("token ghp_" + "a1" * 18, "token <SECRET>"),
    ("postgres://admin:s3cr3t@10.1.2.3/db", "postgres://admin:<SECRET>@10.1.2.3/db"),
])
def test_known_answers(text: str, expected: str) -> None:
    """§16.8, cases 1-6: exact outputs."""
    assert redacted(text) == expected


def test_offsets_and_allowed_spans() -> None:
    """§16.8.1: span [8, 29), out span [8, 15); a reserved domain is recorded as allowed, unchanged."""
    _, spans = redact("Contact jane.doe@acme-corp.io today", find_spans("Contact jane.doe@acme-corp.io today"))
    assert [(s.start, s.end, s.out_start, s.out_end, s.action) for s in spans] == [(8, 29, 8, 15, "redacted")]
    (allowed,) = find_spans("mail user@example.com")
    assert allowed.action == "allowed" and allowed.allow_reason == "reserved_domain"
    assert find_spans("AKIAIOSFODNN7EXAMPLE")[0].subtype == "example_key"


def test_precision_and_recall_per_type_on_a_labelled_set() -> None:
    """330 valid values planted in sentences and 320 hard negatives: precision and recall ≥ 0.95 for every type."""
    pos, neg = positives(), negatives()
    assert len(pos) >= 300 and len(neg) >= 300
    found, missed, false = Counter(), Counter(), Counter()
    for k, (value, kind) in enumerate(pos):
        sentence = in_sentence(value, k)
        start = sentence.index(value)
        spans = [s for s in find_spans(sentence) if not s.allow_reason]
        right = [s for s in spans if s.type == kind and s.start <= start and s.end >= start + len(value)]
        found[kind] += bool(right)
        missed[kind] += not right
        false.update(s.type for s in spans if s not in right)
    for k, value in enumerate(neg):
        false.update(s.type for s in find_spans(in_sentence(value, k)) if not s.allow_reason)
    for kind in found | missed:
        recall = found[kind] / (found[kind] + missed[kind])
        precision = found[kind] / max(found[kind] + false[kind], 1)
        assert recall >= 0.95 and precision >= 0.95, (kind, recall, precision)
    assert set(found) == {"email", "phone", "ip", "credit_card", "iban", "secret", "jwt", "private_key"}


def test_modes_and_the_audit() -> None:
    """§16.8.7: 6 emails with redact_or_drop drop the row, 5 are redacted; §16.8.8: digests equal for the same key
    and value, different under another key; the audit holds no value."""
    emails = lambda n: " ".join(f"p{i}@acme.io" for i in range(n))  # noqa: E731
    table = pa.table({"id": ["six", "five"], "text": [emails(6), emails(5)]})
    kept, rejected = Pii(mode="redact_or_drop")(table)
    assert kept.column("id").to_pylist() == ["five"] and kept.column("pii_count").to_pylist() == [5]
    assert rejected.column("reason").to_pylist() == ["pii:email"]
    assert "@acme.io" not in json.dumps(rejected.to_pylist()) + json.dumps(kept.to_pylist())
    audit = kept.column("pii_spans").to_pylist()[0]
    assert {r["digest"] for r in audit} == {digest(b"test-key", f"p{i}@acme.io") for i in range(5)}
    assert digest(b"test-key", "p0@acme.io") != digest(b"other-key", "p0@acme.io")
    kept_drop, rejected_drop = Pii(mode="drop", drop_types=["secret"])(pa.table({
        "id": ["a", "b"], "text": ["key AKIAIOSFODNN7EXAMPLE", "mail jane@acme.io"]}))
    assert rejected_drop.column("text").to_pylist() == ["key <SECRET>"]  # the rejected row is redacted too
    assert kept_drop.column("text").to_pylist() == ["mail <EMAIL>"]


def test_chat_turns_are_redacted_one_by_one() -> None:
    messages = [[{"role": "user", "content": "my card is 4111-1111-1111-1111"},
                 {"role": "assistant", "content": "I will not store 4111-1111-1111-1111."}], None, []]
    table = pa.table({"id": ["a", "b", "c"], "messages": pa.array(messages)})
    kept, _ = Pii()(table)
    out = kept.column("messages").to_pylist()
    assert [t["content"] for t in out[0]] == ["my card is <CREDIT_CARD>", "I will not store <CREDIT_CARD>."]
    assert out[1] is None and out[2] == []
    assert [r["column"] for r in kept.column("pii_spans").to_pylist()[0]] == ["messages[0]", "messages[1]"]


def test_the_key_file_is_private_and_outside_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CURATE_PII_KEY")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    key = pii_key()
    path = tmp_path / "config" / "curate" / "pii.key"
    assert path.read_bytes() == key and len(key) == 64
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert pii_key() == key  # made once, then read


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab@.:-+ 0123456789AKIZxeyJ_/=\n\"'")), max_size=120))
def test_hostile_text_keeps_offsets_consistent(text: str) -> None:
    """Any text: spans do not overlap, the output is the input with each redacted span replaced by its placeholder,
    and the out offsets point at it."""
    spans = find_spans(text, types=("private_key", "secret", "jwt", "credit_card", "iban", "email", "ip", "phone",
                                    "high_entropy"))
    out, placed = redact(text, spans)
    for a, b in itertools.pairwise(placed):
        assert a.end <= b.start
    for s in placed:
        assert out[s.out_start:s.out_end] == (text[s.start:s.end] if s.allow_reason else placeholder(s, "typed"))


PLANTED = ["jane.doe@acme-corp.io", "+1 650-253-0000", "8.8.4.4", "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32",
           "ghp_" + "Zq" * 18]


def test_a_run_through_the_cli_keeps_no_planted_value(tmp_path: Path) -> None:
    """`curate run` with a pii step, then a dedup: no file written by the pii step or after it (stages, rejected, the
    report, logs) holds a planted value; `<label>_pii` answers "which rows had emails" in SQL."""
    rows = [{"id": f"r{i}", "text": f"row {i}: write to {PLANTED[i % len(PLANTED)]} or call us. " * 2}
            for i in range(24)] + [{"id": f"c{i}", "text": f"clean row {i} about data"} for i in range(6)]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "pii.yaml").write_text(
        "name: pii\ninputs: [{path: pool.jsonl}]\noutput: run\nstages:\n"
        "  - pii: {mode: drop, drop_types: [secret]}\n  - dedup: {}\n")
    curate("run", "pii.yaml", cwd=tmp_path)
    run = tmp_path / "run"
    ingest = next((run / "stages").glob("00-*"))
    for path in run.rglob("*"):
        if path.is_file() and ingest not in path.parents:
            data = path.read_bytes()
            assert not [v for v in PLANTED if v.encode() in data], path
    sql = curate("sql", "run", "SELECT type, count(DISTINCT id) AS n, count(DISTINCT digest) AS values_ FROM pii_pii "
                 "WHERE action = 'redacted' GROUP BY ALL ORDER BY type", "--format", "json", cwd=tmp_path)
    found = {r["type"]: (r["n"], r["values_"]) for r in map(json.loads, sql.stdout.splitlines())}
    assert found == {"credit_card": (4, 1), "email": (4, 1), "iban": (4, 1), "ip": (4, 1), "phone": (4, 1),
                     "secret": (4, 1)}
    dropped = curate("sql", "run", "SELECT reason, count(*) AS n FROM rejected WHERE stage = 'pii' GROUP BY ALL",
                     "--format", "json",
                     cwd=tmp_path)
    assert [json.loads(line) for line in dropped.stdout.splitlines()] == [{"reason": "pii:secret", "n": 4}]

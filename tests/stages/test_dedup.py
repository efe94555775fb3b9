"""The `dedup` stage: params, in-memory use, and runs through the runner (determinism across shards)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from curate.data.dataset import Dataset
from curate.data.errors import ConfigError
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from curate.methods.dedup.evaluate import edit_words
from curate.stages import REGISTRY
from curate.stages.dedup import Dedup, DedupParams, signature_matrix


def test_registered_and_params():
    assert REGISTRY["dedup"] is Dedup and Dedup.kind == "global" and Dedup.needs == ("id", "text")
    p = DedupParams.model_validate({"minhash": {"threshold": 0.7, "verify": "exact"}})
    assert p.exact and p.minhash.threshold == 0.7 and p.minhash.bands == 14 and p.minhash.rows == 8
    assert DedupParams.model_validate({"minhash": None}).minhash is None
    assert DedupParams().minhash.ngram == 5 and DedupParams().minhash.engine == "rensa"
    for bad in ({"minhash": {"bandz": 3}}, {"minhash": {"hash_bits": 16}}, {"fuzzy": True},
                {"minhash": {"verify": "maybe"}}):
        with pytest.raises(ValueError):
            DedupParams.model_validate(bad)


def test_config_errors_name_the_key(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(ConfigError, match="bandz"):
        parse_config({"name": "t", "inputs": [{"path": "in.jsonl"}], "output": "out",
                      "stages": [{"dedup": {"minhash": {"bandz": 3}}}]}, base_dir=tmp_path)


WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu",
         "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega"]


def _doc(seed: int, n: int = 160) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(WORDS[i] + WORDS[j] for i, j in rng.integers(0, len(WORDS), (n, 2)))


def test_in_memory_reasons_and_details():
    base = [_doc(s) for s in range(4)]
    near, _ = edit_words(base[1], 0.01, WORDS, np.random.default_rng(0))
    texts = [base[0], base[1], "  " + base[0].replace(" ", "\n", 3) + " ", base[2], near, base[3], "", "  \n"]
    table = pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": texts, "extra": list(range(len(texts)))})
    stage = Dedup()
    kept, rejected = stage(table)
    assert kept.column("id").to_pylist() == ["r0", "r1", "r3", "r5", "r6"]
    got = {r["id"]: (r["reason"], r["duplicate_of"], r["score"]) for r in rejected.to_pylist()}
    assert got["r2"] == ("exact_duplicate", "r0", 1.0)
    assert got["r7"] == ("exact_duplicate", "r6", 1.0)  # empty texts are equal to each other
    assert got["r4"][:2] == ("near_duplicate", "r1") and 0.8 < got["r4"][2] < 1.0
    assert rejected.column("extra").to_pylist() == [2, 4, 7] and rejected.column("stage")[0].as_py() == "dedup"
    # exact off: the white-space variant is still found, as a near duplicate with estimate 1
    _, rejected2 = Dedup({"exact": False})(table)
    reasons = dict(zip(rejected2.column("id").to_pylist(), rejected2.column("reason").to_pylist(), strict=True))
    assert reasons == {"r2": "near_duplicate", "r4": "near_duplicate"}  # empty texts never near-merge
    # minhash off: only exact duplicates
    _, rejected3 = Dedup({"minhash": None})(table)
    assert rejected3.column("id").to_pylist() == ["r2", "r7"]
    _, nothing = Dedup({"exact": False, "minhash": None})(table)
    assert nothing.num_rows == 0


def test_summaries_do_not_depend_on_batches():
    texts = [_doc(s, 20 + s) for s in range(30)] + [None, ""]
    table = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts})
    stage = Dedup()
    whole = stage.summarize(table)
    parts = pa.concat_tables([stage.summarize(table.slice(i, 7)) for i in range(0, table.num_rows, 7)])
    assert whole.equals(parts)
    assert whole.schema.field("minhash").type == pa.list_(pa.uint32(), 112)  # rensa: 32-bit


def _write_input(path, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    rows, truth = [], {}
    base = [_doc(100 + s, int(rng.integers(150, 250))) for s in range(25)]
    for i, text in enumerate(base):
        rows.append({"id": f"doc{i:02d}", "text": text})
    for k, i in enumerate([3, 7, 7, 12, 20]):  # near copies (one word in a hundred)
        text, _ = edit_words(base[i], 0.01, WORDS, rng)
        rows.append({"id": f"near{k}", "text": text})
        truth[f"near{k}"] = ("near_duplicate", f"doc{i:02d}")
    for k, i in enumerate([5, 5, 9]):  # exact copies with other white space
        rows.append({"id": f"exact{k}", "text": base[i].replace(" ", "  ", 5) + "\n"})
        truth[f"exact{k}"] = ("exact_duplicate", f"doc{i:02d}")
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    first_seen = [r["id"] for r in rows]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return truth, first_seen


def _run(tmp_path, name, shard_rows, params):
    config = parse_config({"name": name, "inputs": [{"path": "in.jsonl"}], "output": name,
                           "engine": {"shard_rows": shard_rows, "prefect": False},
                           "stages": [{"dedup": params}]}, base_dir=tmp_path)
    results = run_pipeline(config)
    return results[-1], tmp_path / name


@pytest.mark.parametrize("params", [{}, {"minhash": {"threshold": 0.8, "verify": "exact"}}])
def test_runner_rejected_dataset_and_determinism(tmp_path, params):
    truth, first_seen = _write_input(tmp_path / "in.jsonl")
    result, run = _run(tmp_path, "small", 7, params)
    assert result.rows_in == result.rows_out + result.rows_rejected == 33
    rejected = Dataset.open(run / "rejected" / "01-dedup").to_table()
    got = {r["id"]: (r["reason"], r["duplicate_of"]) for r in rejected.to_pylist()}
    kept_ids = set(Dataset.open(run / "stages" / "01-dedup").to_table().column("id").to_pylist())
    assert len(kept_ids) == 25 and len(got) == 8
    groups: dict[str, list[str]] = {}
    for copy, (_, original) in truth.items():
        groups.setdefault(original, [original]).append(copy)
    for members in groups.values():  # the first row in dataset order is kept, the others point to it
        first, *others = sorted(members, key=first_seen.index)
        assert first in kept_ids
        for member in others:
            assert got[member] == (truth[members[1]][0], first)
    assert set(rejected.column("score").to_pylist()) and min(rejected.column("score").to_pylist()) > 0.8
    _, run2 = _run(tmp_path, "big", 1000, params)
    kept2 = Dataset.open(run2 / "stages" / "01-dedup").to_table().column("id").to_pylist()
    kept1 = Dataset.open(run / "stages" / "01-dedup").to_table().column("id").to_pylist()
    assert kept1 == kept2
    rejected2 = Dataset.open(run2 / "rejected" / "01-dedup").to_table()
    assert rejected2.select(["id", "reason", "duplicate_of", "score"]).equals(
        rejected.select(["id", "reason", "duplicate_of", "score"]))


def test_signature_matrix_nulls_and_32_bits():
    pair = pa.list_(pa.uint64(), 2)
    column = pa.chunked_array([pa.array([[1, 2], None], pair), pa.array([[3, 4]], pair)])
    assert signature_matrix(column, 2).tolist() == [[1, 2], [2**64 - 1] * 2, [3, 4]]
    texts = [_doc(1), _doc(1) + " extra", _doc(2)]
    table = pa.table({"id": ["a", "b", "c"], "text": texts})
    kept, rejected = Dedup({"minhash": {"hash_bits": 32, "verify": "signature", "threshold": 0.9}})(table)
    assert kept.column("id").to_pylist() == ["a", "c"] and rejected.column("duplicate_of").to_pylist() == ["a"]

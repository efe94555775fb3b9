"""Small-LM training: the tokenizer, packing, the schedule, from-scratch training and fine-tuning from `init`."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from curate.data.errors import CurateError
from curate.models.lm_scorer import LMScorer
from curate.models.lm_train import (
    SPECIAL_TOKEN,
    LMTrainConfig,
    _batches,
    lr_at,
    pack,
    read_train_info,
    train_lm,
    train_tokenizer,
)
from tests.lm_fixtures import TINY_LM, read_records

TINY = LMTrainConfig(**{**TINY_LM, "steps": 30, "batch_size": 8, "warmup_steps": 5})


def records(name: str) -> list[dict]:
    return read_records(f"ingest/{name}")


@pytest.fixture(scope="module")
def pool_texts() -> list[str]:
    return [r["text"] for r in records("pool_sample.jsonl")]


@pytest.fixture(scope="module")
def gsm_texts() -> list[str]:
    return [f"{r['prompt']}\n{r['response']}" for r in records("gsm8k_sample.jsonl")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, pool_texts) -> Path:
    return train_lm(pool_texts, tmp_path_factory.mktemp("lm") / "prior", TINY)


def state(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def test_tokenizer_round_trips_and_has_one_special_token(tmp_path, pool_texts):
    from transformers import AutoTokenizer

    tokenizer = train_tokenizer(pool_texts, 512, tmp_path)
    assert len(tokenizer) == 512
    special = tokenizer.convert_tokens_to_ids(SPECIAL_TOKEN)
    assert tokenizer.bos_token_id == tokenizer.eos_token_id == tokenizer.pad_token_id == special
    text = "Héllo  wörld,\n\n\tcode: x = [1, 2]  # 😀 end "
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    # No special token is added by the tokenizer itself: the scorer and the packer put it in front.
    assert special not in tokenizer(text)["input_ids"]
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(text, add_special_tokens=False)["input_ids"] == ids
    assert reloaded.eos_token == SPECIAL_TOKEN
    with pytest.raises(CurateError, match="too small"):
        train_tokenizer(pool_texts, 100, tmp_path / "x")


def test_pack_joins_documents_after_the_start_token():
    # GPT-2 style (BOS == EOS): one separator before each document.
    chunks = pack([[1, 2], [], [3, 4, 5]], start=0, eos=0, seq_len=3)
    assert chunks.tolist() == [[0, 1, 2], [0, 3, 4], [5, -1, -1]][:2]  # the lone last token is dropped
    # Distinct BOS/EOS: BOS doc EOS.
    chunks = pack([[1, 2], [3]], start=7, eos=9, seq_len=4)
    assert chunks.tolist() == [[7, 1, 2, 9], [7, 3, 9, -1]]


def test_learning_rate_warms_up_then_decays_to_the_floor():
    config = LMTrainConfig(lr=1e-3, warmup_steps=4, min_lr_ratio=0.1)
    lrs = [lr_at(step, 20, config) for step in range(20)]
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert all(a >= b for a, b in itertools.pairwise(lrs[3:]))
    assert lrs[-1] == pytest.approx(1e-4)
    assert lr_at(0, 2, config) == pytest.approx(5e-4)  # warmup longer than the run: cut to the run


def test_epoch_batches_see_every_chunk_once():
    batches = _batches(10, 4, steps=999, items=10, seed=3)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    assert [len(b) for b in _batches(10, 4, steps=5, items=None, seed=3)] == [4] * 5


def test_training_lowers_the_loss_and_saves_an_hf_folder(trained, pool_texts):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = read_train_info(trained)
    assert info["steps"] == TINY.steps and info["texts"] == len(pool_texts) and info["init"] is None
    assert info["first_loss"] == pytest.approx(math.log(512), abs=0.3)  # an untrained model is near uniform
    assert info["final_loss"] < info["first_loss"] - 0.5
    model = AutoModelForCausalLM.from_pretrained(trained)
    tokenizer = AutoTokenizer.from_pretrained(trained)
    assert model.config.n_positions == TINY.seq_len and model.config.vocab_size == len(tokenizer)
    assert model.config.n_layer == 2 and model.config.n_embd == 64
    # The saved model's loss on its training text is the trained one, not the initial one.
    nll = LMScorer(trained).score(pool_texts)
    assert np.mean(nll.mean) < info["first_loss"] - 0.5


def test_training_is_deterministic_for_a_seed(tmp_path, pool_texts):
    config = TINY.model_copy(update={"steps": 8})
    first = train_lm(pool_texts[:30], tmp_path / "a", config)
    second = train_lm(pool_texts[:30], tmp_path / "b", config)
    other = train_lm(pool_texts[:30], tmp_path / "c", config.model_copy(update={"seed": 1}))
    assert read_train_info(first)["last_loss"] == read_train_info(second)["last_loss"]
    a, b, c = state(first), state(second), state(other)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_epochs_mode_runs_one_pass_over_the_chunks(tmp_path, trained, gsm_texts):
    config = TINY.model_copy(update={"epochs": 1.0, "batch_size": 16})
    tuned = train_lm(gsm_texts, tmp_path / "one", config, init=trained)
    info = read_train_info(tuned)
    assert info["steps"] == math.ceil(info["chunks"] / 16)
    half = train_lm(gsm_texts, tmp_path / "half", config.model_copy(update={"epochs": 0.5}), init=trained)
    assert read_train_info(half)["steps"] == math.ceil(math.ceil(0.5 * info["chunks"]) / 16)


def test_init_continues_from_the_model_with_a_fresh_optimizer(tmp_path, trained, gsm_texts):
    config = TINY.model_copy(update={"epochs": 1.0, "batch_size": 4, "warmup_steps": 2,
                                     "vocab_size": 1024, "n_layer": 3})  # architecture fields are ignored
    before = LMScorer(trained).score(gsm_texts)
    tuned = train_lm(gsm_texts, tmp_path / "cond", config, init=trained)
    after = LMScorer(tuned).score(gsm_texts)
    info = read_train_info(tuned)
    assert info["init"] == str(trained)
    # It started from the prior's weights (its first loss is the prior's, well below log V) ...
    assert info["first_loss"] < math.log(512) - 0.4
    # ... and one epoch on the target lowers the loss on the target.
    assert np.mean(after.mean) < np.mean(before.mean) - 0.05
    assert (tmp_path / "cond" / "tokenizer.json").read_bytes() == (trained / "tokenizer.json").read_bytes()
    model = state(tuned)
    assert model["transformer.wte.weight"].shape == (512, 64) and "transformer.h.2.ln_1.weight" not in model


def test_training_errors_name_the_problem(tmp_path, trained, pool_texts):
    with pytest.raises(CurateError, match="no non-empty training texts"):
        train_lm(["", None], tmp_path / "x", TINY)  # type: ignore[list-item]
    with pytest.raises(CurateError, match="no model folder at"):
        train_lm(pool_texts, tmp_path / "y", TINY, init=tmp_path / "missing")
    with pytest.raises(CurateError, match="longer than the model's context"):
        train_lm(pool_texts, tmp_path / "z", TINY.model_copy(update={"seq_len": 128}), init=trained)
    with pytest.raises(ValueError, match="multiple of n_head"):
        LMTrainConfig(n_embd=65, n_head=4)
    with pytest.raises(ValueError, match="Extra inputs"):
        LMTrainConfig(layers=2)  # type: ignore[call-arg]

"""Fine-tuning on real data (GSM8K sample, tests/data/finetune_gsm8k.jsonl) with a tiny local GPT-2 pretrained here on
web and Wikipedia text: held-out loss falls (full and LoRA), response-only masking, packing equivalence, gradient
accumulation, the saved folders load, and a run killed after a checkpoint resumes to the same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from curate.kernels.common import IGNORE_INDEX

from curate.io.mapping import completion_prompt
from curate.models.finetune import FinetuneConfig, finetune, micro_batches
from curate.models.lm_head import split_head
from curate.models.lm_train import LMTrainConfig, load_causal_lm, start_token_id, train_lm
from curate.models.sft_data import encode_examples
from curate.models.train_loop import backward_step, batch_loss_sum
from tests.lm_fixtures import read_records

ROOT = Path(__file__).resolve().parents[2]
GSM = read_records("finetune_gsm8k.jsonl")
TRAIN, HELDOUT = GSM[:240], GSM[340:]
BASE_LM = LMTrainConfig(vocab_size=512, n_layer=2, n_embd=64, n_head=4, seq_len=256, steps=60, batch_size=8,
                        lr=3e-3, warmup_steps=5)
FAST = {"epochs": 1, "batch_size": 8, "max_length": 256, "eval_every": 10, "save_every": None}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny GPT-2 pretrained on web and Wikipedia text (no math): fine-tuning on GSM8K has something to learn."""
    texts = [r["text"] for name in ("heuristics_c4_web_sample.jsonl", "heuristics_wikitext2_test.jsonl")
             for r in read_records(name)]
    return train_lm(texts, tmp_path_factory.mktemp("base") / "lm", BASE_LM)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_full_fine_tuning_lowers_heldout_loss_and_saves_a_loadable_model(tmp_path, base):
    from transformers import AutoModelForCausalLM

    metrics = finetune(TRAIN, tmp_path / "full", FinetuneConfig(model=str(base), lr=3e-3, **FAST), heldout=HELDOUT)
    # measured: 6.04 -> 4.50 nats per response token; asked here: at least 1 nat lower
    assert metrics["heldout_loss_initial"] - metrics["heldout_loss_final"] > 1.0
    # a row whose prompt fills all 256 tokens has nothing to learn from and is skipped
    assert metrics["examples"] + metrics["examples_skipped"] == 240 and metrics["examples_skipped"] < 10
    # one epoch of packed rows, 8 per step (examples of ~200 tokens: mostly one per row of 256)
    assert 0 < metrics["steps"] <= 30 and metrics["packing"]
    detail = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert [p["step"] for p in detail["heldout_curve"]] == [0, 10, 20, metrics["steps"]]
    assert len(detail["train_loss"]) == metrics["steps"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "full")
    assert sum(p.numel() for p in model.parameters()) == metrics["parameters"]


def test_lora_lowers_heldout_loss_and_the_adapter_and_merged_model_load(tmp_path, base):
    from transformers import AutoModelForCausalLM

    config = FinetuneConfig(model=str(base), method="lora", lr=1e-2, lora={"r": 8, "alpha": 16, "merge": True},
                            **FAST)
    metrics = finetune(TRAIN, tmp_path / "lora", config, heldout=HELDOUT)
    # measured: 6.04 -> 5.60; asked here: at least 0.25 nat lower, with 16k of 150k parameters trained
    assert metrics["heldout_loss_initial"] - metrics["heldout_loss_final"] > 0.25
    assert 0 < metrics["trainable_parameters"] < 0.2 * metrics["parameters"]
    assert (tmp_path / "lora" / "adapter_config.json").is_file()
    adapted = AutoModelForCausalLM.from_pretrained(tmp_path / "lora")  # the adapter on its base
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "lora" / "merged")
    ids = torch.tensor([[0, 5, 17, 42, 7]])
    with torch.no_grad():
        torch.testing.assert_close(adapted(ids).logits, merged(ids).logits, atol=1e-4, rtol=1e-4)
        plain = AutoModelForCausalLM.from_pretrained(base)(ids).logits
        assert (plain - merged(ids).logits).abs().max() > 1e-3  # the adapter changed the model


def test_only_response_tokens_are_supervised_and_prompt_labels_change_no_gradient(base):
    model, tokenizer = load_causal_lm(base)
    start = start_token_id(tokenizer)
    rows = TRAIN[:4]
    examples, skipped = encode_examples(rows, tokenizer, 256, start, None)
    assert skipped == 0
    for row, ex in zip(rows, examples, strict=True):
        prompt = tokenizer(completion_prompt(row["prompt"]), add_special_tokens=False)["input_ids"]
        assert not ex.supervised[: 1 + len(prompt)].any() and ex.supervised[1 + len(prompt):].all()
    head = split_head(model, tokenizer, "base", start)

    def grads(batch):
        model.zero_grad()
        loss = batch_loss_sum(head, batch, select_scored=True)
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in model.parameters()]

    batch = micro_batches(examples, [[0, 1], [2, 3]], 1, 0, "cpu")[0]
    loss, reference = grads(batch)
    # the loss is the scorer's response-only NLL (tested against plain Hugging Face elsewhere)
    from curate.models.lm_scorer import LMScorer

    scored = LMScorer(base, device="cpu").score(prompts=[completion_prompt(r["prompt"]) for r in rows],
                                               responses=[r["response"] for r in rows])
    assert loss == pytest.approx(float(scored.sum.sum()), rel=1e-4)
    # labels at prompt positions, whatever they are, are masked by the loss mask before the loss sees them
    raw = batch.targets.clone()
    prompt_positions = raw == IGNORE_INDEX
    raw[prompt_positions] = torch.randint(0, 500, (int(prompt_positions.sum()),))
    supervised = torch.zeros_like(raw, dtype=torch.bool)
    supervised[~prompt_positions] = True
    masked = type(batch)(batch.input_ids, torch.where(supervised, raw, IGNORE_INDEX), None, batch.position_ids)
    _, same = grads(masked)
    assert all(torch.equal(a, b) for a, b in zip(reference, same, strict=True))
    # ... while supervising the prompt too changes them (the test can fail)
    _, other = grads(type(batch)(batch.input_ids, raw, None, batch.position_ids))
    assert any(not torch.allclose(a, b) for a, b in zip(reference, other, strict=True))


def tiny_llama(tokenizer) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=256)).eval()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_packed_batch_has_the_loss_and_gradients_of_its_examples_one_by_one(base, arch):
    model, tokenizer = load_causal_lm(base)
    if arch == "llama":
        model = tiny_llama(tokenizer)
    start = start_token_id(tokenizer)
    short = sorted(TRAIN, key=lambda r: len(r["prompt"]) + len(r["response"]))[:6]
    examples, skipped = encode_examples(short, tokenizer, 110, start, tokenizer.eos_token_id)  # 2 fit in a row
    assert skipped == 0 and len(examples) == 6
    head = split_head(model, tokenizer, arch, start)

    def loss_and_grads(rows):
        model.zero_grad()
        total = sum(batch_loss_sum(head, b, True) for b in micro_batches(examples, rows, len(rows), 0, "cpu"))
        total.backward()
        return float(total.detach()), torch.cat([p.grad.flatten() for p in model.parameters()])

    packed_rows = [[0, 1], [2, 3], [4, 5]]
    assert all(sum(len(examples[i]) for i in row) <= 256 for row in packed_rows)
    packed, packed_grads = loss_and_grads(packed_rows)
    alone, alone_grads = loss_and_grads([[i] for i in range(6)])
    assert packed == pytest.approx(alone, rel=1e-5)
    torch.testing.assert_close(packed_grads, alone_grads, atol=1e-5, rtol=1e-4)
    # without restarting positions the examples attend to each other: the gradients differ (the test can fail)
    model.zero_grad()
    for batch in micro_batches(examples, packed_rows, len(packed_rows), 0, "cpu"):
        batch_loss_sum(head, type(batch)(batch.input_ids, batch.targets, None, None), True).backward()
    crossed = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert not torch.allclose(crossed, alone_grads, atol=1e-5, rtol=1e-4)


def test_gradient_accumulation_gives_the_same_gradients(base):
    model, tokenizer = load_causal_lm(base)
    start = start_token_id(tokenizer)
    examples, _ = encode_examples(TRAIN[:16], tokenizer, 256, start, tokenizer.eos_token_id)
    head = split_head(model, tokenizer, "base", start)
    rows = [[i] for i in range(len(examples))]
    found = {}
    for parts in (1, 4):
        model.zero_grad()
        loss, tokens, _ = backward_step(head, micro_batches(examples, rows, parts, 0, "cpu"), True, False)
        found[parts] = (loss, tokens, torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert found[1][:2] == pytest.approx(found[4][:2], rel=1e-6)
    torch.testing.assert_close(found[1][2], found[4][2], atol=1e-7, rtol=1e-5)


def test_sigkill_after_a_checkpoint_then_resume_gives_the_uninterrupted_weights(tmp_path, base):
    config = {**FAST, "model": str(base), "lr": 3e-3, "epochs": 3, "save_every": 10, "eval_every": 20}
    script = ("import json, sys, torch\n"
              "torch.set_num_threads(1)\n"
              "from curate.models.finetune import FinetuneConfig, finetune\n"
              "rows = [json.loads(l) for l in open(sys.argv[1])]\n"
              "finetune(rows, sys.argv[2], FinetuneConfig(**json.loads(sys.argv[3])))\n")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in TRAIN))
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", script, str(data), str(out), json.dumps(config)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "checkpoints" / "step-000010.pt").exists():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists() and (out / "checkpoints" / "step-000010.pt").exists()
    resumed = finetune(TRAIN, out, FinetuneConfig(**config))
    assert resumed["resumed_from_step"] >= 10
    finetune(TRAIN, tmp_path / "straight", FinetuneConfig(**config))
    a, b = weights(out), weights(tmp_path / "straight")
    # on one CPU thread the resumed run repeats the same float operations: equal to the last bit (tolerance 0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    curve = json.loads((out / "metrics.json").read_text())["heldout_curve"]
    assert curve == [] and not (out / "checkpoints").exists()  # no held-out rows given; checkpoints cleaned up


def test_bad_settings_fail_with_the_key():
    with pytest.raises(ValueError, match="give `model`"):
        FinetuneConfig()
    with pytest.raises(ValueError, match="`epochs` or `steps`, not both"):
        FinetuneConfig(model="x", epochs=1, steps=3)
    with pytest.raises(ValueError, match="max_length"):
        FinetuneConfig(model="x", max_length=2)


@pytest.mark.gpu
def test_bf16_on_cuda_lowers_heldout_loss(tmp_path, base):
    metrics = finetune(TRAIN, tmp_path / "gpu", FinetuneConfig(model=str(base), lr=3e-3, device="cuda", **FAST),
                       heldout=HELDOUT)
    assert metrics["device"].startswith("cuda") and np.isfinite(metrics["heldout_loss_final"])
    assert metrics["heldout_loss_initial"] - metrics["heldout_loss_final"] > 1.0
    lora = finetune(TRAIN, tmp_path / "gpu-lora", FinetuneConfig(model=str(base), method="lora", lr=1e-2,
                                                                 device="cuda", **FAST), heldout=HELDOUT)
    assert lora["heldout_loss_initial"] - lora["heldout_loss_final"] > 0.25

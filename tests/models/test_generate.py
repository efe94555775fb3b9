"""Greedy generation in left-padded batches gives what one prompt at a time gives."""

import torch

from curate.models.generate import greedy_generate
from curate.models.lm_train import LMTrainConfig, _new_model, train_tokenizer
from tests.lm_fixtures import read_records


def test_batched_generation_equals_one_prompt_at_a_time(tmp_path):
    texts = [r["prompt"] + "\n" + r["response"] for r in read_records("finetune_gsm8k.jsonl")[:100]]
    tokenizer = train_tokenizer(texts, 400, tmp_path / "tok")
    torch.manual_seed(0)
    model = _new_model(tokenizer, LMTrainConfig(vocab_size=400, n_layer=2, n_embd=32, n_head=2, seq_len=128))
    prompts = [tokenizer(t[: 20 + 9 * i])["input_ids"] for i, t in enumerate(texts[:6])]
    assert len({len(p) for p in prompts}) > 3  # lengths differ: the batch is padded
    batched = greedy_generate(model, prompts, max_new_tokens=12, eos=None, pad=tokenizer.eos_token_id,
                              device="cpu", batch_size=6)
    alone = [greedy_generate(model, [p], max_new_tokens=12, eos=None, pad=0, device="cpu")[0] for p in prompts]
    assert batched == alone
    assert all(len(b) == 12 for b in batched)
    # a random model's greedy continuations differ by prompt (the test would not notice a shared output)
    assert len({tuple(b) for b in batched}) > 1

"""The reward model wrapper on a tiny local sequence classifier: batches (padded, left-truncated) score what one pair
at a time scores, in the paper's `###Human: ... ###Assistant: ...` format."""

import numpy as np
import torch

from curate.models.lm_train import train_tokenizer
from curate.models.reward import RewardModel, pair_text
from tests.lm_fixtures import read_records


def tiny_reward_model(folder, texts):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tokenizer = train_tokenizer(texts, 300, folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=16, n_layer=1, n_head=2, num_labels=1,
                        pad_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    GPT2ForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_batched_rewards_equal_one_at_a_time(tmp_path):
    rows = read_records("finetune_gsm8k.jsonl")[:7]
    folder = tiny_reward_model(tmp_path / "rm", [r["prompt"] + r["response"] for r in rows])
    judge = RewardModel(str(folder), device="cpu", max_length=96, batch_size=4)
    prompts = [r["prompt"][:80] for r in rows]
    responses = [r["response"][: 20 + 15 * i] for i, r in enumerate(rows)]
    batched = judge.score(prompts, responses)
    alone = np.array([judge.score([p], [r])[0] for p, r in zip(prompts, responses, strict=True)])
    assert np.allclose(batched, alone, atol=1e-5)
    assert len(set(np.round(batched, 5))) == len(rows)  # different pairs, different rewards
    # the response is kept when a pair is too long: left truncation
    ids = judge.tokenizer(pair_text(prompts[0], responses[-1]), truncation=True, max_length=96)["input_ids"]
    assert judge.tokenizer.decode(ids).endswith(responses[-1][-20:])

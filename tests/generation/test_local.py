"""The local generator: its decoding loop against transformers' own `generate`, seeds per prompt, stop strings,
and the sampler's distribution."""

from __future__ import annotations

import numpy as np
import torch

from curate.models.generation.local import LocalGenerator
from curate.models.generation.sampling import Sampling
from tests.lm_fixtures import read_records

PROMPTS = [r["prompt"] for r in read_records("finetune_gsm8k.jsonl")[:10]]


def test_greedy_equals_transformers_generate_one_prompt_at_a_time(math_lm):
    generator = LocalGenerator(math_lm, device="cpu", batch_tokens=2048)
    prompts = [p[: 40 + 25 * i] for i, p in enumerate(PROMPTS[:6])]  # lengths differ: batches are padded
    ours = generator.generate(prompts, Sampling(temperature=0, max_new_tokens=20))
    model, tokenizer = generator.model, generator.tokenizer
    for prompt, (completion,) in zip(prompts, ours, strict=True):
        ids = torch.tensor(generator.encode([prompt], 20))  # the start token, the prompt cut to the context
        reference = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                   max_new_tokens=20, pad_token_id=generator.pad_id, eos_token_id=generator.eos_id)
        new = reference[0, ids.shape[1]:].tolist()
        new = new[: new.index(generator.eos_id)] if generator.eos_id in new else new
        assert completion.text == tokenizer.decode(new, skip_special_tokens=True)
        assert completion.tokens == len(new)
    assert len({c[0].text for c in ours}) > 1


def test_samples_depend_on_the_prompt_and_seed_not_on_the_batch(math_lm):
    generator = LocalGenerator(math_lm, device="cpu")
    sampling = Sampling(n=3, temperature=1.0, top_p=0.9, max_new_tokens=16, seed=7)
    together = generator.generate(PROMPTS, sampling)
    generator.batch_tokens = 64  # one prompt per batch
    alone = generator.generate(PROMPTS[3:5], sampling)
    assert [[c.text for c in cs] for cs in alone] == [[c.text for c in cs] for cs in together[3:5]]
    assert len({c.text for c in together[0]}) == 3  # the n samples of a prompt differ
    other_seed = generator.generate(PROMPTS[3:5], sampling.model_copy(update={"seed": 8}))
    assert [c.text for c in other_seed[0]] != [c.text for c in together[3]]
    # a sample ends at EOS (finish "stop") or after max_new_tokens (finish "length")
    assert all((c.finish == "length") == (c.tokens == 16) and c.tokens <= 16 for cs in together for c in cs)


def test_stop_strings_cut_the_completion(math_lm):
    generator = LocalGenerator(math_lm, device="cpu")
    sampled = Sampling(temperature=1.0, max_new_tokens=40, seed=2)
    free = generator.generate(PROMPTS[:4], sampled)
    # a stop string the model does write: the most common character after the first few of its completions
    written = "".join(c[0].text[3:] for c in free).replace(" ", "").replace("\n", "")
    stop = max(set(written), key=written.count)
    assert any(stop in c[0].text[3:] for c in free)
    cut = generator.generate(PROMPTS[:4], sampled.model_copy(update={"stop": (stop,)}))
    for (whole,), (short,) in zip(free, cut, strict=True):
        assert stop not in short.text
        if stop in whole.text:
            assert short.text == whole.text[: whole.text.index(stop)] and short.finish == "stop"
            assert short.tokens < 40


def test_the_sampler_draws_from_the_nucleus_with_softmax_probabilities():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    draws = 4000
    generators = [torch.Generator().manual_seed(s) for s in range(draws)]
    picked = LocalGenerator._sample(logits.expand(draws, 4), generators, Sampling(temperature=1.0))
    freq = np.bincount(picked.numpy(), minlength=4) / draws
    assert np.abs(freq - [0.5, 0.3, 0.15, 0.05]).max() < 0.03
    nucleus = LocalGenerator._sample(logits.expand(draws, 4), generators, Sampling(temperature=1.0, top_p=0.75))
    freq = np.bincount(nucleus.numpy(), minlength=4) / draws
    assert freq[2] == freq[3] == 0  # 0.5 + 0.3 already cover 0.75
    assert abs(freq[0] - 0.5 / 0.8) < 0.03

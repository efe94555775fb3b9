"""The architecture matrix, generation and chat: the ten tiny random causal LMs of tests/models/tiny_archs.py through
curate's local generator (greedy against transformers' own `generate`; samples that do not depend on the batch, with
the prompt's key/value cache shared by its samples and finished rows dropped; prompts and generations longer than
the sliding windows), the batched greedy helper, chat templates (curate renders chats with the tokenizer's
template where it has one), and the clear errors of recurrent architectures the local generator cannot run."""

from __future__ import annotations

import pytest
import torch

from curate.data.errors import CurateError
from curate.models.finetune import FinetuneConfig, finetune
from curate.models.generate import greedy_generate
from curate.models.generation.local import LocalGenerator
from curate.models.generation.sampling import Sampling
from curate.models.lm_train import load_causal_lm, start_token_id
from curate.models.sft_data import encode_examples, prompt_ids
from tests.lm_fixtures import read_records
from tests.models.tiny_archs import ARCHS, RECURRENT, WINDOW, build_models

# prompts of about 10 to 40 tokens: batches are left-padded, and most run past the sliding window (8)
PROMPTS = [r["prompt"][: 20 + 18 * i] for i, r in enumerate(read_records("finetune_gsm8k.jsonl")[:5])]
NEW = 12


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    return build_models(tmp_path_factory.mktemp("archs"), ARCHS + RECURRENT)


@pytest.fixture(scope="module")
def generators(models) -> dict:
    cache: dict[str, LocalGenerator] = {}

    def get(arch: str) -> LocalGenerator:
        if arch not in cache:
            cache[arch] = LocalGenerator(models[arch], device="cpu", batch_tokens=4096)
        return cache[arch]
    return get


def reference_greedy(generator: LocalGenerator, prompt: str) -> list[int]:
    """transformers' own greedy decoding of one prompt (no padding), cut at EOS."""
    ids = torch.tensor(generator.encode([prompt], NEW))
    out = generator.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                   max_new_tokens=NEW, pad_token_id=generator.pad_id, eos_token_id=generator.eos_id)
    new = out[0, ids.shape[1]:].tolist()
    return new[: new.index(generator.eos_id)] if generator.eos_id in new else new


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_equals_transformers_generate(generators, arch):
    generator = generators(arch)
    lengths = [len(e) for e in generator.encode(PROMPTS, NEW)]
    assert len(set(lengths)) >= 4 and sum(n > WINDOW for n in lengths) >= 4
    ours = generator.generate(PROMPTS, Sampling(temperature=0, max_new_tokens=NEW))  # one left-padded batch
    for prompt, (completion,) in zip(PROMPTS, ours, strict=True):
        new = reference_greedy(generator, prompt)
        assert completion.text == generator.tokenizer.decode(new, skip_special_tokens=True)
        assert completion.tokens == len(new)
    assert len({c.text for (c,) in ours}) > 1  # outputs differ by prompt (a shared output would go unnoticed)
    # curate's batched greedy helper (evaluation) gives what one prompt at a time gives
    encoded = generator.encode(PROMPTS, NEW)
    batched = greedy_generate(generator.model, encoded, max_new_tokens=NEW, eos=None, pad=generator.pad_id,
                              device="cpu", batch_size=len(PROMPTS))
    alone = [greedy_generate(generator.model, [p], max_new_tokens=NEW, eos=None, pad=generator.pad_id,
                             device="cpu")[0] for p in encoded]
    assert batched == alone


@pytest.mark.parametrize("arch", ARCHS)
def test_samples_do_not_depend_on_the_batch(generators, arch):
    generator = generators(arch)
    # "e" stops some samples early: finished rows leave the batch (their cache rows are dropped)
    sampling = Sampling(n=3, temperature=1.0, top_p=0.95, max_new_tokens=NEW, seed=5, stop=("e",))
    together = generator.generate(PROMPTS, sampling)
    finishes = [c.finish for cs in together for c in cs]
    assert "stop" in finishes and "length" in finishes
    generator.batch_tokens = 16  # one prompt per batch
    try:
        alone = [generator.generate([p], sampling)[0] for p in PROMPTS]
        # the first of n samples shares its seed with a single sample: the repeated cache gives what one row gives
        single = generator.generate(PROMPTS, sampling.model_copy(update={"n": 1}))
    finally:
        generator.batch_tokens = 4096
    texts = [[c.text for c in cs] for cs in together]
    assert texts == [[c.text for c in cs] for cs in alone]
    assert [t[0] for t in texts] == [cs[0].text for cs in single]
    assert any(len(set(t)) > 1 for t in texts)  # a prompt's samples differ


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
GEMMA = ("{{ bos_token }}{% for m in messages %}"
         "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
         "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
CHAT = {"messages": [{"role": "user", "content": "Tom has 3 apples and buys 4 more. How many?"},
                     {"role": "assistant", "content": "He has 3 + 4 = 7 apples.\n#### 7"}]}


@pytest.mark.parametrize(("arch", "template", "header"), [("qwen2", CHATML, "<|im_start|>assistant\n"),
                                                          ("gemma2", GEMMA, "<start_of_turn>model\n")],
                         ids=["qwen2-chatml", "gemma2-gemma"])
def test_chats_use_the_tokenizers_template(tmp_path, models, arch, template, header):
    import shutil

    folder = tmp_path / arch
    shutil.copytree(models[arch], folder)
    _, tokenizer = load_causal_lm(models[arch])
    start = start_token_id(tokenizer)
    (plain,), _ = encode_examples([CHAT], tokenizer, 256, start, tokenizer.eos_token_id)
    assert "User: " in tokenizer.decode(plain.ids.tolist())  # without a template: curate's own `Role: ` blocks
    tokenizer.chat_template = template
    tokenizer.save_pretrained(folder)
    _, tokenizer = load_causal_lm(folder)  # the template travels with the saved tokenizer
    (example,), _ = encode_examples([CHAT], tokenizer, 256, start, tokenizer.eos_token_id)
    rendered = tokenizer.apply_chat_template(CHAT["messages"], tokenize=False)
    assert tokenizer.decode(example.ids.tolist()) == rendered and "User: " not in rendered
    assert example.ids.tolist().count(start) == (1 if "bos_token" in template else 0)  # no second start token
    # the prompt a model answers from is the template's, with its generation prompt: what training put before the
    # answer, so that generation continues where the trained assistant turn goes on
    prompt = prompt_ids(CHAT, tokenizer, start)
    asked = tokenizer.apply_chat_template(CHAT["messages"][:1], tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(prompt) == asked and asked.endswith(header)
    assert example.ids.tolist()[: len(prompt)] == prompt
    # supervised: the assistant turn as the template writes it (its header, the answer, the end of turn), nothing
    # of the user's turn
    assert tokenizer.decode(example.ids[example.supervised].tolist()) == header + rendered[len(asked):]
    # fine-tuning the saved folder trains on exactly these tokens (the template is read from the folder)
    metrics = finetune([CHAT] * 4, tmp_path / "tuned", FinetuneConfig(model=str(folder), epochs=1, batch_size=4,
                                                                       max_length=256, device="cpu"))
    assert metrics["examples"] == 4 and metrics["supervised_tokens"] == 4 * example.scored


@pytest.mark.parametrize("arch", RECURRENT)
def test_recurrent_models_are_refused_by_the_local_generator_before_any_work(models, arch, monkeypatch):
    # the error comes when the generator is opened: nothing is generated
    monkeypatch.setattr(LocalGenerator, "generate", lambda *a, **k: pytest.fail("generation started"))
    with pytest.raises(CurateError, match=f"the {arch} architecture cannot run in curate's local generator"):
        LocalGenerator(models[arch], device="cpu")


def test_batched_greedy_of_a_recurrent_model_equals_one_prompt_at_a_time(models):
    """RWKV's state takes in the left padding of a batch: curate's greedy helper runs it one prompt at a time."""
    model, tokenizer = load_causal_lm(models["rwkv"])
    with torch.no_grad():  # a model whose outputs depend on the context
        for p in model.parameters():
            p.mul_(3)
    encoded = [[0, *tokenizer(p, add_special_tokens=False)["input_ids"]] for p in PROMPTS]
    batched = greedy_generate(model, encoded, max_new_tokens=8, eos=None, pad=0, device="cpu", batch_size=5)
    alone = [greedy_generate(model, [p], max_new_tokens=8, eos=None, pad=0, device="cpu")[0] for p in encoded]
    assert batched == alone and len({tuple(b) for b in batched}) > 1

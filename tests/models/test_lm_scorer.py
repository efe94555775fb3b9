"""The LM scorer against a plain Hugging Face computation: texts, prompt/response masking, batching
independence, the uniform model (PPL = V), truncation, other architectures, threads and errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from curate.data.errors import CurateError
from curate.models.lm_scorer import LMScorer, NLLScores
from curate.models.lm_train import LMTrainConfig, train_lm
from tests.lm_fixtures import TINY_LM, read_records
from tests.threads import run_in_threads

CONFIG = LMTrainConfig(**{**TINY_LM, "seq_len": 256, "steps": 15, "batch_size": 8, "warmup_steps": 3})


def records(name: str) -> list[dict]:
    return read_records(f"ingest/{name}")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    # Mixed lengths: whole documents, their first sentences, a few words.
    docs = [r["text"] for r in records("pool_sample.jsonl")][:24]
    return docs[:12] + [d.split(".")[0] for d in docs[12:20]] + [" ".join(d.split()[:3]) for d in docs[20:]]


@pytest.fixture(scope="module")
def pairs() -> tuple[list[str], list[str]]:
    # the 12 shortest pairs fit the 256-token context whole; 8 long ones are cut (their responses partly or wholly)
    rows = sorted(records("gsm8k_sample.jsonl")[:60], key=lambda r: len(r["prompt"]) + len(r["response"]))
    rows = rows[:12] + rows[-8:]
    return [r["prompt"] + "\n" for r in rows], [r["response"] for r in rows]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return train_lm([r["text"] for r in records("pool_sample.jsonl")], tmp_path_factory.mktemp("lm") / "m", CONFIG)


@pytest.fixture(scope="module")
def scorer(model_dir) -> LMScorer:
    return LMScorer(model_dir)


def plain_hf(folder: Path | str, prompts: list[str | None], responses: list[str | None],
             max_length: int, model=None) -> NLLScores:
    """Reference: one padded batch, full logits, shift, per-token cross_entropy, masked (prompts masked)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = model or AutoModelForCausalLM.from_pretrained(folder).eval()
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    rows, first = [], []
    for prompt, response in zip(prompts, responses, strict=True):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
        r = tokenizer(response, add_special_tokens=False)["input_ids"] if response else []
        rows.append(([bos, *p, *r] if r else [bos])[:max_length])
        first.append(1 + len(p))
    longest = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), longest, dtype=torch.long)
    attention = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        attention[i, : len(r)] = 1
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention).logits.float()
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none").double()
    positions = torch.arange(1, longest)[None, :]
    mask = (attention[:, 1:] == 1) & (positions >= torch.tensor(first)[:, None])
    total = (nll * mask).sum(1).numpy()
    count = mask.sum(1).numpy()
    with np.errstate(invalid="ignore"):
        return NLLScores(mean=np.where(count > 0, total / np.maximum(count, 1), np.nan), sum=total, count=count)


def assert_same(a: NLLScores, b: NLLScores, tol: float = 1e-4) -> None:
    np.testing.assert_array_equal(a.count, b.count)
    np.testing.assert_allclose(a.mean, b.mean, atol=tol, rtol=0, equal_nan=True)
    assert np.all(np.abs(a.sum - b.sum) <= tol * np.maximum(1, a.count))


def test_texts_match_plain_hugging_face(scorer, model_dir, texts):
    got = scorer.score(texts)
    assert scorer.head_mode == "chunked" and scorer.max_length == CONFIG.seq_len  # capped at the context
    assert got.mean.dtype == np.float64 and got.count.dtype == np.int64
    assert_same(got, plain_hf(model_dir, [None] * len(texts), texts, CONFIG.seq_len))
    # Every token is scored, the first one too (given the BOS/EOS put in front).
    tokenizer = scorer.tokenizer
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert got.count.tolist() == [min(n, CONFIG.seq_len - 1) for n in lengths]


def test_prompt_tokens_are_masked(scorer, model_dir, pairs):
    prompts, responses = pairs
    got = scorer.score(prompts=prompts, responses=responses)
    assert_same(got, plain_hf(model_dir, prompts, responses, CONFIG.seq_len))
    tokenizer = scorer.tokenizer
    p = [len(tokenizer(x, add_special_tokens=False)["input_ids"]) for x in prompts]
    r = [len(tokenizer(x, add_special_tokens=False)["input_ids"]) for x in responses]
    expected = [max(0, min(1 + a + b, CONFIG.seq_len) - 1 - a) for a, b in zip(p, r, strict=True)]
    assert got.count.tolist() == expected
    fits = [i for i in range(len(p)) if 1 + p[i] + r[i] <= CONFIG.seq_len]
    assert len(fits) >= 5 and all(got.count[i] == r[i] for i in fits)  # exactly the response tokens
    # The response given its prompt is not the response alone.
    alone = scorer.score(responses)
    assert not np.allclose(alone.mean[fits], got.mean[fits])


def test_results_do_not_depend_on_budget_or_order(model_dir, texts, pairs):
    scorers = [LMScorer(model_dir, token_budget=b) for b in (1, 200, 100_000)]
    reference = scorers[1].score(texts)
    for s in scorers:
        assert_same(s.score(texts), reference, 1e-5)
    order = np.random.default_rng(0).permutation(len(texts))
    shuffled = scorers[2].score([texts[i] for i in order])
    inverse = np.argsort(order)
    assert_same(NLLScores(shuffled.mean[inverse], shuffled.sum[inverse], shuffled.count[inverse]), reference, 1e-5)
    prompts, responses = pairs
    assert_same(scorers[0].score(prompts=prompts, responses=responses),
                scorers[2].score(prompts=prompts, responses=responses), 1e-5)


def test_uniform_model_has_perplexity_equal_to_the_vocabulary(tmp_path, model_dir, texts):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Zero LM head: every logit is 0, so p = 1/V for every token and NLL = log V exactly (docs/methods.md §6.5).
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(tmp_path)
    got = LMScorer(tmp_path).score(texts)
    vocab = model.config.vocab_size
    np.testing.assert_allclose(np.exp(got.mean), vocab, rtol=1e-5)
    np.testing.assert_allclose(got.sum, got.count * math.log(vocab), rtol=1e-5)


def test_empty_and_missing_rows_get_no_score(scorer):
    empty = scorer.score([])
    assert len(empty) == 0 and empty.mean.shape == (0,)
    got = scorer.score(["", None, "word"])
    assert got.count.tolist()[:2] == [0, 0] and np.isnan(got.mean[:2]).all() and got.sum[:2].tolist() == [0, 0]
    assert got.count[2] >= 1 and np.isfinite(got.mean[2])
    pairs = scorer.score(prompts=["Q?", None, "Q?"], responses=[None, "An answer.", ""])
    assert pairs.count[0] == 0 and pairs.count[1] > 0 and pairs.count[2] == 0 and np.isnan(pairs.mean[[0, 2]]).all()


def test_rows_are_cut_from_the_right(model_dir, texts):
    short = LMScorer(model_dir, max_length=16).score(texts)
    assert short.count.max() == 15
    assert_same(short, plain_hf(model_dir, [None] * len(texts), texts, 16))
    # A prompt that fills the window leaves nothing of the response to score.
    long_prompt = LMScorer(model_dir, max_length=16).score(prompts=[texts[0]], responses=["yes"])
    assert long_prompt.count[0] == 0 and np.isnan(long_prompt.mean[0])


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_other_architectures_match_their_own_logits(tmp_path, model_dir, texts, pairs, arch):
    """Llama (final RMSNorm in the body: the chunked path) and Gemma 2 (soft-capped logits: the model's own)."""
    from transformers import AutoTokenizer, Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sizes = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                 bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**sizes))
    else:
        model = Gemma2ForCausalLM(Gemma2Config(**sizes, head_dim=16, final_logit_softcapping=5.0))
    with torch.no_grad():  # larger logits than the default init, so soft-capping matters
        model.get_output_embeddings().weight.mul_(20)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    scorer = LMScorer(tmp_path)
    assert scorer.head_mode == ("chunked" if arch == "llama" else "logits")
    reference = load_eval(tmp_path)
    assert_same(scorer.score(texts), plain_hf(tmp_path, [None] * len(texts), texts, 128, reference))
    prompts, responses = pairs
    assert_same(scorer.score(prompts=prompts, responses=responses),
                plain_hf(tmp_path, prompts, responses, 128, reference))


def load_eval(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).eval()


def test_threads_share_one_scorer(scorer, texts):
    expected = scorer.score(texts)
    results = run_in_threads(lambda i: scorer.score(texts[i:] + texts[:i]), range(4))  # re-raises errors
    for i, got in enumerate(results):
        back = np.roll(np.arange(len(texts)), i)
        assert_same(NLLScores(got.mean[back], got.sum[back], got.count[back]), expected, 1e-6)


def test_identity_follows_the_folder_content(tmp_path, scorer, model_dir):
    import shutil

    first = scorer.identity()
    assert first["max_length"] == CONFIG.seq_len and first["compute"] == "float32" and "folder_sha256" in first
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    assert LMScorer(copy).identity() == first  # the path does not count
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(copy)
    with torch.no_grad():
        model.get_output_embeddings().weight.add_(0.01)
    model.save_pretrained(copy)
    assert LMScorer(copy).identity()["folder_sha256"] != first["folder_sha256"]


def test_errors_name_the_model_and_the_problem(tmp_path, scorer):
    with pytest.raises(CurateError, match="no model folder at"):
        LMScorer(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CurateError, match="could not load the language model from the folder"):
        LMScorer(tmp_path / "empty")
    with pytest.raises(CurateError, match="dtype"):
        LMScorer(tmp_path / "missing", dtype="int8")
    with pytest.raises(CurateError, match="not both"):
        scorer.score(["a"], prompts=["b"], responses=["c"])
    with pytest.raises(CurateError, match="2 prompts but 1 responses"):
        scorer.score(prompts=["a", "b"], responses=["c"])
    with pytest.raises(CurateError, match="both prompts and responses"):
        scorer.score(prompts=["a"])

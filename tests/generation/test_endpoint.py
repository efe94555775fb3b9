"""The OpenAI-compatible generator against a real HTTP server on 127.0.0.1 that serves a tiny local model."""

from __future__ import annotations

import pytest

from curate.data.errors import CurateError
from curate.models.generation import (
    EndpointGenerator,
    EndpointSpec,
    ResponseStore,
    Sampling,
    generate_stored,
    prompt_seed,
)
from curate.models.generation.local import LocalGenerator
from tests.generation.openai_server import OpenAIServer
from tests.lm_fixtures import read_records

PROMPTS = [r["prompt"] for r in read_records("finetune_gsm8k.jsonl")[:12]]
GREEDY = Sampling(temperature=0, max_new_tokens=12)


@pytest.mark.parametrize("chat", [False, True])
def test_both_routes_serve_what_the_local_model_generates(math_lm, chat):
    sampled = Sampling(temperature=1.0, max_new_tokens=12, seed=5)
    with OpenAIServer(math_lm) as server:
        remote = EndpointGenerator(EndpointSpec(base_url=server.base_url, model="tiny", chat=chat, concurrency=2))
        answers = remote.generate(PROMPTS[:4], sampled, keys=[f"k{i}" for i in range(4)])
        assert {r["route"] for r in server.requests} == {"/v1/chat/completions" if chat else "/v1/completions"}
    # the server samples with the request's seed, which is the prompt's own seed
    local = LocalGenerator(math_lm, device="cpu")
    for i, answer in enumerate(answers):
        seed = prompt_seed(sampled.seed, f"k{i}")
        expected = local.generate([PROMPTS[i]], sampled.model_copy(update={"seed": seed}), keys=["request"])
        assert answer[0].text == expected[0][0].text
    assert len({a[0].text for a in answers}) > 1


def test_n_samples_come_back_in_one_request_each(math_lm):
    with OpenAIServer(math_lm) as server:
        remote = EndpointGenerator(EndpointSpec(base_url=server.base_url, model="tiny"))
        answers = remote.generate(PROMPTS[:3], Sampling(n=4, temperature=1.0, max_new_tokens=8, seed=3))
        assert len(server.requests) == 3 and {r["n"] for r in server.requests} == {4}
    assert [len(a) for a in answers] == [4, 4, 4]
    assert len({c.text for c in answers[0]}) > 1


def test_a_failed_first_request_is_retried(math_lm):
    with OpenAIServer(math_lm, fail_first=1) as server:
        remote = EndpointGenerator(EndpointSpec(base_url=server.base_url, model="tiny", backoff=0.05, concurrency=1))
        answers = remote.generate(PROMPTS[:2], GREEDY)
        assert len(server.requests) == 3  # the 500, its retry, the second prompt
    assert remote.retries == 1 and all(a[0].text for a in answers)


def test_a_refused_request_is_not_retried_and_names_the_status(math_lm):
    with OpenAIServer(math_lm, api_key="right-key") as server:
        remote = EndpointGenerator(EndpointSpec(base_url=server.base_url, model="tiny", backoff=0.05))
        with pytest.raises(CurateError, match="HTTP 401"):
            remote.generate(PROMPTS[:1], GREEDY)
        assert server.requests == []  # refused before generating, once


def test_the_key_comes_from_the_named_variable_and_is_never_stored(math_lm, monkeypatch, tmp_path):
    monkeypatch.setenv("TINY_SERVER_KEY", "planted-secret-4242")
    spec = EndpointSpec(base_url="http://127.0.0.1:9/v1", model="tiny", api_key_env="TINY_MISSING_KEY")
    with pytest.raises(CurateError, match="TINY_MISSING_KEY"):
        EndpointGenerator(spec)
    with OpenAIServer(math_lm, api_key="planted-secret-4242") as server:
        remote = EndpointGenerator(spec.model_copy(update={"base_url": server.base_url,
                                                           "api_key_env": "TINY_SERVER_KEY"}))
        store = ResponseStore.for_generation(tmp_path, "probe", remote, GREEDY)
        generate_stored(remote, store, ["a", "b"], PROMPTS[:2], GREEDY)
    assert "planted-secret" not in str(remote.identity())
    assert all("planted-secret" not in p.read_text() for p in tmp_path.rglob("*") if p.is_file())


def test_concurrency_is_bounded(math_lm):
    with OpenAIServer(math_lm, delay=0.1) as server:
        remote = EndpointGenerator(EndpointSpec(base_url=server.base_url, model="tiny", concurrency=3))
        remote.generate(PROMPTS, Sampling(temperature=0, max_new_tokens=2))
        assert 2 <= server.peak_in_flight <= 3

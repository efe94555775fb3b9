"""Sampling from an OpenAI-compatible HTTP server (vLLM, llama.cpp server, TGI, Ollama) through the `openai` client.

- `base_url` and `model` come from the config; the API key from the environment variable the config names
  (`api_key_env`). The key itself is never stored: not in the run, not in `identity()`, not in messages.
- `/v1/completions` by default (the prompt as written); `chat: true` sends it as one user message to
  `/v1/chat/completions` (the server applies the model's chat template).
- Prompts run `concurrency` requests at a time. A request that fails for a reason that may pass (connection
  refused or reset, timeout, 408/409/429, 5xx) is retried up to `max_retries` times, waiting `backoff` x 2^attempt
  seconds (with jitter); any other answer (400, 401, 404, ...) stops the run with the server's message.
- Each prompt's `n` samples are one request with the prompt's own `seed` (servers that honour seeds repeat them).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from curate.data.errors import CurateError
from curate.models.generation.sampling import Completion, OnResult, Sampling, prompt_seed

log = logging.getLogger("curate")
T = TypeVar("T")
RETRY_STATUS = frozenset({408, 409, 429})


class EndpointSpec(BaseModel):
    """Where an OpenAI-compatible server is and how to talk to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str
    model: str
    api_key_env: str | None = None  # the environment variable holding the key (never the key itself)
    chat: bool = False
    timeout: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0)
    backoff: float = Field(1.0, ge=0)
    concurrency: int = Field(8, ge=1)


class EndpointGenerator:
    def __init__(self, spec: EndpointSpec):
        import openai

        self.spec = spec
        self.name = f"{spec.model} at {spec.base_url}"
        key = "none"  # servers without auth still need the client to send some key
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env, "")
            if not key:
                raise CurateError(f"endpoint {spec.base_url!r}: api_key_env names {spec.api_key_env!r}, but that "
                                  "environment variable is not set")
        self.client = openai.OpenAI(base_url=spec.base_url, api_key=key, timeout=spec.timeout, max_retries=0)
        self.retries = 0  # requests retried so far (for the report)

    def identity(self) -> dict[str, Any]:
        return {"kind": "endpoint", "base_url": self.spec.base_url, "model": self.spec.model, "chat": self.spec.chat}

    def _with_retries(self, request: Callable[[], T]) -> T:
        import openai

        for attempt in range(self.spec.max_retries + 1):
            try:
                return request()
            except (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError,
                    openai.RateLimitError) as error:
                failure = error
            except openai.APIStatusError as error:
                if error.status_code not in RETRY_STATUS:
                    raise CurateError(f"endpoint {self.spec.base_url!r} (model {self.spec.model!r}) refused a "
                                      f"request: HTTP {error.status_code}: {error.message}") from error
                failure = error
            if attempt == self.spec.max_retries:
                break
            self.retries += 1
            wait = self.spec.backoff * 2 ** attempt * (1 + random.random())
            log.warning("endpoint %s: %s; retry %d/%d in %.1fs", self.spec.base_url, type(failure).__name__,
                        attempt + 1, self.spec.max_retries, wait)
            time.sleep(wait)
        raise CurateError(f"endpoint {self.spec.base_url!r} (model {self.spec.model!r}) failed after "
                          f"{self.spec.max_retries} retries: {type(failure).__name__}: {failure}") from failure

    def _one(self, prompt: str, sampling: Sampling, seed: int) -> list[Completion]:
        common = {"model": self.spec.model, "n": sampling.n, "temperature": sampling.temperature,
                  "top_p": sampling.top_p, "max_tokens": sampling.max_new_tokens, "seed": seed,
                  "stop": list(sampling.stop) or None}
        if self.spec.chat:
            answer = self._with_retries(lambda: self.client.chat.completions.create(
                messages=[{"role": "user", "content": prompt}], **common))
            texts = [(c.index, c.message.content or "", c.finish_reason) for c in answer.choices]
        else:
            answer = self._with_retries(lambda: self.client.completions.create(prompt=prompt, **common))
            texts = [(c.index, c.text or "", c.finish_reason) for c in answer.choices]
        if len(texts) != sampling.n:
            raise CurateError(f"endpoint {self.spec.base_url!r} answered {len(texts)} choices for n={sampling.n}")
        return [Completion(text, None, finish or "stop") for _, text, finish in sorted(texts)]

    def generate(self, prompts: Sequence[str], sampling: Sampling, keys: Sequence[str] | None = None,
                 on_result: OnResult | None = None) -> list[list[Completion]]:
        keys = list(keys) if keys is not None else list(prompts)
        out: list[list[Completion]] = [[] for _ in prompts]
        with ThreadPoolExecutor(self.spec.concurrency, thread_name_prefix="curate-http") as pool:
            futures = {pool.submit(self._one, p, sampling, prompt_seed(sampling.seed, k)): i
                       for i, (p, k) in enumerate(zip(prompts, keys, strict=True))}
            try:
                for future in as_completed(futures):
                    i = futures[future]
                    out[i] = future.result()
                    if on_result is not None:
                        on_result(i, out[i])
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return out

    def option_logprobs(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        """From the completions route's `logprobs` (the top 20 next tokens); an option not among them gets -inf."""
        def one(prompt: str) -> list[float]:
            answer = self._with_retries(lambda: self.client.completions.create(
                model=self.spec.model, prompt=prompt, max_tokens=1, temperature=0, logprobs=20))
            top = (answer.choices[0].logprobs.top_logprobs or [{}])[0] if answer.choices[0].logprobs else {}
            found = {}
            for token, value in top.items():
                found.setdefault(token.strip(), value)
            return [float(found.get(o, float("-inf"))) for o in options]

        with ThreadPoolExecutor(self.spec.concurrency, thread_name_prefix="curate-http") as pool:
            return list(pool.map(one, prompts))

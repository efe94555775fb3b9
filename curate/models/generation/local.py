"""Sampling from a local Hugging Face causal LM, batched by length, with the prompt's cache shared by its samples.

- Prompts are tokenised with the model's start token in front (as `LMScorer` scores them), sorted by length and
  packed into left-padded batches of at most `batch_tokens` tokens (rows x (longest prompt + new tokens)), so
  short prompts do not wait on long ones and padding stays small.
- Each prompt runs its forward pass once; the key/value cache is then repeated for its `n` samples (prefix
  sharing), and rows that finish (EOS, a stop string, `max_new_tokens`) leave the batch at once.
- Sampling is temperature + nucleus (top-p), drawn by the Gumbel-max trick with noise from each sample's own
  seeded generator, so a prompt's samples do not depend on its batch. Temperature 0 is greedy.
- A prompt longer than the model's context minus `max_new_tokens` keeps its end (the question is usually last).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curate.models.architecture import require_kv_cache
from curate.models.embedder import resolve_device
from curate.models.generation.sampling import Completion, OnResult, Sampling, cut_at_stop, prompt_seed
from curate.models.lm_train import load_causal_lm, model_context, start_token_id
from curate.models.locate import named_model_identity


class LocalGenerator:
    def __init__(self, model: str | Path, device: str = "auto", batch_tokens: int = 16384, dtype: str = "auto"):
        import torch

        self.name = str(model)
        self.device = resolve_device(device)
        torch_dtype = getattr(torch, dtype) if dtype != "auto" else "auto" if self.device != "cpu" else None
        model_, self.tokenizer = load_causal_lm(self.name, "generator model", torch_dtype)
        require_kv_cache(model_, self.name, "generator model")  # before any generation: a clear error, not a crash
        self.model = model_.to(self.device).eval()
        self.tokenizer.model_max_length = 1 << 60
        self.context = model_context(self.model)
        self.start_id = start_token_id(self.tokenizer)
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = next((i for i in (self.tokenizer.pad_token_id, self.eos_id) if i is not None), 0)
        self.batch_tokens = batch_tokens
        self._identity: dict[str, Any] | None = None
        self._lock = threading.Lock()  # one forward at a time per model; callers may share a generator
        # transformers 5 renamed `past_key_values` to `cache`; `logits_to_keep` skips the vocabulary projection of
        # every prompt position but the last
        forward = inspect.signature(self.model.forward).parameters
        self._cache_key = "cache" if "cache" in forward else "past_key_values"
        self._last_only = {"logits_to_keep": 1} if "logits_to_keep" in forward else {}

    def identity(self) -> dict[str, Any]:
        if self._identity is None:  # hashes the model folder: once per generator, not per store opened
            self._identity = {"kind": "local", **named_model_identity(self.name)}
        return self._identity

    # ------------------------------------------------------------- encoding

    def encode(self, prompts: Sequence[str], max_new_tokens: int) -> list[list[int]]:
        with self._lock:
            ids = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        start = [self.start_id] if self.start_id is not None else []
        room = (self.context - max_new_tokens - len(start)) if self.context else None
        if room is not None and room < 1:
            from curate.data.errors import CurateError

            raise CurateError(f"generator {self.name!r}: max_new_tokens {max_new_tokens} leaves no room for a prompt "
                              f"in the model's context of {self.context} tokens")
        return [[*start, *(row[-room:] if room is not None else row)] for row in ids]

    def _batches(self, lengths: np.ndarray, n: int, max_new: int) -> list[np.ndarray]:
        order = np.argsort(-lengths, kind="stable")
        batches, i = [], 0
        while i < len(order):
            rows = max(1, self.batch_tokens // (n * (int(lengths[order[i]]) + max_new)))
            batches.append(order[i: i + rows])
            i += rows
        return batches

    # ------------------------------------------------------------- generation

    def generate(self, prompts: Sequence[str], sampling: Sampling, keys: Sequence[str] | None = None,
                 on_result: OnResult | None = None) -> list[list[Completion]]:
        keys = list(keys) if keys is not None else list(prompts)
        encoded = self.encode(prompts, sampling.max_new_tokens)
        lengths = np.array([len(e) for e in encoded], dtype=np.int64)
        out: list[list[Completion]] = [[] for _ in prompts]
        for batch in self._batches(lengths, sampling.n, sampling.max_new_tokens):
            seeds = [prompt_seed(sampling.seed, f"{keys[i]}\0{j}") for i in batch for j in range(sampling.n)]
            with self._lock:
                results = self._decode([encoded[i] for i in batch], sampling, seeds)
            for r, i in enumerate(batch):
                out[i] = results[r * sampling.n: (r + 1) * sampling.n]
                if on_result is not None:
                    on_result(int(i), out[i])
        return out

    def _decode(self, prompts: list[list[int]], sampling: Sampling, seeds: list[int]) -> list[Completion]:
        """One batch: prefill the prompts once, repeat each row's cache `n` times, then decode token by token."""
        import torch

        n, device = sampling.n, self.device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, width - len(p):] = torch.tensor(p)
            mask[r, width - len(p):] = 1
        ids, mask = ids.to(device), mask.to(device)
        generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        tokens: list[list[int]] = [[] for _ in seeds]
        finish = ["length"] * len(seeds)
        tail = max((len(s) for s in sampling.stop), default=0) * 4 + 4  # enough tokens to hold any stop string
        with torch.inference_mode():
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                             **self._last_only)
            cache, logits = out[self._cache_key], out.logits[:, -1].float()
            if n > 1:
                cache.batch_repeat_interleave(n)
                logits, mask = logits.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
            active = list(range(len(seeds)))  # sample rows still in the batch, in batch order
            next_position = mask.sum(-1, keepdim=True)
            for step in range(sampling.max_new_tokens):
                chosen = self._sample(logits, [generators[r] for r in active], sampling)
                keep = []
                for k, r in enumerate(active):
                    token = int(chosen[k])
                    if token == self.eos_id:
                        finish[r] = "stop"
                        continue
                    tokens[r].append(token)
                    if sampling.stop and cut_at_stop(self.tokenizer.decode(tokens[r][-tail:]), sampling.stop)[1]:
                        finish[r] = "stop"
                        continue
                    keep.append(k)
                if not keep or step == sampling.max_new_tokens - 1:
                    break
                if len(keep) < len(active):
                    index = torch.tensor(keep, device=device)
                    cache.batch_select_indices(index)
                    mask, next_position, chosen = mask[index], next_position[index], chosen[index]
                    active = [active[k] for k in keep]
                mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
                out = self.model(input_ids=chosen[:, None], attention_mask=mask, position_ids=next_position,
                                 use_cache=True, **{self._cache_key: cache})
                cache, logits = out[self._cache_key], out.logits[:, -1].float()
                next_position = next_position + 1
        results = []
        for r in range(len(seeds)):
            text = self.tokenizer.decode(tokens[r], skip_special_tokens=True)
            text, stopped = cut_at_stop(text, sampling.stop)
            results.append(Completion(text, len(tokens[r]), "stop" if stopped else finish[r]))
        return results

    @staticmethod
    def _sample(logits: Any, generators: list[Any], sampling: Sampling) -> Any:
        """One token per row: argmax at temperature 0, else Gumbel-max over the top-p nucleus."""
        import torch

        if sampling.temperature == 0:
            return logits.argmax(-1)
        scaled = logits / sampling.temperature
        if sampling.top_p < 1:
            sorted_logits, order = scaled.sort(-1, descending=True)
            cumulative = sorted_logits.softmax(-1).cumsum(-1)
            outside = cumulative - sorted_logits.softmax(-1) >= sampling.top_p  # keeps the first token always
            scaled = scaled.scatter(-1, order, sorted_logits.masked_fill(outside, float("-inf")))
        noise = torch.stack([torch.rand(scaled.shape[-1], generator=g, device=scaled.device) for g in generators])
        gumbel = -torch.log(-torch.log(noise.clamp_min(1e-20)))
        return (scaled + gumbel).argmax(-1)

    def option_logprobs(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        """Log-probabilities of each option's first token as the next token after each prompt."""
        import torch

        option_ids = [self.tokenizer(o, add_special_tokens=False)["input_ids"][0] for o in options]
        encoded = self.encode(prompts, 1)
        lengths = np.array([len(e) for e in encoded], dtype=np.int64)
        out: list[list[float]] = [[] for _ in prompts]
        for batch in self._batches(lengths, 1, 0):
            width = int(lengths[batch].max())
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, i in enumerate(batch):
                ids[r, width - lengths[i]:] = torch.tensor(encoded[i])
                mask[r, width - lengths[i]:] = 1
            with self._lock, torch.inference_mode():
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                    position_ids=positions.to(self.device), **self._last_only).logits[:, -1].float()
                logp = logits.log_softmax(-1)[:, option_ids].cpu().numpy()
            for r, i in enumerate(batch):
                out[i] = logp[r].astype(float).tolist()
        return out

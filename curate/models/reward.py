"""A reward model (a sequence classifier with one output) scoring prompt/response pairs, as iterative kMQ uses it.

Pairs are formatted `###Human: {prompt} ###Assistant: {response}` (the format of the paper's default reward model,
`weqweasdas/hh_rlhf_rm_open_llama_3b`), cut to `max_length` tokens from the left so the response is kept, and
scored in batches; the reward is the classifier's first logit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from curate.data.errors import CurateError
from curate.models.embedder import resolve_device


def pair_text(prompt: str, response: str) -> str:
    return f"###Human: {prompt} ###Assistant: {response}"


class RewardModel:
    def __init__(self, model: str, device: str = "auto", max_length: int = 1024, batch_size: int = 16):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from curate.models.lm_train import model_context
        from curate.models.locate import load_named, model_source

        where = model_source(model, "reward model")
        self.device = resolve_device(device)
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32

        def load() -> tuple:
            return (AutoTokenizer.from_pretrained(where.source),
                    AutoModelForSequenceClassification.from_pretrained(where.source, dtype=dtype))

        self.tokenizer, self.model = load_named(load, "reward model", where.what, where.hint)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.tokenizer.pad_token_id is None:
            raise CurateError(f"reward model {model!r}: its tokenizer has no pad or end token to pad batches with")
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.truncation_side = "left"
        self.model.to(self.device).eval()
        context = model_context(self.model)
        self.max_length = min(max_length, context) if context else max_length
        self.batch_size = batch_size

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        import torch

        texts = [pair_text(p, r) for p, r in zip(prompts, responses, strict=True)]
        out = np.zeros(len(texts))
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(texts[i: i + self.batch_size], return_tensors="pt", padding=True,
                                       truncation=True, max_length=self.max_length).to(self.device)
                out[i: i + self.batch_size] = self.model(**batch).logits[:, 0].float().cpu().numpy()
        return out

"""Natural-language inference with a sequence-classification model (CLEAR's BSDetector agreement, §2.2): the
probability that a hypothesis contradicts a premise."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from curate.data.errors import CurateError
from curate.models.embedder import resolve_device
from curate.models.locate import load_named, model_source


class NLIScorer:
    def __init__(self, model: str, device: str = "auto", batch_size: int = 32, max_length: int = 512):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        where = model_source(model, "NLI model")
        self.tokenizer, self.model = load_named(
            lambda: (AutoTokenizer.from_pretrained(where.source),
                     AutoModelForSequenceClassification.from_pretrained(where.source)),
            "NLI model", where.what, where.hint)
        self.device = resolve_device(device)
        self.model = self.model.to(self.device).eval()
        labels = {str(v).lower(): int(k) for k, v in self.model.config.id2label.items()}
        if "contradiction" not in labels:
            raise CurateError(f"NLI model {model!r} has no 'contradiction' label (its labels: {sorted(labels)})")
        self.contradiction_index = labels["contradiction"]
        self.batch_size, self.max_length = batch_size, max_length
        self._lock = threading.Lock()

    def contradiction(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        for i in range(0, len(premises), self.batch_size):
            encoded = self.tokenizer(list(premises[i: i + self.batch_size]), list(hypotheses[i: i + self.batch_size]),
                                     truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
            with self._lock, torch.inference_mode():
                logits = self.model(**encoded.to(self.device)).logits.float()
            out.append(logits.softmax(-1)[:, self.contradiction_index].cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

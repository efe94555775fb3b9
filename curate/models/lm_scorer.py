"""Per-row negative log-likelihood under a causal LM (docs/methods.md §0.1-0.2): mean, sum and count of the
NLL over each row's scored positions.

What is scored:
- `score(texts)`: every token of the text, each given the ones before it. The tokenizer's BOS token is put
  in front (EOS where the tokenizer has no BOS, as GPT-2 style tokenizers, ours included), so the first
  real token is scored too. A tokenizer with neither scores from the second token on.
- `score(prompts=..., responses=...)`: prompt and response are tokenised separately and their ids joined
  (`BOS + prompt + response`, no separator added: put one at the end of the prompt if the model expects
  it); only the response tokens are scored, given the prompt.
- Rows are cut to `max_length` tokens (BOS included), keeping the start: tokens past it are dropped from
  the right and not scored. `max_length` is lowered to the model's context where that is shorter. A
  prompt that fills the whole window leaves its response unscored (count 0).
- Empty or missing texts (or responses) get count 0, sum 0 and a NaN mean.

How: rows are sorted by length and packed into right-padded batches of at most `token_budget` tokens
(rows x longest row), so results come back in input order and do not depend on the budget or the order
(up to float rounding). The decoder body's last hidden states (which already include the final norm for
GPT-2/Llama-style models) are gathered at the positions that predict a scored token and passed with the
LM head's weight to `curate.kernels.chunked_ce.token_nll`, so [batch, seq, vocab] logits are never formed.
Where the logits are not simply `lm_head(last hidden state)` (logit soft-capping as in Gemma 2/3, scaled
logits as in Cohere/Granite, or any model whose head fails a check at load time), the model's own logits
are used instead (`head_mode == "logits"`), in the model's dtype, log-softmax in float32.

On CUDA with `dtype="auto"`, a float32 checkpoint runs under bf16 autocast (the loss kernel works in float32); a
half-precision checkpoint runs in its own dtype.
One scorer may be shared by the threads of a process: tokenisation and forward passes take locks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.data.errors import CurateError
from curate.models.embedder import resolve_device
from curate.models.lm_train import load_causal_lm, model_context, start_token_id
from curate.models.locate import named_model_identity

log = logging.getLogger("curate")

DTYPES = ("auto", "float32", "bfloat16", "float16")
VOCAB_TILE = 4096  # vocabulary rows per tile of the chunked loss
# Scored positions per loss call: bounds the float32 tile (positions x VOCAB_TILE) at 64 MiB on CPU; the
# CUDA kernel forms no tile in memory, so it takes a whole batch at once.
CPU_POSITIONS = 4096


@dataclass
class NLLScores:
    """Per-row NLL over the scored tokens, in input order."""

    mean: np.ndarray  # float64: mean NLL over the scored tokens (NaN when none)
    sum: np.ndarray  # float64: summed NLL
    count: np.ndarray  # int64: scored tokens

    def __len__(self) -> int:
        return len(self.count)


class LMScorer:
    """A causal LM that scores rows by NLL (see the module docstring for what is scored and how)."""

    def __init__(self, model: str | Path, device: str = "auto", max_length: int = 1024,
                 token_budget: int = 16384, dtype: str = "auto"):
        import torch

        if dtype not in DTYPES:
            raise CurateError(f"LM scorer dtype {dtype!r} is not one of {list(DTYPES)}")
        if max_length < 2 or token_budget < 1:
            raise CurateError(f"LM scorer: max_length must be >= 2 and token_budget >= 1 "
                              f"(got {max_length}, {token_budget})")
        self.name = str(model)
        self.device = resolve_device(device)
        # CPU: float32 (bf16 matmuls there are slow and lose precision); CUDA "auto": the checkpoint's dtype.
        torch_dtype = getattr(torch, dtype) if dtype != "auto" else "auto" if self.device != "cpu" else None
        model_, self.tokenizer = load_causal_lm(self.name, "language model", torch_dtype)
        self.model = model_.to(self.device).eval()
        context = model_context(self.model)
        self.max_length = min(max_length, context) if context else max_length
        self.token_budget = token_budget
        # Rows are cut to max_length here; the tokenizer's own limit would only warn about long texts.
        self.tokenizer.model_max_length = 1 << 60
        self.start_id: int | None = start_token_id(self.tokenizer)
        if self.start_id is None:
            log.warning("language model %r: its tokenizer has no BOS or EOS token, so the first token of each "
                        "row cannot be scored", self.name)
        self.pad_id = next((i for i in (self.tokenizer.pad_token_id, self.start_id) if i is not None), 0)
        weights = next(self.model.parameters()).dtype
        self.autocast = self.device.startswith("cuda") and dtype == "auto" and weights == torch.float32
        self.compute = "bfloat16-autocast" if self.autocast else str(weights).removeprefix("torch.")
        self._tokenizer_lock = threading.Lock()  # HF fast tokenizers may reconfigure themselves per call
        self._forward_lock = threading.Lock()
        self.head_mode, self._decoder, self._weight, self._bias = self._pick_head()

    # ------------------------------------------------------------- setup

    def _pick_head(self) -> tuple[str, Any, Any, Any]:
        """("chunked", decoder, weight, bias) when logits == hidden @ W.T + b (checked), else ("logits", ...)."""
        import torch

        from curate.models.lm_head import split_head

        head = split_head(self.model, self.tokenizer, self.name, self.start_id, self.max_length)
        if head.mode == "logits":
            return "logits", None, None, None
        weight, bias = head.weight, head.bias
        if self.autocast:
            weight = weight.to(torch.bfloat16)  # the head matmul in bf16 too; logsumexp stays float32
            bias = None if bias is None else bias.to(torch.bfloat16)
        return "chunked", head.decoder, weight, bias

    def identity(self) -> dict[str, Any]:
        """What identifies this scorer's numbers: the model (a local folder's content hash, or hub id +
        commit in the local cache), plus the truncation length and the compute dtype."""
        return {**named_model_identity(self.name), "max_length": self.max_length, "compute": self.compute}

    # ------------------------------------------------------------- scoring

    def _encode(self, texts: Sequence[str | None]) -> list[list[int]]:
        present = [i for i, t in enumerate(texts) if t]
        out: list[list[int]] = [[] for _ in texts]
        if present:
            with self._tokenizer_lock:
                ids = self.tokenizer([texts[i] for i in present], add_special_tokens=False)["input_ids"]
            for i, row in zip(present, ids, strict=True):
                out[i] = list(row)
        return out

    def _rows(self, texts: Sequence[str | None] | None, prompts: Sequence[str | None] | None,
              responses: Sequence[str | None] | None) -> tuple[list[list[int]], np.ndarray]:
        """Token ids per row (start token, truncated) and the position of each row's first scored token."""
        start = [self.start_id] if self.start_id is not None else []
        if texts is not None:
            if prompts is not None or responses is not None:
                raise CurateError("LMScorer.score: give either texts or prompts + responses, not both")
            rows = [[*start, *ids] if ids else [] for ids in self._encode(texts)]
            first = np.ones(len(rows), dtype=np.int64)
        else:
            if prompts is None or responses is None:
                raise CurateError("LMScorer.score: give texts, or both prompts and responses")
            if len(prompts) != len(responses):
                raise CurateError(f"LMScorer.score: {len(prompts)} prompts but {len(responses)} responses")
            p_ids, r_ids = self._encode(prompts), self._encode(responses)
            rows = [[*start, *p, *r] if r else [] for p, r in zip(p_ids, r_ids, strict=True)]
            first = np.array([max(1, len(start) + len(p)) for p in p_ids], dtype=np.int64)
        rows = [r[: self.max_length] for r in rows]
        return rows, first

    def _batches(self, lengths: np.ndarray, scored: np.ndarray) -> list[np.ndarray]:
        """Row indices per batch: longest first, as many rows as fit `token_budget` padded tokens."""
        order = np.flatnonzero(scored)
        order = order[np.argsort(-lengths[order], kind="stable")]
        batches, i = [], 0
        while i < len(order):
            n = max(1, self.token_budget // int(lengths[order[i]]))
            batches.append(order[i: i + n])
            i += n
        return batches

    def score(self, texts: Sequence[str | None] | None = None, *, prompts: Sequence[str | None] | None = None,
              responses: Sequence[str | None] | None = None) -> NLLScores:
        """Mean, sum and count of NLL per row: of every token of `texts`, or of each response given its prompt."""
        rows, first = self._rows(texts, prompts, responses)
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        count = np.maximum(lengths - first, 0)
        total = np.zeros(len(rows), dtype=np.float64)
        for batch in self._batches(lengths, count > 0):
            total[batch] = self._score_batch([rows[i] for i in batch], first[batch])
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        return NLLScores(mean=mean, sum=total, count=count)

    def _score_batch(self, rows: list[list[int]], first: np.ndarray) -> np.ndarray:
        """Summed NLL of each row's tokens from position `first` on (one padded forward pass)."""
        import torch

        longest = max(len(r) for r in rows)
        ids = np.full((len(rows), longest), self.pad_id, dtype=np.int64)
        valid = np.zeros((len(rows), longest), dtype=bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            valid[i, : len(r)] = True
        # Token j is scored when first <= j < len; it is predicted by the hidden state at j - 1.
        scored = valid & (np.arange(longest)[None, :] >= first[:, None])
        select = torch.from_numpy(scored[:, 1:]).to(self.device)
        input_ids = torch.from_numpy(ids).to(self.device)
        mask = torch.from_numpy(valid).to(self.device, torch.long)
        labels = input_ids[:, 1:][select]
        row_of = np.nonzero(scored[:, 1:])[0]
        with self._forward_lock, torch.inference_mode():
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
                if self.head_mode == "chunked":
                    hidden = self._decoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
                    nll = self._chunked_nll(hidden[:, :-1][select], labels)
                else:
                    logits = self.model(input_ids=input_ids, attention_mask=mask).logits[:, :-1][select]
                    nll = torch.logsumexp(logits.float(), dim=-1) - logits.float().gather(1, labels[:, None])[:, 0]
            nll = nll.double().cpu().numpy()
        return np.bincount(row_of, weights=nll, minlength=len(rows))

    def _chunked_nll(self, hidden: Any, labels: Any) -> Any:
        import torch

        from curate.kernels.chunked_ce import token_nll

        hidden = hidden.to(self._weight.dtype)
        step = len(labels) if self.device.startswith("cuda") else CPU_POSITIONS
        parts = [token_nll(hidden[i: i + step], self._weight, labels[i: i + step], self._bias, VOCAB_TILE)
                 for i in range(0, len(labels), max(1, step))]
        return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)

"""Splitting a causal LM into its decoder body and its LM head, so losses never form full-vocabulary logits.

`split_head(model, tokenizer)` returns `HeadSplit(mode="chunked", decoder, weight, bias)` when the model's logits
are exactly `last_hidden_state @ weight.T + bias` (checked on a probe text), else `mode="logits"`: architectures
whose logits are modified after the head (Gemma's soft-capping, Cohere/Granite logit scales, anything the probe
catches) are used through their own logits. The LM scorer and the training loop both rely on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("curate")

# Config fields of architectures whose logits are not lm_head(hidden): soft-capping or a scale.
LOGIT_MODIFIERS = ("final_logit_softcapping", "logit_scale", "logits_scaling")
PROBE_TEXT = "The probe checks the head: 12 + 30 = 42."


@dataclass(frozen=True)
class HeadSplit:
    mode: str  # "chunked": decoder + head weight; "logits": the model's own logits
    model: Any
    decoder: Any = None
    weight: Any = None
    bias: Any = None


def split_head(model: Any, tokenizer: Any, name: str, start_id: int | None = None,
               max_length: int = 64) -> HeadSplit:
    """Decoder body and head of `model` (see the module docstring); `name` names the model in log lines."""
    import torch

    config = model.config
    for key in LOGIT_MODIFIERS:
        value = getattr(config, key, None) or getattr(getattr(config, "text_config", None), key, None)
        if value is not None and value != 1:
            log.info("language model %r: %s=%s, using the model's own logits", name, key, value)
            return HeadSplit("logits", model)
    head = model.get_output_embeddings()
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None or decoder is model:
        decoder = getattr(model, "base_model", None)
    if not isinstance(head, torch.nn.Linear) or decoder is None or decoder is model:
        log.info("language model %r: no plain LM head over a decoder body, using the model's own logits", name)
        return HeadSplit("logits", model)
    # Probe: a short real text through both paths. Catches any architecture that changes the hidden state or the
    # logits after the decoder body in a way the config does not show.
    ids = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    ids = ([start_id] if start_id is not None else []) + ids
    device = next(model.parameters()).device
    ids = torch.tensor([ids[:max_length]], device=device)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        mask = torch.ones_like(ids)
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weight, bias = head.weight, head.bias
        mine = hidden.float() @ weight.float().T + (0 if bias is None else bias.float())
    model.train(was_training)
    tolerance = (1e-4 if weight.dtype == torch.float32 else 3e-2) * (1 + float(logits.abs().max()))
    if mine.shape != logits.shape or float((mine - logits).abs().max()) > tolerance:
        log.info("language model %r: lm_head(decoder output) does not reproduce the model's logits, using the "
                 "model's own logits", name)
        return HeadSplit("logits", model)
    return HeadSplit("chunked", model, decoder, head.weight, head.bias)

"""What curate's model paths need from a causal LM's architecture, checked before any work is done.

- Local generation (`curate.models.generation.local`) keeps a key/value cache per token, repeats a prompt's
  cache for its samples and drops the rows that finish. Architectures whose cache is a recurrent state (Mamba,
  Jamba, RecurrentGemma: "linear attention" cache layers) or whose forward takes no cache at all (RWKV) cannot
  do either: `require_kv_cache` raises a `CurateError` naming the architecture when the generator is opened.
- Packing in fine-tuning keeps examples apart by restarting the position ids, which only attention layers follow:
  a recurrent layer carries its state from one packed example into the next. `packs_by_position` says whether a
  model can be packed; fine-tuning trains one example per row where it cannot.
- LoRA: the modules to adapt per architecture (`LORA_TARGETS`, else every linear layer), checked against the model
  (`lora_targets`): a named module the model lacks is an error naming the architecture, never silently skipped.
"""

from __future__ import annotations

import inspect
from typing import Any

from curate.data.errors import CurateError

# LoRA on every projection of attention and MLP (QLoRA's finding: all linear layers beat attention-only).
_LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_TARGETS: dict[str, list[str]] = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    **{arch: _LLAMA_LIKE for arch in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2",
                                      "gemma3_text", "olmo", "olmo2")},
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}


def architecture(model: Any) -> str:
    """The model's architecture as its config names it (`model_type`, e.g. "llama"), for messages."""
    return str(getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__)


def _forward_parameters(model: Any) -> set[str]:
    inner = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model  # peft: its base
    return set(inspect.signature(inner.forward).parameters)


def recurrent_state(model: Any) -> str | None:
    """Why the model's cache is not per-token keys/values (a recurrent state, or no cache argument), or None."""
    params = _forward_parameters(model)
    if not params & {"cache", "past_key_values"}:
        return "its forward pass takes no key/value cache"
    try:  # the cache layers transformers would build for this config (no tensors are allocated)
        from transformers.cache_utils import DynamicCache

        layers = DynamicCache(config=model.config).layers
    except Exception:  # an older or custom cache: judged by the forward signature alone
        return None
    stateful = sorted({type(layer).__name__ for layer in layers
                       if not (hasattr(layer, "batch_repeat_interleave") and hasattr(layer, "batch_select_indices"))})
    return f"its cache holds a recurrent state ({', '.join(stateful)})" if stateful else None


def require_kv_cache(model: Any, name: str, role: str) -> None:
    """Raise a CurateError naming the architecture when the local generator cannot run `model` (see above)."""
    why = recurrent_state(model)
    if why is not None:
        raise CurateError(f"{role} {name!r}: the {architecture(model)} architecture cannot run in curate's local "
                          f"generator: {why}, which cannot be shared between a prompt's samples or shrunk as rows "
                          "finish. Serve it with an OpenAI-compatible endpoint (`endpoint:`) instead")


def packs_by_position(model: Any) -> bool:
    """Whether restarting position ids keep packed examples apart: attention layers only, with position ids."""
    return "position_ids" in _forward_parameters(model) and recurrent_state(model) is None


def _matches(module: str, target: str) -> bool:
    return module == target or module.endswith("." + target)  # peft's rule for a list of target names


def lora_targets(model: Any, requested: list[str] | str | None, name: str) -> list[str] | str:
    """The LoRA target modules for `model`: `requested`, else the architecture's (`LORA_TARGETS`), else
    "all-linear". A listed name that matches none of the model's modules is a CurateError naming the architecture
    and its linear layers (peft would skip it, or fail only when no name matches)."""
    import torch

    targets = requested or LORA_TARGETS.get(architecture(model), "all-linear")
    if isinstance(targets, str):  # "all-linear" or a regular expression: peft resolves it
        return targets
    modules = [n for n, _ in model.named_modules() if n]
    missing = [t for t in targets if not any(_matches(m, t) for m in modules)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                         if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"})
        raise CurateError(f"LoRA target modules {missing} are not modules of the {architecture(model)} model "
                          f"{name!r}; its linear layers: {', '.join(linear)}")
    return list(targets)

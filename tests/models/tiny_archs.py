"""Tiny random-initialised causal LMs of ten architectures (and two recurrent ones), built here in about a second:
hidden 64, 2 layers, 4 heads (2 key/value heads where the architecture has grouped queries), on a byte-level BPE
tokenizer trained on the GSM8K sample, whose one special token is BOS, EOS and padding. Phi-3's and others'
default special ids point outside a 512-token vocabulary, so every config takes them from the tokenizer.

Sliding-window architectures (Mistral, Gemma 2, Gemma 3) get a window of 8 tokens, so that scored rows, packed
rows and generations run past it; Gemma 2 gets a final logit soft cap of 2 (logits of this size are capped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tests.lm_fixtures import read_records

ARCHS = ["gpt2", "llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3_text", "phi3", "olmo2", "gpt_neox"]
RECURRENT = ["mamba", "rwkv"]
WINDOW = 8
SOFT_CAP = 2.0
# LoRA's default targets per architecture: every attention and MLP projection of each layer
LLAMA_LIKE = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
LORA_EXPECTED = {"gpt2": {"c_attn", "c_proj", "c_fc"}, "phi3": {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"},
                 "gpt_neox": {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"},
                 **{a: LLAMA_LIKE for a in ARCHS if a not in ("gpt2", "phi3", "gpt_neox")}}


def train_bpe(folder: Path) -> Any:
    from curate.models.lm_train import train_tokenizer

    texts = [r["prompt"] + "\n\n" + r["response"] for r in read_records("finetune_gsm8k.jsonl")]
    return train_tokenizer(texts, 512, folder)


def tiny_config(arch: str, tokenizer: Any) -> Any:
    import transformers as tf

    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    vocab = len(tokenizer)
    # a wider initialisation than the default 0.02: logits far from uniform, so greedy outputs differ by prompt
    init = {"initializer_range": 0.1}
    if arch == "gpt2":
        return tf.GPT2Config(vocab_size=vocab, n_positions=256, n_embd=64, n_layer=2, n_head=4, **init, **special)
    if arch == "gpt_neox":
        return tf.GPTNeoXConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, max_position_embeddings=256, **init, **special)
    if arch == "mamba":
        return tf.MambaConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, state_size=8, **special)
    if arch == "rwkv":
        return tf.RwkvConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, attention_hidden_size=64,
                             intermediate_size=128, context_length=256, **special)
    sizes = {"vocab_size": vocab, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256, **init, **special}
    extra: dict[str, Any] = {
        "qwen3": {"head_dim": 16},
        "mistral": {"head_dim": 16, "sliding_window": WINDOW},
        "gemma2": {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": WINDOW,
                   "final_logit_softcapping": SOFT_CAP},
        # one sliding and one global layer, as Gemma 3 interleaves them
        "gemma3_text": {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": WINDOW,
                        "layer_types": ["sliding_attention", "full_attention"]},
    }.get(arch, {})
    config = {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config, "qwen3": tf.Qwen3Config,
              "mistral": tf.MistralConfig, "gemma2": tf.Gemma2Config, "gemma3_text": tf.Gemma3TextConfig,
              "phi3": tf.Phi3Config, "olmo2": tf.Olmo2Config}[arch]
    return config(**sizes, **extra)


def build_models(root: Path, archs: list[str]) -> dict[str, Path]:
    """Each architecture's random model and the tokenizer, saved as Hugging Face folders under `root`."""
    from transformers import AutoModelForCausalLM

    tokenizer = train_bpe(root / "tokenizer")
    out = {}
    for arch in archs:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(tiny_config(arch, tokenizer))
        assert model.config.model_type == arch
        model.save_pretrained(root / arch)
        tokenizer.save_pretrained(root / arch)
        out[arch] = root / arch
    return out


def load(folder: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).eval()

"""Model loads take turns in a process: transformers' loading swaps process-wide functions (`no_init_weights`), so
two threads loading at once (two steps of parallel branches) could leave them swapped and every later model's tied
LM head uninitialised on the meta device. A real GPT-2 loaded from two threads at once comes out whole in both."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from curate.models.lm_train import load_causal_lm
from curate.models.locate import load_named


def test_loads_in_two_threads_never_overlap():
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def load() -> None:
        start = time.perf_counter()
        time.sleep(0.2)
        with lock:
            spans.append((start, time.perf_counter()))

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: load_named(load, "model", "'x'"), range(2)))
    (_, first_end), (second_start, _) = sorted(spans)
    assert first_end <= second_start  # the second load started after the first ended


def test_a_model_loaded_from_two_threads_at_once_is_whole_in_both(math_lm):
    from transformers import PreTrainedModel

    original = PreTrainedModel.init_weights
    with ThreadPoolExecutor(2) as pool:
        loaded = list(pool.map(lambda _: load_causal_lm(math_lm)[0], range(4)))
    assert PreTrainedModel.init_weights is original  # not left swapped
    for model in loaded:
        assert all(p.device.type != "meta" for p in model.parameters())
        assert torch.equal(model.get_output_embeddings().weight, loaded[0].get_output_embeddings().weight)

"""Benchmark: generation, CLEAR scoring and DART resampling on real GSM8K problems.

    python benchmarks/bench_generation.py --data <folder of the shared data sets> [--prompts 256] [--n 4]

1. Generation throughput (new tokens/s): curate's local generator (length-sorted batches, the prompt's cache shared
   by its n samples, finished rows leaving the batch) against a plain loop of `model.generate` over the same
   prompts, one prompt at a time with `num_return_sequences=n`, same temperature, top-p and max new tokens.
2. CLEAR's log-prob variant (`confidence.k: 0`): rows/s of the stage's summarize (likelihood confidence + two
   P(True) reflections), on GSM8K (prompt, response) pairs.
3. DART `resample` on GSM8K's `num_steps`: rows/s through the stage.
The model is a 2-layer GPT-2 (width 128) trained here for 150 steps on the problems, so it writes GSM8K-like text.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch


def load_gsm8k(data: Path, limit: int) -> list[dict]:
    lines = (data / "gsm8k" / "gsm8k_train.jsonl").read_text(encoding="utf-8").split("\n")
    return [json.loads(line) for line in lines[:limit] if line.strip()]


def bench_generation(model: str, prompts: list[str], n: int, max_new: int) -> dict:
    from curate.models.generation.local import LocalGenerator
    from curate.models.generation.sampling import Sampling

    generator = LocalGenerator(model, device="cpu")
    sampling = Sampling(n=n, temperature=1.0, top_p=0.95, max_new_tokens=max_new, seed=0)
    started = time.perf_counter()
    ours = generator.generate(prompts, sampling)
    ours_s = time.perf_counter() - started
    ours_tokens = sum(c.tokens for cs in ours for c in cs)
    model_, tokenizer = generator.model, generator.tokenizer
    torch.manual_seed(0)
    started = time.perf_counter()
    plain_tokens = 0
    with torch.inference_mode():
        for ids in generator.encode(prompts, max_new):
            input_ids = torch.tensor([ids])
            out = model_.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True,
                                  temperature=1.0, top_p=0.95, max_new_tokens=max_new, num_return_sequences=n,
                                  pad_token_id=generator.pad_id, eos_token_id=generator.eos_id)
            new = out[:, input_ids.shape[1]:]
            plain_tokens += int(((new != generator.eos_id).cumprod(dim=1)).sum())
    plain_s = time.perf_counter() - started
    del tokenizer
    return {"prompts": len(prompts), "n": n, "max_new_tokens": max_new,
            "curate_tokens_per_s": round(ours_tokens / ours_s, 1), "curate_seconds": round(ours_s, 2),
            "generate_loop_tokens_per_s": round(plain_tokens / plain_s, 1), "generate_loop_seconds": round(plain_s, 2),
            "speedup_tokens_per_s": round((ours_tokens / ours_s) / (plain_tokens / plain_s), 2)}


def bench_clear(model: str, rows: list[dict]) -> dict:
    from curate.stages.clear import Clear

    table = pa.table({"id": [r["id"] for r in rows], "prompt": [r["prompt"] for r in rows],
                      "response": [r["response"] for r in rows]})
    stage = Clear(generator={"model": model, "device": "cpu"}, confidence={"k": 0}, max_length=256)
    stage.ensure_setup()
    started = time.perf_counter()
    summary = pa.concat_tables([stage.summarize(table.slice(i, 256)) for i in range(0, table.num_rows, 256)])
    seconds = time.perf_counter() - started
    return {"rows": table.num_rows, "seconds": round(seconds, 2), "rows_per_s": round(table.num_rows / seconds, 1),
            "finite": int(np.isfinite(summary.column("clear_likelihood").to_numpy()).sum())}


def bench_dart_resample(rows: list[dict], copies: int) -> dict:
    from curate.engine.config import parse_config
    from curate.engine.runner import run_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gsm8k.jsonl"
        with path.open("w") as f:
            for c in range(copies):
                for r in rows:
                    f.write(json.dumps({**r, "id": f"{r['id']}-{c}", "prompt": f"{r['prompt']} ({c})"}) + "\n")
        count = copies * len(rows)
        base = {"name": "b", "inputs": [{"path": str(path)}], "output": str(Path(tmp) / "run"),
                "engine": {"prefect": False}}
        run_pipeline(parse_config({**base, "stages": []}))  # ingest alone, so the timing below is the stage's
        results = run_pipeline(parse_config({**base, "stages": [{"dart": {
            "mode": "resample", "strategy": "prop2diff", "k_p": 8, "difficulty": {"column": "num_steps"}}}]}))
        seconds = results[-1].seconds  # the dart step's own time (read, decide, write)
    return {"rows": count, "seconds": round(seconds, 2), "rows_per_s": round(count / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    from curate.models.lm_train import LMTrainConfig, train_lm

    rows = load_gsm8k(args.data, 4000)
    with tempfile.TemporaryDirectory() as tmp:
        model = str(train_lm([r["prompt"] + "\n" + r["response"] for r in rows], Path(tmp) / "lm",
                             LMTrainConfig(vocab_size=2048, n_layer=2, n_embd=128, n_head=4, seq_len=256, steps=150,
                                           batch_size=16, lr=3e-3, warmup_steps=10)))
        prompts = [r["prompt"] + "\n" for r in rows[: args.prompts]]
        report = {"generation": bench_generation(model, prompts, args.n, args.max_new_tokens),
                  "clear_logprob": bench_clear(model, rows[:1024]),
                  "dart_resample": bench_dart_resample(rows, 25)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

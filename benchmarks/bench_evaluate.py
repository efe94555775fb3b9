"""Closed-loop evaluation's cost beyond the trainings themselves.

Runs an `evaluate` step (selection vs token-matched random, 2 seeds, accuracy off) through the runner on the
packaged demo corpus (GSM8K + P3 rows; the selection is the GSM8K rows, a mixture by source), then, in the same
process, calls `finetune()` directly on exactly the rows each arm x seed trained on (read back from the step's
draws) with the same settings. Prints seconds per arm x seed and the evaluation's overhead: its wall time minus
the plain fine-tunes', as a share of its wall time (goal: < 5%).

    python benchmarks/bench_evaluate.py [--rows 1200] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from curate.data.dataset import Dataset
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from curate.models.finetune import FinetuneConfig, finetune

DEMO = Path(__file__).resolve().parents[1] / "configs" / "data" / "demo"
FIELDS = {"prompt": "prompt", "response": "response"}


def warm_up(root: Path, tune: dict) -> None:
    """Imports and first calls (transformers, tokenizers, matplotlib) cost seconds once per process: pay them
    before either side is timed."""
    from curate.methods.plots import loss_curves_png

    rows = [{"text": f"warm up row {i} " * 20} for i in range(32)]
    finetune(rows, root / "warm", FinetuneConfig.model_validate({**tune, "epochs": 1}), heldout=rows[:4], save=False)
    loss_curves_png({"arms": {}}, root / "warm.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    tune = {"init": "scratch", "lm": {"vocab_size": 2048, "n_embd": 64, "n_head": 4, "n_layer": 2, "seq_len": 256},
            "epochs": args.epochs, "max_length": 256, "batch_size": 8, "lr": 0.002, "eval_every": 20,
            "save_every": None}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        warm_up(root, tune)
        config = {
            "name": "bench-evaluate", "output": str(root / "run"), "engine": {"prefect": False, "workers": 2},
            "inputs": [{"path": str(DEMO / "gsm8k.jsonl.zst"), "fields": FIELDS, "source": "gsm8k"},
                       {"path": str(DEMO / "p3.jsonl.zst"), "fields": FIELDS, "source": "p3"}],
            "heldout": {"path": str(DEMO / "heldout.jsonl.zst"), "fields": FIELDS},
            "stages": [{"mixture": {"label": "math", "by": "source", "weights": {"gsm8k": 1.0, "p3": 0.0}}},
                       {"evaluate": {"pool": "ingest", "seeds": args.seeds, "accuracy": "off", "finetune": tune}}],
        }
        results = run_pipeline(parse_config(config, base_dir=root))
        step = next(r for r in results if r.label == "evaluate")
        folder = root / "run" / "eval" / "evaluate"
        summary = json.loads((folder / "results.json").read_text())
        plan = json.loads((folder / "arms.json").read_text())
        heldout = Dataset.open(root / "run" / "heldout").to_table().to_pylist()
        pool = Dataset.open(root / "run" / "stages" / "00-ingest")
        selection = Dataset.open(root / "run" / "stages" / "01-math")
        columns = ["text", "prompt", "response"]
        plain = 0.0
        for s in range(args.seeds):
            for arm in summary["arms"]:
                if arm == "random":
                    rows = pool.take(np.load(folder / "draws" / f"random-seed-{s}.npy"), columns).to_pylist()
                else:
                    rows = selection.to_table(columns=columns).to_pylist()
                cfg = FinetuneConfig.model_validate({**tune, "seed": s, "tokenizer": plan["tokenizer"]})
                start = time.perf_counter()
                finetune(rows, root / "plain" / f"{arm}-{s}", cfg, heldout=heldout, save=False)
                plain += time.perf_counter() - start
    units = args.seeds * len(summary["arms"])
    print(f"evaluate step: {step.seconds:.1f} s for {units} arm x seed trainings "
          f"({step.seconds / units:.1f} s each); drawing the arms (shared tokenizer, token counts) "
          f"{plan['seconds']:.1f} s; the trainings as evaluate ran them {summary['seconds'] - plan['seconds']:.1f} s")
    for arm, entry in summary["arms"].items():
        print(f"  {arm}: {np.mean(entry['rows']):.0f} rows, {np.mean(entry['tokens']):,.0f} tokens, "
              f"train {np.mean(entry['train_seconds']):.1f} s per seed, loss {entry['mean']:.3f}")
    print(f"plain finetune() on the same rows: {plain:.1f} s")
    print(f"overhead: {step.seconds - plain:.1f} s = {100 * (step.seconds - plain) / step.seconds:.1f}% of the "
          f"evaluation (goal < 5%); ratio evaluate / plain = {step.seconds / plain:.3f}")


if __name__ == "__main__":
    main()

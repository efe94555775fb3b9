"""Benchmark: curate's `finetune` against a plain `transformers.Trainer` on the same model, the same packed batches
and the same optimizer steps: training tokens/s, peak memory, and the final losses side by side.

    python benchmarks/bench_finetune.py --data <folder of the shared data sets> [--rows 1200] [--steps 30]
        [--batch-size 8] [--max-length 512] [--vocab 32768] [--layers 4] [--width 256] [--device auto]

Data: `--rows` GSM8K problems (`<data>/gsm8k/gsm8k_train.jsonl`), prompt + response, loss on the response only.
Model: a GPT-2 made here without downloads (a byte-level BPE tokenizer trained on the rows, `--layers` x `--width`,
an output vocabulary of `--vocab`, random init saved once), loaded by both from the same folder.
Batches: curate's schedule (a seeded order, examples packed into `--max-length` rows with position ids restarting
per example, `--batch-size` rows per step), built once and fed to both: to the Trainer as one ready batch per step
(labels = the supervised tokens, unshifted, as Hugging Face expects; the same position ids, no attention mask, so
transformers keeps the packed examples apart for both), in order. Optimizer: AdamW (lr 1e-3, betas 0.9/0.999,
no weight decay), constant learning rate, gradient clipping at 1.0, fp32 on CPU (bf16 autocast on CUDA).
Each side runs in a subprocess of its own: peak memory is the growth of the child's peak RSS over its RSS once
the model and batches are loaded (CUDA: `max_memory_allocated` growth); time is the training loop alone.
What differs is how the loss is computed: the Trainer's model forms the full (rows x length x vocab) logits and
upcasts them to fp32; curate sends only the supervised positions' hidden states through its fused chunked loss.
Goal: >= 1.5x tokens/s at equal final loss, or >= 2x less peak memory at equal tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from memory import MIB, peak_rss, reset_peak_rss

from curate.models.finetune import FinetuneConfig, micro_batches, step_schedule
from curate.models.lm_train import start_token_id, train_tokenizer
from curate.models.sft_data import encode_examples

LR = 1e-3


def read_rows(data: Path, rows: int) -> list[dict[str, Any]]:
    path = data / "gsm8k" / "gsm8k_train.jsonl"
    records = [json.loads(line) for line in path.read_text().split("\n") if line.strip()]  # records hold U+2028
    return [{"prompt": r["prompt"], "response": r["response"], "text": f"{r['prompt']}\n\n{r['response']}"}
            for r in records[:rows]]


def make_model(rows: list[dict], folder: Path, args: argparse.Namespace) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = train_tokenizer([r["text"] for r in rows], 8192, folder)
    eos = tokenizer.eos_token_id
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=args.vocab, n_positions=args.max_length, n_embd=args.width,
                                       n_layer=args.layers, n_head=max(1, args.width // 64), bos_token_id=eos,
                                       eos_token_id=eos, pad_token_id=eos, resid_pdrop=0.0, embd_pdrop=0.0,
                                       attn_pdrop=0.0))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def config(args: argparse.Namespace, folder: Path) -> FinetuneConfig:
    return FinetuneConfig(model=str(folder), steps=args.steps, batch_size=args.batch_size, max_length=args.max_length,
                          lr=LR, schedule="constant", warmup_steps=0, eval_every=None, save_every=None,
                          device=args.device)


def schedule(rows: list[dict], folder: Path, cfg: FinetuneConfig) -> tuple[list, list]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.model_max_length = 1 << 60
    examples, _ = encode_examples(rows, tokenizer, cfg.max_length, start_token_id(tokenizer),
                                  tokenizer.eos_token_id)
    return examples, step_schedule(examples, cfg, packing=True)


def run_curate(rows: list[dict], folder: Path, cfg: FinetuneConfig, out: Path) -> dict[str, Any]:
    from curate.models.finetune import finetune

    cuda = cfg.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else reset_peak_rss()
    metrics = finetune(rows, out, cfg)
    peak = torch.cuda.max_memory_allocated() - base if cuda else peak_rss() - base
    detail = json.loads((out / "metrics.json").read_text())
    return {"seconds": metrics["train_seconds"], "tokens": metrics["tokens"], "peak_bytes": peak,
            "losses": detail["train_loss"]}


def run_trainer(rows: list[dict], folder: Path, cfg: FinetuneConfig, out: Path) -> dict[str, Any]:
    from curate.kernels.common import IGNORE_INDEX
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    examples, steps = schedule(rows, folder, cfg)
    cuda = cfg.device.startswith("cuda")
    device = "cuda" if cuda else "cpu"
    batches = []
    for step in steps:
        (mb,) = micro_batches(examples, step, 1, 0, device)
        labels = torch.full_like(mb.targets, IGNORE_INDEX)
        labels[:, 1:] = mb.targets[:, :-1]  # Hugging Face shifts labels itself: token t is labelled at t
        batches.append({"input_ids": mb.input_ids, "labels": labels, "position_ids": mb.position_ids})
    tokens = sum(int(sum(len(examples[i]) for row in step for i in row)) for step in steps)

    class Steps(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(batches)

        def __getitem__(self, i: int) -> dict:
            return batches[i]

    class InOrder(Trainer):
        def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
            return torch.utils.data.SequentialSampler(self.train_dataset)

    losses: list[float] = []

    class Record(__import__("transformers").TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(folder).to(device)
    training = TrainingArguments(output_dir=str(out), max_steps=len(batches), per_device_train_batch_size=1,
                                 learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                                 adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0,
                                 logging_steps=1, save_strategy="no", report_to=[], bf16=cuda, use_cpu=not cuda,
                                 dataloader_num_workers=0, disable_tqdm=True, seed=cfg.seed)
    trainer = InOrder(model=model, args=training, train_dataset=Steps(), data_collator=lambda items: items[0],
                      callbacks=[Record()])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else reset_peak_rss()
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() - base if cuda else peak_rss() - base
    return {"seconds": seconds, "tokens": tokens, "peak_bytes": peak, "losses": losses}


def child(side: str, args: argparse.Namespace) -> None:
    folder = Path(args.model_dir)
    rows = read_rows(Path(args.data), args.rows)
    cfg = config(args, folder)
    with tempfile.TemporaryDirectory(prefix=f"bench-ft-{side}-") as out:
        result = (run_curate if side == "curate" else run_trainer)(rows, folder, cfg, Path(out))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder of the shared data sets")
    parser.add_argument("--rows", type=int, default=1200)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--child", choices=["curate", "trainer"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child:
        child(args.child, args)
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-ft-model-") as folder:
        rows = read_rows(Path(args.data), args.rows)
        make_model(rows, Path(folder), args)
        examples, steps = schedule(rows, Path(folder), config(args, Path(folder)))
        supervised = sum(int(examples[i].supervised[1:].sum()) for step in steps for row in step for i in row)
        total = sum(len(examples[i]) for step in steps for row in step for i in row)
        print(f"device {args.device}, torch {torch.__version__}, {os.cpu_count()} cores; GPT-2 {args.layers}x"
              f"{args.width}, vocab {args.vocab}; {len(steps)} steps of {args.batch_size} packed rows of <= "
              f"{args.max_length} tokens ({total:,} tokens, {supervised / total:.0%} of them supervised)")
        for side in ("trainer", "curate"):
            cmd = [sys.executable, __file__, "--child", side, "--model-dir", folder, *sys.argv[1:]]
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if proc.returncode != 0:
                sys.exit(f"{side} failed:\n{proc.stderr[-4000:]}")
            results[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\n{'':>8} {'tokens/s':>10} {'peak MiB':>9} {'first loss':>10} {'final loss':>10} {'seconds':>8}")
    for side, r in results.items():
        tail = r["losses"][-max(1, len(r["losses"]) // 10):]
        r["final"] = float(np.mean(tail))
        print(f"{side:>8} {r['tokens'] / r['seconds']:>10,.0f} {r['peak_bytes'] / MIB:>9.0f} {r['losses'][0]:>10.4f}"
              f" {r['final']:>10.4f} {r['seconds']:>8.1f}")
    ours, theirs = results["curate"], results["trainer"]
    speed = (ours["tokens"] / ours["seconds"]) / (theirs["tokens"] / theirs["seconds"])
    memory = theirs["peak_bytes"] / max(ours["peak_bytes"], 1)
    print(f"\ncurate / Trainer: {speed:.2f}x tokens/s, {memory:.2f}x less peak memory, final loss "
          f"{ours['final']:.4f} vs {theirs['final']:.4f} (mean of the last 10% of steps)")
    print(f"goal: >= 1.5x tokens/s at equal loss ({'met' if speed >= 1.5 else 'not met'}), or >= 2x less peak memory "
          f"at equal tokens/s ({'met' if memory >= 2 and speed >= 0.95 else 'not met'})")


if __name__ == "__main__":
    main()

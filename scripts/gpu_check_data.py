"""Prepare what scripts/gpu_check.sh needs on a machine with no network: a data folder and an embedding model.

    python scripts/gpu_check_data.py data <folder>    # the packaged demo data in the shared data layout
    python scripts/gpu_check_data.py minilm <folder>  # a randomly initialised model of MiniLM-L6's shape

`data` writes `gsm8k/gsm8k_train.jsonl` (the demo's GSM8K rows, target and held-out ones included) and
`pool_mixed/pool_mixed.jsonl` (the demo pool's documents), the files the benchmarks read from the shared data
sets. `minilm` writes a sentence-transformers folder with MiniLM-L6's shape (6 layers, hidden 384, 12 heads,
a 30,522-token WordPiece vocabulary built from the demo texts), for embedding speed where the packaged MiniLM is
not installed: speed depends on the shapes, not on the weights. Reads zstd through pyarrow (no other package).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa

DEMO = Path(__file__).resolve().parents[1] / "configs" / "data" / "demo"


def demo_rows(name: str) -> list[dict]:
    with pa.input_stream(str(DEMO / name), compression="zstd") as stream:
        lines = stream.read().decode("utf-8", errors="replace").splitlines()
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:  # the demo pool plants a few malformed lines
            continue
    return [r for r in rows if isinstance(r, dict)]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def write_data(folder: Path) -> None:
    math = [r for name in ("gsm8k.jsonl.zst", "target.jsonl.zst", "heldout.jsonl.zst") for r in demo_rows(name)
            if r.get("prompt") and r.get("response")]
    pool = [r for r in demo_rows("pool.jsonl.zst") if isinstance(r.get("text"), str) and r["text"].strip()]
    write_jsonl(folder / "gsm8k" / "gsm8k_train.jsonl", list({r["prompt"]: r for r in math}.values()))
    write_jsonl(folder / "pool_mixed" / "pool_mixed.jsonl", list({r["text"]: r for r in pool}.values()))
    print(f"{folder}: {len(math)} GSM8K rows, {len(pool)} pool documents")


def write_minilm(folder: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    texts = [r["text"] for r in demo_rows("pool.jsonl.zst") if isinstance(r.get("text"), str)]
    words = Counter(w.lower() for t in texts for w in t.split() if w.isalpha())
    chars = sorted({c for t in texts for c in t.lower() if not c.isspace()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    vocab += [w for w, _ in words.most_common() if w not in set(vocab)][: 30522 - len(vocab)]
    vocab += [f"[unused{i}]" for i in range(30522 - len(vocab))]
    bert_dir = folder / "bert"
    bert_dir.mkdir(parents=True, exist_ok=True)
    (bert_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(bert_dir / "vocab.txt"), do_lower_case=True).save_pretrained(bert_dir)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512)
    BertModel(config).save_pretrained(bert_dir)
    encoder = models.Transformer(str(bert_dir), max_seq_length=256)
    model = SentenceTransformer(modules=[encoder, models.Pooling(384, "mean"), models.Normalize()])
    model.save(str(folder))
    print(f"{folder}: a MiniLM-L6-shaped sentence transformer (random weights)")


if __name__ == "__main__":
    what, target = sys.argv[1], Path(sys.argv[2])
    {"data": write_data, "minilm": write_minilm}[what](target)

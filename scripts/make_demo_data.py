"""Build the demo corpus shipped in configs/data/demo from the shared real data sets.

    python scripts/make_demo_data.py --data <folder with pool_mixed/, gsm8k/ ...>

Deterministic (fixed seed). Writes pool.jsonl.zst (mixed-domain text with injected exact and near
duplicates, junk rows, foreign-language rows and a few malformed lines), gsm8k.jsonl.zst (math
instruction data with duplicates), target.jsonl.zst (other GSM8K problems: the target sample), heldout.jsonl.zst
(100 more GSM8K problems: what evaluations measure on), leaked.jsonl.zst (web pages copying 12 of them), p3.jsonl.zst
(multi-task instruction data for the diversity recipe), mmlu_pool.jsonl.zst and mmlu_target.jsonl.zst
(MMLU-Redux questions: all subjects, and a medical target) and NOTICE.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

import pyarrow as pa

OUT = Path(__file__).resolve().parents[1] / "configs" / "data" / "demo"
SEED = 20261123
FOREIGN = [
    "Le petit village se trouve au bord de la rivière. Chaque matin, les habitants vont au marché pour acheter "
    "du pain frais, des légumes et du fromage, puis ils discutent longtemps sur la place de l'église.",
    "Die Bibliothek der Stadt wurde im letzten Jahr renoviert. Jetzt gibt es dort mehr Platz zum Lesen, neue "
    "Computer für die Schüler und jeden Freitag einen Abend mit Vorträgen über Geschichte und Wissenschaft.",
    "El tren salió de la estación con media hora de retraso. Los viajeros miraban por la ventana los campos "
    "de olivos mientras el revisor pasaba por los vagones pidiendo los billetes con mucha paciencia.",
    "La cucina di mia nonna profumava sempre di basilico e pomodoro. La domenica preparava la pasta fatta a "
    "mano e tutta la famiglia si sedeva intorno al grande tavolo di legno per pranzare insieme.",
    "O navio chegou ao porto durante a noite. De manhã cedo, os pescadores descarregaram as caixas de peixe e "
    "os comerciantes começaram a negociar os preços no mercado perto do cais antigo da cidade.",
    "Het museum toont deze zomer een tentoonstelling over oude kaarten. Bezoekers kunnen zien hoe zeevaarders "
    "vroeger de wereld tekenden en hoe die kaarten langzaam nauwkeuriger werden door nieuwe ontdekkingen.",
]
JUNK = [
    "", "   ", "ok", "thanks!", "N/A",
    "#### $$$ %%% @@@ ### *** &&& !!! ### $$$ %%% @@@ ### *** &&& !!! #### $$$",
    "... ... ... ... ... ... ... ... ... ... ... ... ... ...",
    "\n".join(["BUY CHEAP WATCHES NOW - BEST PRICES - CLICK HERE"] * 30),
    "\n".join(["Home | About | Contact | Login | Register"] * 12 + ["Copyright 2019 all rights reserved"]),
    " ".join(["spam"] * 300),
    "lorem ipsum " * 80,
]


HTML_ROW = '<script>alert(1)</script><img src=x onerror="alert(2)">'


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def perturb(text: str, rate: float, rng: random.Random) -> str:
    """Replace about `rate` of the words with words from elsewhere in the text."""
    words = text.split(" ")
    for i in rng.sample(range(len(words)), max(1, int(rate * len(words)))):
        words[i] = rng.choice(words) + "s"
    return " ".join(words)


def write_zst(name: str, lines: list[str]) -> None:
    data = ("\n".join(lines) + "\n").encode("utf-8")
    with pa.output_stream(OUT / name, compression="zstd") as out:
        out.write(data)
    print(f"{name}: {len(lines)} lines, {len(data) / 1e6:.2f} MB raw, {(OUT / name).stat().st_size / 1e6:.2f} MB")


def build_pool(data: Path, rng: random.Random) -> list[str]:
    pool = read_jsonl(data / "pool_mixed" / "pool_mixed.jsonl")
    by_domain: dict[str, list[dict]] = {}
    for row in pool:
        by_domain.setdefault(row["domain"], []).append(row)
    rows = [r for domain in sorted(by_domain) for r in rng.sample(by_domain[domain], 320)]
    long_rows = [r for r in rows if r["num_words"] >= 120]
    for k, original in enumerate(rng.sample(rows, 40)):
        rows.append({**original, "id": f"demo-exact-{k:03d}"})
    for k, original in enumerate(rng.sample(long_rows, 60)):
        rate = rng.choice([0.005, 0.01, 0.02])
        rows.append({**original, "id": f"demo-near-{k:03d}", "text": perturb(original["text"], rate, rng)})
    for k, text in enumerate(JUNK):
        rows.append({"id": f"demo-junk-{k:03d}", "source": "demo/junk", "domain": "web", "text": text})
    for k, text in enumerate(FOREIGN):
        rows.append({"id": f"demo-foreign-{k:03d}", "source": "demo/foreign", "domain": "web", "text": text})
    rng.shuffle(rows)
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    broken = ['{"id": "demo-broken-000", "text": "an unterminated record', '{"id": "demo-broken-001", "text": 42}',
              '{"id": "demo-broken-002", "text": null}', "not json at all"]
    for line in broken:
        lines.insert(rng.randrange(len(lines)), line)
    # a row that would run script if a report pasted text into HTML unescaped (the report test looks for it)
    lines.insert(0, json.dumps({"id": "demo-html-000", "source": "demo/junk", "domain": "web", "text": HTML_ROW}))
    return lines


def build_p3(data: Path) -> list[str]:
    """Multi-task instruction data for the diversity recipe: 20 random rows of each P3 task (seed 3)."""
    rows = read_jsonl(data / "p3_t0_mix" / "p3_t0_mix.jsonl")
    rng = random.Random(3)
    by_task: dict[str, list[dict]] = {}
    for row in rows:
        by_task.setdefault(row["task"], []).append(row)
    picked = [r for task in sorted(by_task) for r in rng.sample(by_task[task], 20)]
    rng.shuffle(picked)
    keep = ("id", "task", "template", "prompt", "response")
    return [json.dumps({k: r[k] for k in keep}, ensure_ascii=False) for r in picked]


def build_gsm8k(data: Path, rng: random.Random) -> tuple[list[str], list[str], list[str]]:
    rows = read_jsonl(data / "gsm8k" / "gsm8k_train.jsonl")
    rng.shuffle(rows)
    pool, target, heldout = rows[:1200], rows[1200:1400], rows[1400:1500]
    pool = pool + [dict(r) for r in rng.sample(pool, 20)]  # exact duplicates, same source id
    for k, original in enumerate(rng.sample(pool[:1200], 20)):  # near duplicates: one number changed
        prompt = re.sub(r"\d+", lambda m: str(int(m.group()) + 1), original["prompt"], count=1)
        pool.append({**original, "id": f"gsm8k-near-{k:03d}", "prompt": prompt})
    rng.shuffle(pool)
    keep = ("id", "prompt", "response", "answer", "num_steps")
    dump = lambda r: json.dumps({k: r[k] for k in keep}, ensure_ascii=False)  # noqa: E731
    return [dump(r) for r in pool], [dump(r) for r in target], [dump(r) for r in heldout]


def build_leaked(heldout: list[str]) -> list[str]:
    """Web pages that copied 12 held-out GSM8K problems with their solutions (a benchmark leaked into a crawl):
    the demo's `decontaminate` step finds and removes them, and no arm of the closed loop trains on them."""
    pages = []
    for k, line in enumerate(heldout[:12]):
        row = json.loads(line)
        pages.append(json.dumps({"id": f"demo-leak-{k:03d}", "text": (
            f"Homework help, grade school math, problem {k + 1}. {row['prompt']}\n\nWorked solution: "
            f"{row['response']}\n\nShare this page with your study group.")}, ensure_ascii=False))
    return pages


MEDICAL = ("anatomy", "clinical_knowledge", "college_biology", "college_medicine", "high_school_biology",
           "medical_genetics", "nutrition", "professional_medicine", "virology")


def build_mmlu(data: Path) -> tuple[list[str], list[str]]:
    """MMLU-Redux for target-directed selection: 10 rows of every subject for the pool, and 15 other rows of each
    medical/biology subject (`MEDICAL`) for the target (seed 5)."""
    rows = read_jsonl(data / "mmlu_redux" / "mmlu_redux.jsonl")
    rng = random.Random(5)
    by_subject: dict[str, list[dict]] = {}
    for row in rows:
        by_subject.setdefault(row["subject"], []).append(row)
    pool, target = [], []
    for subject in sorted(by_subject):
        picked = rng.sample(by_subject[subject], 25 if subject in MEDICAL else 10)
        pool += picked[:10]
        target += picked[10:]
    rng.shuffle(pool)
    keep = ("id", "subject", "prompt", "response", "answer")
    dump = lambda r: json.dumps({k: r[k] for k in keep}, ensure_ascii=False)  # noqa: E731
    return [dump(r) for r in pool], [dump(r) for r in target]


NOTICE = """Demo corpus of curate: samples of public data sets, with injected duplicates and junk rows.
Built by scripts/make_demo_data.py from these sources (origin repository: path; license):

pool.jsonl.zst (pool_mixed: text chunks of six corpora)
- WikiText-2 raw v1, test split (Salesforce; via Tylogi/TyloQuant: data/wikitext-2-raw/wiki.test.raw):
  CC BY-SA 3.0 / GFDL
- Tiny Shakespeare (karpathy/char-rnn: data/tinyshakespeare/input.txt): public-domain text
- C4 sample (allenai/c4 via hiyouga/LLaMA-Factory: data/c4_demo.jsonl): ODC-BY 1.0
- MBPP (google-research/mbpp via OckBench/OckBench: data/mbpp.jsonl): CC BY 4.0
- HumanEval (openai/human-eval: data/HumanEval.jsonl.gz): MIT
- PubMedQA PQA-L (pubmedqa/pubmedqa: data/ori_pqal.json): MIT
- rows with ids demo-junk-*, demo-foreign-*, demo-broken-*, demo-html-* were written for this demo (CC0)

p3.jsonl.zst (20 rows of each of 31 tasks of the P3 / T0 training mixture)
- P3 via yizhongw/self-instruct: data/finetuning/t0_train_50k/data_per_template/*.jsonl: Apache-2.0;
  the underlying source data sets keep their own terms

gsm8k.jsonl.zst, target.jsonl.zst, heldout.jsonl.zst (disjoint GSM8K rows); leaked.jsonl.zst (12 of the held-out
rows written into web pages for this demo, ids demo-leak-*)
- GSM8K train split (openai/grade-school-math: grade_school_math/data/train.jsonl): MIT,
  Copyright (c) 2021 OpenAI

mmlu_pool.jsonl.zst (10 rows of each of 57 subjects), mmlu_target.jsonl.zst (15 other rows of each of 9
medical and biology subjects)
- MMLU-Redux (aryopg/mmlu-redux: mmlu_redux/mmlu_*.csv): CC BY 4.0; MMLU itself (hendrycks/test): MIT
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder holding pool_mixed/ and gsm8k/")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    write_zst("pool.jsonl.zst", build_pool(args.data, rng))
    gsm8k, target, heldout = build_gsm8k(args.data, rng)
    write_zst("gsm8k.jsonl.zst", gsm8k)
    write_zst("target.jsonl.zst", target)
    write_zst("heldout.jsonl.zst", heldout)
    write_zst("leaked.jsonl.zst", build_leaked(heldout))
    write_zst("p3.jsonl.zst", build_p3(args.data))
    mmlu_pool, mmlu_target = build_mmlu(args.data)
    write_zst("mmlu_pool.jsonl.zst", mmlu_pool)
    write_zst("mmlu_target.jsonl.zst", mmlu_target)
    (OUT / "NOTICE").write_text(NOTICE, encoding="utf-8")


if __name__ == "__main__":
    main()

"""The CLI end to end: `curate demo` (in-process, the session's `demo_run` fixture), then `curate sql`, `curate inspect`
and the other commands."""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

from curate.data.dataset import Dataset
from tests.cli_runner import curate

BIN = Path(sys.executable).parent


def test_the_demo_gives_the_outputs_it_gave_before_the_graph(demo_run):
    """tests/data/recipe_outputs.json: the demo's rows kept and dropped (ids, reasons) and columns per step, first
    written by the chain runner before the plan became a graph, recorded again (scripts/record_recipe_outputs.py)
    when dedup's default engine became rensa; with `--minhash-engine datatrove` the old record still held."""
    from tests.recipe_digest import digest

    recorded = json.loads((Path(__file__).parent / "data" / "recipe_outputs.json").read_text())["demo"]
    # demo-html-000 (an HTML-injection row for the report test) joined the pool after the first record
    now = digest(demo_run, ignore=frozenset({"demo-html-000"}))
    assert {k: now[k] for k in recorded} == recorded


def stored_reasons(run: Path) -> Counter:
    counts: Counter = Counter()
    for folder in (f for f in (run / "rejected").iterdir() if Dataset.exists(f)):
        counts.update((r["stage"], r["reason"]) for r in
                      Dataset.open(folder).to_table(columns=["stage", "reason"]).to_pylist())
    return counts


def test_sql_answers_drop_reason_query(demo_run):
    out = curate("sql", str(demo_run), "SELECT stage, reason, count(*) AS n FROM rejected GROUP BY ALL",
                 "--format", "json", cwd=demo_run).stdout
    answered = Counter({(r["stage"], r["reason"]): r["n"] for r in map(json.loads, out.splitlines())})
    assert answered == stored_reasons(demo_run)
    # the demo's planted faults are found where they should be
    assert answered[("ingest", "malformed_json")] == 2
    assert answered[("ingest", "wrong_type:text")] == 1 and answered[("ingest", "missing_field:text")] == 1
    assert answered[("language", "wrong_language")] >= 6


def test_sql_explains_planted_duplicates(demo_run):
    # each demo-exact-* row is a copy of a pool-* row: whichever comes first is kept, the other points to it
    out = curate("sql", str(demo_run), "SELECT id, duplicate_of FROM rejected WHERE reason = 'exact_duplicate' "
                 "AND (id LIKE 'demo-exact-%' OR duplicate_of LIKE 'demo-exact-%') ORDER BY id",
                 "--format", "csv", cwd=demo_run).stdout.splitlines()
    assert out[0] == "id,duplicate_of" and len(out) - 1 >= 30
    for line in out[1:]:
        pair = sorted(line.split(","))
        assert pair[0].startswith("demo-exact-") and pair[1].startswith("pool-"), line
    near = curate("sql", str(demo_run), "SELECT count(*) AS n FROM rejected WHERE reason = 'near_duplicate' "
                  "AND (id LIKE 'demo-near-%' OR duplicate_of LIKE 'demo-near-%')", "--format", "json",
                  cwd=demo_run).stdout
    assert json.loads(near)["n"] >= 50  # of 60 planted near copies (1-3% of words changed)


def test_sql_cluster_questions(demo_run):
    sizes = curate("sql", str(demo_run), "SELECT cluster, count(*) AS size, count(*) FILTER (WHERE kept) AS kept "
                   "FROM kmeans_diversity_all GROUP BY cluster", "--format", "json", cwd=demo_run).stdout
    clusters = [json.loads(line) for line in sizes.splitlines()]
    selected = Dataset.open(next((demo_run / "stages").glob("*-kmeans_diversity"))).count()
    assert len(clusters) == 32 and sum(c["kept"] for c in clusters) == selected
    assert selected == int(0.5 * sum(c["size"] for c in clusters))  # fraction 0.5 with redistribute
    members = curate("sql", str(demo_run), "SELECT id, kept FROM kmeans_diversity_all WHERE cluster = 17",
                     "--format", "csv", cwd=demo_run).stdout.splitlines()
    assert len(members) - 1 == next(c["size"] for c in clusters if c["cluster"] == 17)


def test_lm_stages_in_the_demo(demo_run):
    """perplexity drops the top decile of PPL after holding out the reference LM's 10%; CoLoR-Filter's top half
    (target: GSM8K) is mostly GSM8K (measured 1,046 of 1,116 against 47% of its input)."""
    ppl = json.loads(curate("sql", str(demo_run), "SELECT count(*) AS n, count(*) FILTER (WHERE reason = "
                            "'reference_split') AS held, count(*) FILTER (WHERE kept) AS kept, "
                            "bool_and(ppl > 1) AS finite FROM perplexity_all", "--format", "json",
                            cwd=demo_run).stdout)
    assert ppl["held"] == ppl["n"] // 10 and ppl["kept"] == int(0.9 * (ppl["n"] - ppl["held"])) and ppl["finite"]
    rows = curate("sql", str(demo_run), "SELECT source = 'gsm8k' AS math, count(*) AS n, count(*) FILTER "
                  "(WHERE kept) AS kept FROM color_filter_all GROUP BY ALL", "--format", "json", cwd=demo_run).stdout
    counts = {r["math"]: r for r in map(json.loads, rows.splitlines())}
    total, kept = counts[True]["n"] + counts[False]["n"], counts[True]["kept"] + counts[False]["kept"]
    assert kept == total // 2
    assert counts[True]["kept"] / kept >= 0.8 > 0.6 >= counts[True]["n"] / total
    models = {p.name for p in (demo_run / "models").glob("*/*") if p.is_dir()}
    assert models == {"reference", "prior", "conditional"}


def test_the_demo_closes_the_loop(demo_run):
    """The demo's mixture (CoLoR-Filter then kMQ, mostly GSM8K) against token-matched random subsets of the pool
    CoLoR-Filter scored and that whole pool, 3 seeds of a tiny scratch GPT-2 each, on 100 held-out GSM8K problems."""
    results = json.loads((demo_run / "eval" / "evaluate" / "results.json").read_text())
    arms = results["arms"]
    assert list(arms) == ["selection", "random", "full"] and all(a["seeds"] == [0, 1, 2] for a in arms.values())
    # measured: selection 5.696 +- 0.080, random 6.266 +- 0.030, full pool 5.121 +- 0.121 (4.2x the tokens);
    # paired -0.569 [-0.836, -0.303]
    assert results["paired"]["excludes_zero"] and results["paired"]["ci95"][1] < 0
    assert arms["full"]["mean"] < arms["selection"]["mean"] < arms["random"]["mean"]
    # random data would need about 2x the selection's tokens (between the 1x arm and the whole pool)
    assert 1 < results["data_efficiency"] < arms["full"]["multiple"]
    # accuracy is measured (the held-out rows have answers), though tiny models solve next to nothing
    assert all(len(a["accuracy"]["values"]) == 3 and 0 <= a["accuracy"]["mean"] <= 0.1 for a in arms.values())
    assert (demo_run / "eval" / "evaluate" / "loss.png").is_file() and (demo_run / "report.html").is_file()
    finetune = json.loads((demo_run / "models" / "finetune" / "metrics.json").read_text())
    assert finetune["heldout_loss_final"] < finetune["heldout_loss_initial"] - 1


def test_inspect_and_validate(demo_run, tmp_path):
    out = curate("inspect", str(demo_run), cwd=demo_run).stdout
    for word in ("ingest", "normalize", "heuristics", "language", "dedup", "near_duplicate", "malformed_json",
                 "embed", "semdedup", "perplexity", "reference_split", "color_filter",
                 "kmeans_diversity: 32 clusters", "kept per cluster"):
        assert word in out
    (tmp_path / "bad.yaml").write_text("name: x\ninputs: [{path: nope.jsonl}]\noutput: o\nstages: [{dedupe: {}}]\n")
    bad = curate("validate", str(tmp_path / "bad.yaml"), cwd=tmp_path, check=False)
    assert bad.returncode == 2
    assert "unknown stage 'dedupe'" in bad.stdout and "inputs[0].path: no file" in bad.stdout
    query = curate("sql", str(demo_run), "SELECT nope FROM final", cwd=tmp_path, check=False)
    assert query.returncode == 2 and "SQL:" in query.stdout


def test_sql_opens_the_run_read_only(demo_run, tmp_path):
    files = {p: p.stat().st_mtime_ns for p in demo_run.rglob("*")}
    for statement in (f"COPY (SELECT * FROM final) TO '{demo_run / 'leak.csv'}'", "CREATE TABLE t AS SELECT 1",
                      f"ATTACH '{demo_run / 'x.duckdb'}' AS x", "SET lock_configuration = false; SELECT 1"):
        refused = curate("sql", str(demo_run), statement, cwd=tmp_path, check=False)
        assert refused.returncode == 2 and "read-only" in refused.stdout, (statement, refused.stdout)
    assert {p: p.stat().st_mtime_ns for p in demo_run.rglob("*")} == files  # nothing written, nothing new
    assert curate("sql", str(demo_run), "DESCRIBE final", cwd=tmp_path).returncode == 0


def test_frozen_config_repeats_the_run_without_work(demo_run, tmp_path):
    out = curate("run", str(demo_run / "config.yaml"), "--no-prefect", cwd=tmp_path).stdout
    assert out.count("skipped") == 17  # target, heldout, the target without held-out rows, ingest, 13 stages


def test_train_lm_command(tmp_path):
    """`curate train-lm` trains from scratch on a JSONL file, then fine-tunes that model on prompt+response pairs
    (`--init`, `--epochs`); the folders load as Hugging Face models; bad options name the option."""
    from transformers import AutoModelForCausalLM

    from curate.models.lm_train import read_train_info

    data = Path(__file__).parent / "data"
    out = curate("train-lm", str(data / "ingest" / "pool_sample.jsonl"), "-o", str(tmp_path / "lm"),
                 "--vocab-size", "300", "--width", "32", "--heads", "2", "--steps", "20", "--seq-len", "64",
                 cwd=tmp_path).stdout
    info = read_train_info(tmp_path / "lm")
    assert "model saved to" in out and info["steps"] == 20 and info["texts"] == 60
    assert info["last_loss"] < info["first_loss"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "lm")
    assert model.config.n_embd == 32 and model.config.vocab_size == 300
    curate("train-lm", str(data / "ingest" / "gsm8k_sample.jsonl"), "-o", str(tmp_path / "tuned"), "--field",
           "prompt+response", "--init", str(tmp_path / "lm"), "--epochs", "1", "--seq-len", "64", "--limit", "30",
           cwd=tmp_path)
    tuned = read_train_info(tmp_path / "tuned")
    assert tuned["init"] == str(tmp_path / "lm") and tuned["texts"] == 30
    bad = curate("train-lm", str(data / "ingest" / "pool_sample.jsonl"), "-o", str(tmp_path / "x"), "--width", "30",
                 "--heads", "4", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "must be a multiple of n_head" in bad.stdout
    missing = curate("train-lm", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "y"), cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "nope.jsonl" in missing.stdout


def test_finetune_command_trains_measures_and_rejects_bad_options(tmp_path):
    data = Path(__file__).parent / "data" / "finetune_gsm8k.jsonl"
    result = curate("finetune", str(data), "-o", str(tmp_path / "ft"), "--scratch", "--limit", "120",
                    "--heldout-fraction", "0.25", "--max-length", "128", "--batch-size", "8", "--lr", "0.003",
                    "--epochs", "2", cwd=tmp_path)
    assert "held-out loss" in result.stdout
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    # 120 rows, a quarter held out; rows whose prompt fills all 128 tokens have nothing to learn from or measure
    assert metrics["heldout_examples"] + metrics["heldout_skipped"] == 30
    assert metrics["examples"] + metrics["examples_skipped"] == 90 and metrics["examples"] > 80
    assert metrics["heldout_loss_final"] < metrics["heldout_loss_initial"] - 1.0
    bad = curate("finetune", str(data), "-o", str(tmp_path / "x"), "--model", str(tmp_path / "ft"),
                 "--method", "qlora", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "--method: Input should be 'full' or 'lora'" in bad.stdout
    both = curate("finetune", str(data), "-o", str(tmp_path / "x"), "--model", str(tmp_path / "ft"),
                  "--epochs", "1", "--steps", "2", cwd=tmp_path, check=False)
    assert both.returncode == 2 and "`epochs` or `steps`, not both" in both.stdout
    missing = curate("finetune", str(data), "-o", str(tmp_path / "y"), cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "give `model`" in missing.stdout


def test_report_renders_in_chromium_without_errors_and_shows_rows_as_text(demo_run, tmp_path):
    """The demo's report.html in headless Chromium (Debian's package, driven by Playwright): every plot has a size,
    no console errors, and the planted row `<script>alert(1)</script><img ... onerror=...>` (demo-html-000) is text."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium): the report's browser test needs one")
    from playwright.sync_api import sync_playwright

    from curate.inspect.report import REPORT_FILE

    report = demo_run / REPORT_FILE
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors, dialogs = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        headings = [h.inner_text() for h in page.query_selector_all("h2")]
        assert headings == ["Steps", "Scores", "Clusters", "Embeddings", "Mixtures", "Closed-loop evaluation",
                            "Sample rows", "Run"]
        plots = page.query_selector_all("figure.plot svg")
        # funnel, 3 score histograms (language, perplexity, CoLoR-Filter), clusters, map, mixture, loss curves
        assert len(plots) == 8
        for svg in plots:
            box = svg.bounding_box()
            assert box is not None and box["width"] > 100 and box["height"] > 100
        body = page.inner_text("body")
        assert '<script>alert(1)</script><img src=x onerror="alert(2)">' in body
        assert page.query_selector_all("img") == [] and page.query_selector_all("script") == []
        assert errors == [] and dialogs == []
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert (tmp_path / "report.png").stat().st_size > 50_000

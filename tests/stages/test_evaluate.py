"""`evaluate` through real runs with tiny scratch models on real rows (GSM8K and P3 samples): the arms' sizes match the
selection's training tokens, curves and tables, the same seeds give the same numbers, a run killed mid-evaluation
redoes only the unfinished arm x seed trainings, config errors. CoLoR-Filter against random: test_evaluate_real.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curate.data.errors import ConfigError
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from tests.lm_fixtures import read_records

ROOT = Path(__file__).resolve().parents[2]
GSM = read_records("finetune_gsm8k.jsonl")
P3 = read_records("p3_sample.jsonl")
TINY = {"init": "scratch", "lm": {"vocab_size": 512, "n_embd": 32, "n_head": 2, "n_layer": 2, "seq_len": 256},
        "epochs": 1, "max_length": 256, "batch_size": 8, "lr": 0.003, "eval_every": 5, "save_every": None}


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def config(tmp_path: Path, evaluate: dict, seeds: int = 2) -> dict:
    """Pool: 120 GSM8K + 120 P3 rows; selection: 50 of the GSM8K rows (a mixture with P3's weight 0); held out: 40
    other GSM8K rows."""
    fields = {"prompt": "prompt", "response": "response"}
    return {
        "name": "eval",
        "inputs": [{"path": write_jsonl(tmp_path / "data" / "gsm.jsonl", GSM[:120]), "fields": fields,
                    "source": "gsm8k"},
                   {"path": write_jsonl(tmp_path / "data" / "p3.jsonl", P3[:120]), "fields": fields,
                    "source": "p3"}],
        "heldout": {"path": write_jsonl(tmp_path / "data" / "held.jsonl", GSM[360:]), "fields": fields},
        "output": str(tmp_path / "run"),
        "engine": {"prefect": False, "workers": 2},
        "stages": [
            {"mixture": {"label": "math", "by": "source", "weights": {"gsm8k": 1.0, "p3": 0.0}, "rows": 50}},
            {"evaluate": {"pool": "ingest", "seeds": seeds, "finetune": TINY, "accuracy": "off", **evaluate}},
        ],
    }


def results(run: Path, label: str = "evaluate") -> dict:
    return json.loads((run / "eval" / label / "results.json").read_text())


@pytest.fixture(scope="module")
def oracle_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("oracle")
    run_pipeline(parse_config(config(tmp, {"full": True, "random_multiples": [2]}, seeds=3), base_dir=tmp))
    return tmp / "run"


def test_random_arms_match_the_selections_training_tokens(oracle_run):
    out = results(oracle_run)
    arms = out["arms"]
    assert list(arms) == ["selection", "random", "random_x2", "full"]
    assert arms["selection"]["rows"] == [50, 50, 50]
    # a seeded draw of the pool per seed, cut where its tokens (as trained: cut to max_length) come closest to
    # the selection's; the 2x arm continues the same draw
    budget = out["budget_tokens"]
    assert budget == arms["selection"]["trained_tokens"][0]
    for arm, multiple in (("random", 1), ("random_x2", 2)):
        assert all(abs(t - multiple * budget) <= 128 for t in arms[arm]["tokens"])
        assert arms[arm]["trained_tokens"] == arms[arm]["tokens"]
        assert not arms[arm]["capped"]
    assert len({tuple(r) for r in [arms["random"]["rows"]]}) == 1 and len(set(arms["random"]["rows"])) > 1
    assert arms["full"]["rows"] == [240] * 3 and arms["full"]["multiple"] > 2
    # every arm trains one epoch over its own data: the 2x arm takes about twice the steps
    assert min(arms["random_x2"]["steps"]) > 1.5 * max(arms["random"]["steps"])
    assert arms["selection"]["mean"] < arms["random"]["mean"] + 1  # a number, not NaN
    assert (oracle_run / "eval" / "evaluate" / "loss.png").stat().st_size > 10_000


def test_every_arm_and_seed_has_a_curve_and_the_table_prints(oracle_run):
    from rich.console import Console

    from curate.cli.console import evaluation_table

    out = results(oracle_run)
    for arm in out["arms"].values():
        assert len(arm["curves"]) == 3 and all(c[0]["tokens"] == 0 for c in arm["curves"])
        assert arm["heldout_loss"] == [c[-1]["loss"] for c in arm["curves"]]
    console = Console(width=150, record=True)
    console.print(evaluation_table(out))
    text = console.export_text()
    assert all(f"{arm:<10}" in text for arm in out["arms"]) and "data efficiency" in text
    paired = out["paired"]
    verdict = ("no difference from random" if not paired["excludes_zero"] else
               "the selection beats random" if paired["mean"] < 0 else "random beats the selection")
    assert verdict in text and f"{paired['mean']:+.3f} [{paired['ci95'][0]:+.3f}, {paired['ci95'][1]:+.3f}]" in text


def test_same_seeds_give_the_same_results(oracle_run, tmp_path):
    run_pipeline(parse_config(config(tmp_path, {"full": True, "random_multiples": [2]}, seeds=3), base_dir=tmp_path))
    again, first = results(tmp_path / "run"), results(oracle_run)
    for arm in first["arms"]:
        assert again["arms"][arm]["heldout_loss"] == first["arms"][arm]["heldout_loss"]
        assert again["arms"][arm]["rows"] == first["arms"][arm]["rows"]


def test_a_killed_evaluation_redoes_only_the_unfinished_trainings(tmp_path):
    data = config(tmp_path, {"full": True}, seeds=2)  # 6 trainings
    path = tmp_path / "eval.yaml"
    path.write_text(json.dumps(data))
    command = [sys.executable, "-m", "curate.cli", "run", str(path), "--no-prefect"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    folder = tmp_path / "run" / "eval" / "evaluate"
    deadline = time.time() + 300
    while len(list(folder.glob("*/seed-*/result.json"))) < 2 and time.time() < deadline:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {p: p.stat().st_mtime_ns for p in folder.glob("*/seed-*/result.json")}
    assert 2 <= len(finished) < 6
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    after = {p: p.stat().st_mtime_ns for p in folder.glob("*/seed-*/result.json")}
    assert len(after) == 6
    assert all(after[p] == t for p, t in finished.items())  # finished trainings were not redone
    # the resumed evaluation equals one that ran through: every training is a function of its arm and seed alone
    # (test_same_seeds_give_the_same_results), so the results combined from the units are the same
    resumed = results(tmp_path / "run")
    assert set(resumed["arms"]) == {"selection", "random", "full"} and len(resumed["paired"]["diff"]) == 2


@pytest.mark.parametrize(("change", "message"), [
    ({"pool": "nowhere"}, r"evaluate.\(a step named in its parameters\): unknown label 'nowhere'"),
    ({"pool": "math"}, "pool: 'math' is the selection itself"),
    ({"arms": {"random": "ingest"}}, "arms: 'random' is reserved"),
    ({"random_multiples": [1, 2]}, "random_multiples must be distinct numbers above 1"),
    ({"seeds": 0}, "seeds"),
])
def test_config_errors_name_the_key(tmp_path, change, message):
    data = config(tmp_path, {})
    data["stages"][1]["evaluate"].update(change)
    with pytest.raises(ConfigError, match=message):
        parse_config(data, base_dir=tmp_path)


def test_from_takes_one_selection(tmp_path):
    data = config(tmp_path, {})
    data["stages"][1]["evaluate"]["from"] = ["math", "ingest"]
    with pytest.raises(ConfigError, match="evaluate reads one selection"):
        parse_config(data, base_dir=tmp_path)


def test_an_evaluation_needs_heldout_rows(tmp_path):
    data = config(tmp_path, {})
    del data["heldout"]
    with pytest.raises(ConfigError, match="heldout"):
        parse_config(data, base_dir=tmp_path)


def test_curate_evaluate_adds_an_evaluation_to_a_finished_run(tmp_path):
    data = config(tmp_path, {})
    data["stages"] = data["stages"][:1]  # the selection only
    run_pipeline(parse_config(data, base_dir=tmp_path))
    run = tmp_path / "run"
    # the installed entry point, as a user runs it
    cli = [shutil.which("curate", path=str(Path(sys.executable).parent)) or "curate"]
    wide = {**os.environ, "COLUMNS": "200"}  # messages on one line
    none = subprocess.run([*cli, "evaluate", str(run)], cwd=ROOT, capture_output=True, text=True, env=wide)
    assert none.returncode == 2 and "no finished evaluate step" in none.stdout
    settings = tmp_path / "ft.yaml"
    settings.write_text(json.dumps(TINY))
    added = subprocess.run([*cli, "evaluate", str(run), "--selection", "math", "--pool", "ingest", "--finetune",
                            str(settings), "--seeds", "1", "--random-multiples", "2", "--no-prefect"],
                           cwd=ROOT, capture_output=True, text=True, env=wide)
    assert added.returncode == 0, added.stdout + added.stderr
    out = results(run)
    assert list(out["arms"]) == ["selection", "random", "random_x2"] and out["arms"]["random"]["seeds"] == [0]
    assert "closed-loop evaluation 'evaluate'" in added.stdout and "data efficiency" in added.stdout
    assert (run / "report.html").is_file()
    shown = subprocess.run([*cli, "evaluate", str(run)], cwd=ROOT, capture_output=True, text=True, env=wide)
    assert shown.returncode == 0 and "random_x2" in shown.stdout
    bad = subprocess.run([*cli, "evaluate", str(run), "--selection", "math", "--pool", "nowhere", "--finetune",
                          str(settings), "--no-prefect"], cwd=ROOT, capture_output=True, text=True, env=wide)
    assert bad.returncode == 2 and "unknown label 'nowhere'" in bad.stdout

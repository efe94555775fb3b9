"""The README's "From Python" example runs as it is, on a copy of the demo run (it builds the demo pipeline in code,
whose every step is then already finished: the same fingerprints as the YAML demo)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def example() -> str:
    section = README.read_text(encoding="utf-8").split("## From Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(demo_run, tmp_path, monkeypatch, capsys):
    shutil.copytree(demo_run, tmp_path / "curate-demo")
    monkeypatch.chdir(tmp_path)
    exec(compile(example(), str(README), "exec"), {"__name__": "readme"})
    record = json.loads((tmp_path / "curate-demo" / "run.json").read_text())
    statuses = {s["label"]: s["status"] for s in record["steps"]}
    assert set(statuses.values()) == {"skipped"} and len(statuses) == 16  # nothing re-ran: the same config
    written = (tmp_path / "configs" / "my-demo.yaml").read_text()
    assert "curate-demo" in written and str(tmp_path) not in written
    printed = capsys.readouterr().out
    assert "dedup dedup" in printed and "gsm8k" in printed

"""The README's "From Python" example runs as it is, on a copy of the demo run, in a Python started at the repo root
(where a top-level folder could shadow an installed package: the example loads the fine-tuned model, which imports
Hugging Face's `kernels`). It builds the demo pipeline in code, whose every step is then already finished: the same
fingerprints as the YAML demo."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def example() -> str:
    section = README.read_text(encoding="utf-8").split("## From Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_from_the_repo_root(demo_run, tmp_path):
    shutil.copytree(demo_run, tmp_path / "curate-demo")
    # the run and the YAML it writes live in tmp_path; the working directory (sys.path[0]) is the repo root
    code = (example().replace('"curate-demo"', repr(str(tmp_path / "curate-demo")))
            .replace('"configs/my-demo.yaml"', repr(str(tmp_path / "configs" / "my-demo.yaml"))))
    assert code.count(str(tmp_path)) == 3  # open_run, output= and to_yaml: nothing is written into the repo
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    record = json.loads((tmp_path / "curate-demo" / "run.json").read_text())
    statuses = {s["label"]: s["status"] for s in record["steps"]}
    assert set(statuses.values()) == {"skipped"} and len(statuses) == 17  # nothing re-ran: the same config
    written = (tmp_path / "configs" / "my-demo.yaml").read_text()
    assert "curate-demo" in written and str(tmp_path) not in written
    assert "dedup dedup" in result.stdout and "gsm8k" in result.stdout

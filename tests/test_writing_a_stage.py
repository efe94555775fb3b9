"""The README's "Writing a stage" example, as a user runs it: the plugin and the config from the README, written
beside a small pool, run with `curate` from another folder, then on a real local Ray cluster."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from curate.data.dataset import Dataset
from tests.cli_runner import curate

REPO = Path(__file__).resolve().parents[1]
URLS = [0, 1, 2, 3, 0, 5, 1, 2]  # links per row


def readme_example() -> tuple[str, str]:
    """The Python and YAML blocks of the README's "Writing a stage" section."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("## Writing a stage", 1)[1].split("\n## ", 1)[0]
    python = re.findall(r"```python\n(.*?)```", section, re.S)
    config = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert len(python) == 1 and len(config) == 1
    return python[0], config[0]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    code, config = readme_example()
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "my_filters.py").write_text(code)
    (folder / "no-urls.yaml").write_text(config)
    rows = [{"id": f"r{i}", "text": f"row {i} about curation " + " ".join(f"see https://example.org/{i}/{k} now"
                                                                           for k in range(n))}
            for i, n in enumerate(URLS)]
    (folder / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "elsewhere").mkdir()
    return folder


def outcome(run: Path) -> tuple[dict[str, int], dict[str, str]]:
    """(url_count of each kept row, reason of each dropped row) of the `no_urls` step."""
    kept = Dataset.open(next((run / "stages").glob("*-no_urls"))).to_table().to_pylist()
    rejected = Dataset.open(next((run / "rejected").glob("*-no_urls"))).to_table().to_pylist()
    return {r["id"]: r["url_count"] for r in kept}, {r["id"]: r["reason"] for r in rejected}


def test_the_readme_plugin_runs_through_curate_run(project: Path):
    config = project / "no-urls.yaml"
    curate("run", str(config), "--no-report", cwd=project.parent / "elsewhere")
    kept, dropped = outcome(project / "runs" / "no-urls")
    assert kept == {f"r{i}": n for i, n in enumerate(URLS) if n <= 1}
    assert dropped == {f"r{i}": "too_many_urls" for i, n in enumerate(URLS) if n > 1}
    sql = curate("sql", "runs/no-urls", "SELECT reason, count(*) AS n FROM rejected GROUP BY ALL", "--format", "json",
                 cwd=project)
    assert [json.loads(line) for line in sql.stdout.splitlines()] == [{"reason": "too_many_urls", "n": 4}]


def test_the_plugins_parameters_are_checked_before_any_work(project: Path):
    config = project / "no-urls.yaml"
    data = yaml.safe_load(config.read_text())
    data["stages"][1] = {"no_urls": {"max_urls": -1}}
    config.write_text(yaml.safe_dump(data))
    result = curate("validate", str(config), cwd=project.parent / "elsewhere", check=False)
    assert result.returncode == 2
    assert "no_urls.max_urls" in result.stdout and "greater than or equal to 0" in result.stdout
    assert not (project / "runs").exists()


def test_the_readme_plugin_runs_on_ray_workers(project: Path):
    pytest.importorskip("ray")
    config = project / "no-urls.yaml"
    data = yaml.safe_load(config.read_text())
    data["engine"] = {"prefect": False, "kind": "ray", "address": "local", "ray_cpus": 2, "shard_rows": 2}
    config.write_text(yaml.safe_dump(data))
    curate("run", str(config), "--no-report", cwd=project.parent / "elsewhere")
    kept, dropped = outcome(project / "runs" / "no-urls")
    assert set(dropped) == {f"r{i}" for i, n in enumerate(URLS) if n > 1} and len(kept) == 4
    assert len(list((project / "runs" / "no-urls" / "stages").glob("*-no_urls/part-*.parquet"))) >= 2

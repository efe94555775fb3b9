"""`curate sql RUN` with no query: the interactive prompt, driven through a pseudo-terminal as a user types."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pexpect
import pytest

from curate import Pipeline, open_run
from curate.stages import Dedup, Heuristics, Normalize
from tests.cli_runner import BIN

DATA = Path(__file__).parent / "data" / "ingest"


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shell")
    pipeline = Pipeline(name="shell", inputs=[str(DATA / "pool_sample.jsonl")], output=str(folder / "run"),
                        engine={"prefect": False, "workers": 1},
                        stages=[Normalize(), Heuristics(min_words=3), Dedup()])
    return pipeline.run().path


def shell(run: Path, home: Path) -> pexpect.spawn:
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "CURATE_CACHE_DIR": str(home), "COLUMNS": "100"}
    env.pop("PREFECT_API_URL", None)
    child = pexpect.spawn(shutil.which("curate", path=str(BIN)) or "curate", ["sql", str(run)], env=env,
                          encoding="utf-8", timeout=60, dimensions=(40, 100))
    child.logfile_read = sys.stdout if os.environ.get("CURATE_SHOW_SHELL") else None
    child.expect("curate> ")
    return child


def test_the_prompt_answers_lists_views_and_refuses_writes(small_run, tmp_path):
    kept = open_run(small_run).step("dedup").rows_kept
    files = {p: p.stat().st_mtime_ns for p in small_run.rglob("*")}
    child = shell(small_run, tmp_path)

    child.sendline("SELECT count(*) AS kept_rows")  # continued on the next line, run at the `;`
    child.expect(r"\.\.\.> ")
    child.sendline("FROM final;")
    child.expect(r"kept_rows.*?" + str(kept))
    child.expect("curate> ")

    child.sendline(".views")
    child.expect("dedup_all")
    child.expect("curate> ")
    listed = child.before
    assert "heuristics" in listed and "rejected" in listed and "steps" in listed

    child.sendline(".schema rejected")
    child.expect(r"reason\s.*VARCHAR")
    child.expect("curate> ")

    child.sendline(f"COPY (SELECT * FROM final) TO '{tmp_path / 'leak.csv'}';")
    child.expect("read-only")
    child.expect("curate> ")
    child.sendline("SELECT nope FROM final;")
    child.expect("SQL: ")  # an error is shown and the prompt goes on
    child.expect("curate> ")

    child.sendline(".quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert not (tmp_path / "leak.csv").exists()
    assert {p: p.stat().st_mtime_ns for p in small_run.rglob("*")} == files  # the run is untouched
    assert "FROM final;" in (tmp_path / "sql_history").read_text()  # history kept for the next session

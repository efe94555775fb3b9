"""Shared fixtures. Tests use small real samples under tests/data (see tests/data/NOTICE)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from tests.cli_runner import curate

DATA = Path(__file__).parent / "data"
@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`curate demo`, once per session (about 3 minutes): tests read it and never change its rows."""
    folder = tmp_path_factory.mktemp("demo")
    # in-process (the Prefect flow costs a minute here; tests/test_configs.py and tests/flows run flows end to end)
    result = curate("demo", "--output", str(folder / "run"), "--no-prefect", cwd=folder)
    assert "Why were rows dropped?" in result.stdout and "curate sql" in result.stdout
    return folder / "run"


def pytest_configure(config: pytest.Config) -> None:
    # Prefect keeps its database under PREFECT_HOME: give the test session its own (one per pytest-xdist worker:
    # two ephemeral servers must not share one SQLite database).
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    home = Path(config.rootpath) / ".pytest_cache" / f"prefect-home{'-' + worker if worker else ''}"
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    # curate's embedding cache: one per test session, never the user's
    cache = Path(config.rootpath) / ".pytest_cache" / "curate-cache"
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["CURATE_CACHE_DIR"] = str(cache)
    # no hub access in tests: every model is local
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def data_dir() -> Path:
    return DATA


def table(**columns: list) -> pa.Table:
    """A small table from column lists: table(id=["a"], text=["hello"])."""
    return pa.table(columns)


def _trained_on_one_thread(train, folder: Path) -> str:
    """Train a tiny test LM on one thread (tiny models gain nothing from two), restoring the thread count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return str(train(folder))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def math_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny GPT-2 trained on the GSM8K sample, once per session (generation tests)."""
    from tests.lm_fixtures import train_math_lm

    return _trained_on_one_thread(train_math_lm, tmp_path_factory.mktemp("math-lm") / "lm")


@pytest.fixture(scope="session")
def arithmetic_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny GPT-2 that sometimes answers one-digit sums right (DART and CLEAR tests), once per session."""
    from tests.lm_fixtures import train_arithmetic_lm

    return _trained_on_one_thread(train_arithmetic_lm, tmp_path_factory.mktemp("arithmetic-lm") / "lm")

"""The package's layers (README "Layout"): each folder imports only from the folders below it, no module is part of an
import cycle, and the command line starts without loading torch, transformers, Prefect or Ray.

`lint-imports` checks the layers of `curate/` (the contract is in pyproject.toml). `flows/` and `kernels/` are
installed as `curate.flows` and `curate.kernels` from folders outside `curate/`, where that tool does not look: their
imports are read here from the source.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LAYERS = ["cli", "pipeline", "inspect", "engine", "stages", "methods", "models", "io", "data"]
# what curate.flows and curate.kernels may import: the orchestration layer sits below `pipeline` and above the
# engine; kernels are leaves (torch and triton only)
MAY_IMPORT = {"flows": {"engine", "stages", "methods", "models", "io", "data", "kernels", "_version"},
              "kernels": {"kernels"}}
HEAVY = ("torch", "transformers", "prefect", "ray", "triton", "datasets", "duckdb", "sklearn", "faiss")


def curate_imports(source: str) -> set[str]:
    """The `curate.*` modules a file imports anywhere (functions included), outside `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(source)
    skipped = {id(n) for node in ast.walk(tree)
               if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "curate"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "curate":
            found.add(node.module)
    return found


def layer_of(module: str) -> str:
    """`curate.engine.runner` -> `engine`; `curate` itself -> `curate`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "curate"


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The import graph's strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_layers_contract_is_kept():
    command = shutil.which("lint-imports", path=str(BIN))
    if command is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    result = subprocess.run([command], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 kept, 0 broken" in result.stdout


def test_the_contract_names_every_folder_of_curate():
    import tomllib

    contract = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    assert contract["layers"] == [f"curate.{name}" for name in LAYERS]
    folders = {p.parent.name for p in (REPO / "curate").glob("*/__init__.py")} - {"configs"}
    modules = {p.stem for p in (REPO / "curate").glob("*.py")} - {"__init__", "_version"}
    assert folders | modules == set(LAYERS), "a new top-level folder or module of curate/ needs a place in the layers"


def test_no_module_is_part_of_an_import_cycle():
    graph = grimp.build_graph("curate", exclude_type_checking_imports=True)
    assert not cycles(graph)


def test_the_cycle_finder_finds_a_cycle():
    """The check above can fail: two modules that import each other are found."""
    graph = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        graph.add_import(importer=a, imported=b)
    assert cycles(graph) == [["p.a", "p.b", "p.c"]]


@pytest.mark.parametrize("folder", ["flows", "kernels"])
def test_flows_and_kernels_import_only_below_them(folder):
    files = (REPO / folder / f"curate_{folder}").glob("*.py")
    imports = {path.name: curate_imports(path.read_text()) for path in files}
    assert imports  # the folder was read
    upward = {name: sorted(m for m in found if layer_of(m) not in MAY_IMPORT[folder])
              for name, found in imports.items()}
    assert not any(upward.values()), upward


def test_only_the_layers_above_the_engine_import_the_flows():
    """The engine knows nothing of Prefect: `curate.pipeline` (and the CLI) hand a run to the flow."""
    importers = {str(p.relative_to(REPO)) for p in (REPO / "curate").rglob("*.py")
                 if any(layer_of(m) == "flows" for m in curate_imports(p.read_text()))}
    assert importers and all(Path(p).parts[1] in ("cli", "pipeline.py") for p in importers), importers


def test_the_import_reader_sees_function_level_imports_and_skips_type_checking_blocks():
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from curate.cli import app\n"
              "def f():\n    from curate.engine.runner import Runner\n    import curate.data.dataset\n")
    assert curate_imports(source) == {"curate.engine.runner", "curate.data.dataset"}


def test_the_command_line_starts_without_heavy_libraries():
    """`curate --help`, `curate validate` and `import curate` load the stage table, not the stages' libraries."""
    code = ("import json, sys\nimport curate, curate.cli\nfrom curate.stages import REGISTRY\n"
            "names = sorted(REGISTRY)\n"
            f"print(json.dumps([m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_a_stage_class_loads_its_module_on_first_use():
    from curate import stages
    from curate.stages import REGISTRY

    assert REGISTRY["dedup"] is stages.Dedup
    assert REGISTRY["dedup"].__module__ == "curate.stages.dedup"


@pytest.mark.parametrize(("old", "new"), [("curate.runner", "curate.engine.runner"),
                                          ("curate.sql", "curate.inspect.sql"),
                                          ("curate.dataset", "curate.data.dataset"),
                                          ("curate.cli_train", "curate.cli.train")])
def test_old_module_paths_still_import_with_a_deprecation_warning(old, new):
    import importlib

    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)


def test_the_readme_changelog_lists_every_moved_module():
    import curate

    section = (REPO / "README.md").read_text(encoding="utf-8").split("## Changelog", 1)[1]
    rows = dict(re.findall(r"^\| `([\w.]+)` \| `([\w.]+)` \|$", section, re.M))
    assert rows == curate.MOVED

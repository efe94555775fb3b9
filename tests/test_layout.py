"""The repository's layout never hides an installed package, and curate installs the same way editable or as a wheel.

Python started at the repo root (a notebook, `python -c`, pytest's `pythonpath`) has the root first on `sys.path`, so a
top-level folder with an `__init__.py` wins over an installed package of that name. transformers 5.25 imports Hugging
Face's `kernels` when a model loads, and a `kernels/__init__.py` here broke every model test; `flows/` and `kernels/`
now keep their code in `curate_flows/` and `curate_kernels/`, mapped to `curate.flows` and `curate.kernels`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# where each name imports from, as Python started at the repo root sees it ('' first on sys.path, as `python -c`)
WHERE = """
import importlib.util, json, sys
found = {}
for name in sys.argv[1:]:
    spec = importlib.util.find_spec(name)
    found[name] = [] if spec is None else [spec.origin or "", *(spec.submodule_search_locations or [])]
print(json.dumps(found))
"""

# curate's public modules under the mapped folders, and a model load (which imports Hugging Face's `kernels`)
IMPORTS = """
import importlib, json, sys
from importlib import resources
import kernels
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel
import curate
modules = ["curate.kernels.chunked_ce", "curate.kernels.train_loss", "curate.kernels.sinkhorn", "curate.kernels.common",
           "curate.flows.pipeline", "curate.pipeline"]
files = {m: importlib.import_module(m).__file__ for m in modules}
folder = sys.argv[1]
GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32)).save_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder)
print(json.dumps({"kernels": kernels.__file__, "curate": curate.__file__, "files": files,
                  "demo": (resources.files("curate.configs") / "demo.yaml").is_file(),
                  "model": type(model).__name__}))
"""


def top_level_names(root: Path) -> list[str]:
    """The names under which the repo root's entries could be imported: folders and Python modules."""
    names = []
    for entry in root.iterdir():
        if entry.name.startswith(".") or entry.name == "curate":
            continue
        name = entry.name if entry.is_dir() else entry.name.split(".")[0] if entry.suffix in (".py", ".so") else ""
        if name.isidentifier():
            names.append(name)
    return sorted(names)


def from_repo_root(path: str, name: str) -> bool:
    """Whether an import location is the repo root's own entry `name` (the CI venv may lie inside the repo)."""
    resolved = Path(path).resolve()
    return resolved.is_relative_to(REPO / name) or (resolved.parent == REPO and resolved.stem == name)


def run_python(code: str, *args: str, cwd: Path, python_args: tuple[str, ...] = (),
               env: dict[str, str] | None = None) -> dict:
    env = {**os.environ, **(env or {})}
    env.pop("PYTHONPATH", None)  # only what the interpreter itself puts on sys.path
    result = subprocess.run([sys.executable, *python_args, "-c", code, *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_no_top_level_name_shadows_an_installed_distribution():
    owned = importlib.metadata.packages_distributions()
    names = [name for name in top_level_names(REPO) if name in owned]
    assert "kernels" in names  # transformers' requirement: the collision this test exists for
    found = run_python(WHERE, *names, cwd=REPO)
    shadowed = {name: where for name, where in found.items()
                if any(path and from_repo_root(path, name) for path in where)}
    assert not shadowed, (f"top-level names of the repository shadow installed distributions "
                          f"({ {n: owned[n] for n in shadowed} }): {shadowed}")


def test_the_guard_sees_a_shadowing_folder(tmp_path):
    """The check above can fail: a folder with an `__init__.py` named like an installed package shadows it."""
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text("")
    (tmp_path / "flows").mkdir()  # a folder without `__init__.py` is only a namespace portion: it never wins
    found = run_python(WHERE, "kernels", "flows", cwd=tmp_path)
    assert Path(found["kernels"][0]).parent == tmp_path / "kernels"
    installed = run_python(WHERE, "kernels", cwd=REPO)["kernels"]
    assert "site-packages" in installed[0]


def test_curate_imports_and_a_model_loads_from_the_repo_root(tmp_path):
    loaded = run_python(IMPORTS, str(tmp_path / "model"), cwd=REPO)
    assert not from_repo_root(loaded["kernels"], "kernels")
    assert loaded["model"] == "GPT2LMHeadModel" and loaded["demo"]
    assert Path(loaded["files"]["curate.kernels.chunked_ce"]).parent == REPO / "kernels" / "curate_kernels"


def test_a_wheel_installs_kernels_and_flows_under_curate(tmp_path):
    pytest.importorskip("setuptools")
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "--wheel-dir", str(wheels), str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("curate-*.whl")
    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)
    assert not (installed / "kernels").exists() and not (installed / "flows").exists()
    # -S: no site-packages processing, so the editable install's finder is not loaded; the wheel's folder comes first,
    # then the environment's other packages; the working directory is not the repo root, whose `curate/` would win
    paths = os.pathsep.join([str(installed), *site.getsitepackages()])
    loaded = run_python(f"import sys; sys.path[:0] = {paths!r}.split({os.pathsep!r})\n{IMPORTS}",
                        str(tmp_path / "model"), cwd=tmp_path, python_args=("-S",))
    assert Path(loaded["curate"]).parent == installed / "curate"
    assert all(Path(f).is_relative_to(installed / "curate") for f in loaded["files"].values()), loaded["files"]
    assert loaded["model"] == "GPT2LMHeadModel" and loaded["demo"]

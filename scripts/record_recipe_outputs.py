"""Record (or check) tests/data/recipe_outputs.json: each recipe's rows kept and dropped (ids, reasons) and
columns per step, as tests/recipe_digest.py reduces them. Run it after a deliberate change of results, and say why
in the commit.

    python scripts/record_recipe_outputs.py [--check] [--minhash-engine datatrove] [demo diverse-sft ...]

`--check` compares instead of writing. `--minhash-engine` runs every dedup step with that engine (the recorded
outputs before the rensa engine became the default were made with `datatrove`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curate.engine.config import load_config, parse_config  # noqa: E402
from curate.engine.runner import run_pipeline  # noqa: E402
from tests.recipe_digest import digest  # noqa: E402

RECORD = ROOT / "tests" / "data" / "recipe_outputs.json"
RECIPES = ["demo", "diverse-sft", "targeted-pretrain"]
IGNORE = frozenset({"demo-html-000"})  # a row the demo pool gained after the first recording


def run(name: str, engine: str | None, folder: Path) -> dict:
    config = load_config(ROOT / "configs" / f"{name}.yaml", output=str(folder / name))
    if engine:
        data = json.loads(config.model_dump_json())
        for entry in data["stages"]:
            params = entry.get("dedup") if isinstance(entry, dict) else None
            if params is not None and params.get("minhash", {}) is not None:
                params.setdefault("minhash", {})["engine"] = engine
        config = parse_config(data, base_dir=ROOT / "configs", output=str(folder / name))
    config.engine.prefect = False
    run_pipeline(config)
    return digest(folder / name, ignore=IGNORE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", default=RECIPES)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--minhash-engine", choices=["rensa", "datatrove"])
    args = parser.parse_args()
    recorded = json.loads(RECORD.read_text())
    with tempfile.TemporaryDirectory() as folder:
        for name in args.recipes:
            now = run(name, args.minhash_engine, Path(folder))
            if args.check:
                same = {k: now.get(k) for k in recorded[name]} == recorded[name]
                print(f"{name}: {'same as recorded' if same else 'DIFFERENT'}")
                for key in recorded[name]:
                    if now.get(key) != recorded[name][key]:
                        print(f"  {key}: {recorded[name][key]['rows']} -> {now.get(key, {}).get('rows')} rows")
            else:
                recorded[name] = now
                print(f"{name}: recorded")
    if not args.check:
        RECORD.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()

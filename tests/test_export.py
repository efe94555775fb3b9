"""`curate export` writes records every trainer reads the same way: TRL's SFTTrainer trains an exported
prompt-completion record on exactly the tokens and loss mask curate's own fine-tuning uses; a mixed step exports
one file (or one split) per kind of row, or fails naming the rows that do not fit; `--format hf` is a folder
`load_from_disk` opens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curate.data.errors import CurateError
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from curate.inspect.export import export_step
from tests.cli_runner import curate
from tests.lm_fixtures import read_records, train_math_lm

GSM = read_records("finetune_gsm8k.jsonl")[:12]
WEB = read_records("heuristics_c4_web_sample.jsonl")[:8]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory) -> Path:
    """A step of 12 instruction pairs (GSM8K) and 8 web documents."""
    tmp = tmp_path_factory.mktemp("export")
    config = {"name": "export", "output": str(tmp / "run"), "engine": {"prefect": False},
              "inputs": [{"path": write_jsonl(tmp / "gsm.jsonl", [{k: r[k] for k in ("prompt", "response")}
                                                                   for r in GSM]), "source": "gsm8k"},
                         {"path": write_jsonl(tmp / "web.jsonl", [{"text": r["text"]} for r in WEB]),
                          "source": "web"}],
              "stages": [{"normalize": {}}]}
    run_pipeline(parse_config(config, base_dir=tmp))
    return tmp / "run"


def test_trl_trains_an_exported_record_on_curates_tokens(mixed_run, tmp_path):
    import datasets
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curate.models.lm_train import start_token_id
    from curate.models.sft_data import encode_examples

    folder = train_math_lm(tmp_path / "lm", steps=2)
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
    out, shape, rows = export_step(mixed_run, "normalize", tmp_path / "pc", "jsonl")
    assert shape == "prompt-completion+text" and rows == 20
    records = [json.loads(line) for line in (out / "normalize.prompt-completion.jsonl").read_text().splitlines()]
    assert len(records) == 12 and all(r["prompt"].endswith("\n\n") for r in records)
    trainer = trl.SFTTrainer(model=model, processing_class=tokenizer,
                             train_dataset=datasets.Dataset.from_list(records),
                             args=trl.SFTConfig(output_dir=str(tmp_path / "trl"), max_length=1024, report_to=[],
                                                use_cpu=True))
    ours, _ = encode_examples([{"prompt": r["prompt"].removesuffix("\n\n"), "response": r["completion"]}
                               for r in records], tokenizer, 1024, start_token_id(tokenizer), tokenizer.eos_token_id)
    assert len(trainer.train_dataset) == len(ours) == 12
    for example, theirs in zip(ours, trainer.train_dataset, strict=True):
        # curate puts its start token in front (input only); the rest is the same tokens and the same loss mask
        assert example.ids[1:].tolist() == theirs["input_ids"]
        assert example.supervised[1:].tolist() == (np.array(theirs["labels"]) != -100).tolist()


def test_a_mixed_step_exports_per_kind_or_says_which_rows_do_not_fit(mixed_run, tmp_path):
    import datasets

    with pytest.raises(CurateError, match=r"8 of 20 rows have none \(ids .*\)"):
        export_step(mixed_run, "normalize", tmp_path / "x", "jsonl", "prompt-completion")
    out, _, _ = export_step(mixed_run, "normalize", tmp_path / "pq", "parquet")
    loaded = {kind: datasets.load_dataset("parquet", split="train",
                                          data_files=sorted(str(p) for p in out.glob(f"normalize.{kind}-*")))
              for kind in ("prompt-completion", "text")}
    assert {k: (len(v), v.column_names) for k, v in loaded.items()} == {
        "prompt-completion": (12, ["prompt", "completion"]), "text": (8, ["text"])}
    # hf: the folder itself is what load_from_disk opens (a split per kind of row)
    shown = curate("export", str(mixed_run), "normalize", "-o", str(tmp_path / "hf"), "--format", "hf", cwd=tmp_path)
    assert "prompt-completion+text" in shown.stdout
    both = datasets.load_from_disk(str(tmp_path / "hf"))
    assert {k: len(v) for k, v in both.items()} == {"prompt_completion": 12, "text": 8}
    # a folder of other files is never written into
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep")
    refused = curate("export", str(mixed_run), "normalize", "-o", str(tmp_path / "busy"), "--format", "hf",
                     cwd=tmp_path, check=False)
    assert refused.returncode != 0 and "new or empty folder" in refused.stdout + refused.stderr
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["mine.txt"]

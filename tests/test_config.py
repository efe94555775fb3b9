"""Config validation: every problem reported before any work, naming key, value and what is allowed."""

from __future__ import annotations

import pytest

from curate.data.errors import ConfigError
from curate.engine.config import load_config, parse_config


@pytest.fixture
def base(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"text": "hello world"}\n')
    return {"name": "t", "inputs": [{"path": "in.jsonl"}], "output": "out"}


def problems(data, tmp_path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, base_dir=tmp_path)
    return info.value.problems


def test_valid_config_resolves_paths_and_labels(base, tmp_path):
    cfg = parse_config({**base, "stages": ["normalize", {"language": {"languages": ["en", "de"]}},
                                           {"normalize": {"unicode": "NFKC"}}]}, base_dir=tmp_path)
    assert cfg.output_dir() == tmp_path / "out"
    assert [s.label for s in cfg.stage_specs()] == ["normalize", "language", "normalize_2"]
    assert cfg.stage_specs()[1].params["languages"] == ["en", "de"]
    assert cfg.stage_specs()[1].params["min_confidence"] == 0.5  # defaults are filled in


def test_unknown_stage_lists_allowed_names(base, tmp_path):
    (msg,) = problems({**base, "stages": [{"heuristix": {}}]}, tmp_path)
    assert "stages[0]: unknown stage 'heuristix'; allowed:" in msg and "normalize" in msg


def test_unknown_and_bad_params_name_key_value_and_allowed(base, tmp_path):
    got = problems({**base, "stages": [{"language": {"min_confidense": 0.5}},
                                       {"language": {"min_confidence": 2}}]}, tmp_path)
    assert got[0].startswith("stages[0].language.min_confidense: unknown key; allowed: label, from, languages, "
                             "min_confidence")
    assert got[1].startswith("stages[1].language.min_confidence:") and "(got 2)" in got[1]


def test_top_level_and_input_keys(base, tmp_path):
    got = problems({**base, "outptu": "x", "inputs": [{"path": "in.jsonl", "fields": {"txt": "body"}}],
                    "engine": {"workers": 0}}, tmp_path)
    text = "\n".join(got)
    assert "outptu: unknown key; allowed: name, inputs, target, heldout, output, engine, stages, plugins" in text
    assert "inputs.0.fields: Value error, unknown field name(s) ['txt']" in text
    assert "engine.workers:" in text and "(got 0)" in text


def test_missing_files_and_yaml_errors(base, tmp_path):
    got = problems({**base, "target": {"path": "missing/*.jsonl"}}, tmp_path)
    assert got == [f"target.path: no file or folder matches 'missing/*.jsonl' (looked in {tmp_path}/missing/*.jsonl)"]
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")

"""What a config says about its data: inputs, targets and held-out rows (`inputs:`, `target:`, `heldout:`). The io
layer reads files by these; the engine's config (`curate.engine.config`) is made of them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

FIELD_KEYS = ("id", "text", "prompt", "response", "answer", "messages")
FORMATS = ("auto", "jsonl", "json", "parquet", "csv", "arrow", "hf")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(Strict):
    """One input: files (a path, a glob or a list), how to read them and how to map their fields."""

    path: str | list[str]
    fields: dict[str, str] = Field(default_factory=dict)
    source: str | None = None
    format: Literal["auto", "jsonl", "json", "parquet", "csv", "arrow", "hf"] = "auto"
    split: str | None = None  # a split of a Hugging Face DatasetDict folder; default: all splits

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = [k for k in value if k not in FIELD_KEYS]
        if unknown:
            raise ValueError(f"unknown field name(s) {unknown}; allowed: {list(FIELD_KEYS)}")
        return value

    def paths(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)


class TargetSpec(InputSpec):
    """One target dataset: an input, with a `name` (default `target`, or `target_<i>` in a list) and a `weight`
    (its share when there are several: GOT-D's target mass, DSIR's mixture, CoLoR-Filter's union)."""

    name: str | None = None
    weight: float = Field(1.0, gt=0)


class HeldoutSplit(Strict):
    """`heldout: {split_from_target: 0.3, seed: 0}`: hold out a seeded share of the target's rows."""

    split_from_target: float = Field(gt=0, lt=1)
    seed: int = 0


def _heldout_kind(value: Any) -> str:
    """Which form a `heldout:` value has: rows of its own (`path: ...`) or a split of the target."""
    split = isinstance(value, HeldoutSplit) or (isinstance(value, dict) and "split_from_target" in value)
    return "split" if split else "input"


HeldoutSpec = Annotated[Annotated[InputSpec, Tag("input")] | Annotated[HeldoutSplit, Tag("split")],
                        Discriminator(_heldout_kind)]

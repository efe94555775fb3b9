"""What every generator shares: sampling settings, a completion, the generator interface, per-prompt seeds.

A generator turns prompts into `n` completions each. Two back ends implement it: a local Hugging Face causal LM
(`curate.models.generation.local`) and an OpenAI-compatible HTTP endpoint (`curate.models.generation.endpoint`).
Results are handed back per prompt as they are ready (`on_result`), so callers can store them at once (`ResponseStore`).

Seeds are per prompt (`prompt_seed(seed, key)`), not per batch: a prompt's samples do not depend on which other
prompts were generated with it, so a resumed run samples what an uninterrupted one would have (on a local model up
to float rounding between batch shapes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import xxhash
from pydantic import BaseModel, ConfigDict, Field

OnResult = Callable[[int, list["Completion"]], None]


class Sampling(BaseModel):
    """How to sample: `n` completions per prompt; `temperature` 0 is greedy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(1, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(256, ge=1)
    stop: tuple[str, ...] = ()
    seed: int = 0


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: int | None = None  # new tokens generated (None when the server does not say)
    finish: Literal["stop", "length"] | str = "stop"

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "tokens": self.tokens, "finish": self.finish}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Completion:
        return cls(data["text"], data.get("tokens"), data.get("finish", "stop"))


class Generator(Protocol):
    """Prompts in, completions out. `keys` name the prompts (their seeds derive from them); `on_result(i, ...)` is
    called once per prompt, from any thread, as soon as its completions are ready."""

    name: str

    def identity(self) -> dict[str, Any]:
        """What decides the outputs besides the prompts and the sampling (model content hash, endpoint and model
        name); never a secret."""

    def generate(self, prompts: Sequence[str], sampling: Sampling, keys: Sequence[str] | None = None,
                 on_result: OnResult | None = None) -> list[list[Completion]]: ...

    def option_logprobs(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        """Per prompt, the log-probability of each option (a short string such as "A") as the next token."""


def prompt_seed(seed: int, key: str) -> int:
    """A prompt's own seed (31 bits: servers take a signed int)."""
    return xxhash.xxh64_intdigest(key.encode("utf-8", "surrogatepass"), seed) & 0x7FFF_FFFF


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the first stop string (excluded), and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)

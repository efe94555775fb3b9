"""Generators: one interface (`Generator`), two back ends (a local causal LM, an OpenAI-compatible endpoint), and a
store that keeps every prompt's completions as they arrive (`ResponseStore`, `generate_stored`).

Stages name their generator with a `GeneratorRef`: `model:` (a local folder or hub id), `endpoint:` (an
OpenAI-compatible server), or `model_from:` (the label of a `finetune` step of the run).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from curate.models.generation.endpoint import EndpointGenerator, EndpointSpec
from curate.models.generation.sampling import Completion, Generator, Sampling, prompt_seed
from curate.models.generation.store import ResponseStore, generate_stored

__all__ = ["Completion", "EndpointGenerator", "EndpointSpec", "Generator", "GeneratorRef", "ResponseStore",
           "Sampling", "generate_stored", "open_generator", "prompt_seed"]


class GeneratorRef(BaseModel):
    """Which LM generates: exactly one of `model`, `endpoint`, `model_from`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = None  # a local folder or a hub id
    endpoint: EndpointSpec | None = None
    model_from: str | None = None  # the label of a `finetune` step of the run
    device: str = "auto"  # local models
    batch_tokens: int = Field(16384, ge=64)  # local models: tokens per batch (rows x (prompt + new tokens))

    @model_validator(mode="after")
    def _one(self) -> GeneratorRef:
        given = [k for k in ("model", "endpoint", "model_from") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"name exactly one of model (a folder or hub id), endpoint (an OpenAI-compatible "
                             f"server) or model_from (a finetune step's label); got {given or 'none'}")
        return self

    def identity(self) -> dict[str, Any]:
        """What the fingerprint needs (the model's content is added by the stage that knows its path)."""
        if self.endpoint is not None:
            return {"endpoint": {"base_url": self.endpoint.base_url, "model": self.endpoint.model,
                                 "chat": self.endpoint.chat}}
        return {"model": self.model, "model_from": self.model_from}


def open_generator(ref: GeneratorRef, model_path: str | None = None) -> Generator:
    """The generator a ref names; `model_path`: the folder a `model_from` step resolved to."""
    if ref.endpoint is not None:
        return EndpointGenerator(ref.endpoint)
    from curate.models.generation.local import LocalGenerator

    return LocalGenerator(model_path or ref.model, device=ref.device, batch_tokens=ref.batch_tokens)

"""`finetune`: train a causal LM on the step's input (a mixture, or any step) and measure held-out loss.

An artifact stage: it writes a model, not rows, into the run's `models/<label>/` (a Hugging Face folder;
with LoRA the adapter, and `merged/` with `lora.merge: true`), with `metrics.json` (training loss per step, the
held-out loss curve) and a manifest listing every file with its sha256. Its parameters are
`curate.models.finetune.FinetuneConfig`'s; the held-out rows are the run's `heldout:` (by default 30% split from
the target), so the model is measured on rows no selection stage read. An interrupted step resumes from its last
checkpoint (`save_every`). Its SQL view is its input: the rows it was trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curate.data.columns import TRAINING_COLUMNS
from curate.methods.leaks import Leak, act_on, find_leaks
from curate.models.finetune import FinetuneConfig, finetune
from curate.models.locate import named_model_identity
from curate.stages.base import ArtifactStage, Params, Resources, StageContext, register


class FinetuneParams(FinetuneConfig, Params):
    """The fine-tuning configuration (see `FinetuneConfig`) as stage parameters, and what to do with training rows
    that repeat held-out rows (`leak`, `curate.methods.leaks`)."""

    leak: Leak = "exclude"


@register
class Finetune(ArtifactStage):
    name = "finetune"
    exclusive = True  # trains with torch's process-wide random state (curate.engine.schedule)
    Params = FinetuneParams
    needs = ("id", "text")
    uses = ("prompt", "response", "messages")

    def configure(self) -> None:
        device = self.params.device
        self.resources = Resources(cpus=1, gpus=1 if device.startswith("cuda") else 0, memory_gb=4.0)

    def samples(self) -> tuple[str, ...]:
        return ("heldout",)

    def models(self) -> dict[str, str]:
        return {"model": self.params.model} if self.params.model else {}

    def files(self) -> dict[str, str]:
        return {"tokenizer": self.params.tokenizer} if self.params.tokenizer else {}

    def fingerprint_extra(self) -> dict[str, Any]:
        return {"model": named_model_identity(self.params.model)} if self.params.model else {}

    def build(self, context: StageContext, out_dir: Path) -> dict[str, Any]:
        columns = [c for c in TRAINING_COLUMNS if c in context.input.schema.names]
        table = context.input.to_table(columns=columns)
        heldout, leak = None, None
        if context.heldout is not None:
            held_columns = [c for c in TRAINING_COLUMNS if c in context.heldout.schema.names]
            heldout = context.heldout.to_table(columns=held_columns).to_pylist()
            check = find_leaks({context.input_labels[0] if context.input_labels else "input": context.input},
                               context.heldout)
            act_on(check, self.params.leak, context.label)
            if self.params.leak == "exclude" and check.rows():
                keep = np.ones(table.num_rows, bool)
                keep[next(iter(check.positions.values()))] = False
                table = table.filter(pa.array(keep))
            leak = check.record(self.params.leak)
        config = FinetuneConfig.model_validate(self.params.model_dump(exclude={"leak"}))
        metrics = finetune(table.to_pylist(), out_dir, config, heldout=heldout, name=context.label)
        return {**metrics, "leak": leak} if leak is not None else metrics

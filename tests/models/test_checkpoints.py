"""A training checkpoint never runs code when loaded: `torch.load(weights_only=True)` refuses a planted pickle (a run
folder copied from someone else is enough to plant one), and a real checkpoint still round-trips."""

from __future__ import annotations

import pickle

import pytest
import torch

from curate.data.errors import CurateError
from curate.models.train_loop import Checkpoints


class Planted:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling it would create the marker file


def test_a_planted_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    with open(folder / "step-000010.pt", "wb") as f:
        pickle.dump({"signature": "s", "step": 10, "payload": Planted(str(marker))}, f)
    with pytest.raises(CurateError, match="loads no such file"):
        Checkpoints(folder, "s").load()
    assert not marker.exists()


def test_a_real_checkpoint_round_trips(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    saved = Checkpoints(tmp_path / "c", "sig")
    saved.save({"step": 5, "model": {n: p.detach().clone() for n, p in model.named_parameters()},
                "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), "cuda_rng": None,
                "losses": [1.5, 1.25], "curve": [{"step": 0, "tokens": 0, "loss": 2.0}], "tokens": 10, "scored": 4,
                "seconds": 0.5})
    state = Checkpoints(tmp_path / "c", "sig").load()
    assert state["step"] == 5 and state["losses"] == [1.5, 1.25]
    optimizer.load_state_dict(state["optimizer"])
    assert torch.equal(state["model"]["weight"], model.weight.detach())

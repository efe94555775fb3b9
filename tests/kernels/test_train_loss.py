"""The training loss `token_loss_sum` (kernels/train_loss.py): loss and gradients against full-logits cross
entropy, on the chunked path (several chunks, the last one short) and on the one-chunk path, with ignored labels.

Tolerances:
- float32 on CPU: 1e-5 absolute and relative. The chunked path forms the same logits and softmax, chunk by chunk;
  only the order of the sums differs (the loss is a sum of ~50 NLLs of about 7, so relative 1e-5 is ~4e-3).
- bf16 on CUDA against the fp32 reference on the same (bf16-exact) values: the logits are rounded or accumulated
  differently at ~2^-8 of their size, so the loss within 1e-2 relative and the gradients within 5% of the largest
  reference gradient.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from curate.kernels.common import IGNORE_INDEX
from curate.kernels.train_loss import chunk_rows, token_loss_sum, token_loss_sum_reference

from tests.kernels.head_inputs import head_inputs

H, V = 32, 1000
ROWS = 16
CHUNKED = ROWS * V  # tile_elements for 16-row chunks at vocab V
ONE_CHUNK = 1 << 24  # the default: one chunk for these sizes


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: an OpenMP team costs more than it saves on them, and on a shared CPU it waits for
    descheduled threads at every op (0.13 s a call instead of 0.01 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_inputs(n: int, h: int = H, v: int = V, bias: bool = True, ignore_frac: float = 0.25, seed: int = 0,
                dtype: torch.dtype = torch.float32, device: str = "cpu") -> dict[str, torch.Tensor | None]:
    """Leaf tensors that require grad, logits of a realistic spread (std ~2), a fraction of ignored labels."""
    x = head_inputs(n, h, v, bias, ignore_frac, seed)

    def leaf(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=dtype).requires_grad_()

    return {"hidden": leaf(x["hidden"]), "weight": leaf(x["weight"]), "labels": x["labels"].to(device),
            "bias": None if x["bias"] is None else leaf(x["bias"])}


def detached_copy(x: dict[str, torch.Tensor | None], dtype: torch.dtype | None = None,
                  device: str | None = None) -> dict[str, torch.Tensor | None]:
    """The same values as new leaves (so that each loss gets its own gradients)."""
    out = {}
    for k, t in x.items():
        if t is None or not t.is_floating_point():
            out[k] = t if t is None else t.to(device or t.device)
        else:
            out[k] = t.detach().to(device=device or t.device, dtype=dtype or t.dtype).requires_grad_()
    return out


def full_logits_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
    """The answer, written out: all N x V logits in fp32, then summed cross entropy over the scored labels."""
    logits = (hidden @ weight.T).float()
    if bias is not None:
        logits = logits + bias.float()
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")


def grads(x: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor | None]:
    return {k: x[k].grad for k in ("hidden", "weight", "bias") if x[k] is not None}


class Spy:
    """Records the rows of every chunk whose logits the fused loss forms."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import curate.kernels.train_loss as module

        self.chunk_sizes: list[int] = []
        original = module._chunk_logits

        def spy(h, weight, bias):
            self.chunk_sizes.append(h.shape[0])
            return original(h, weight, bias)

        monkeypatch.setattr(module, "_chunk_logits", spy)


def run_loss(x: dict[str, torch.Tensor | None], tile_elements: int) -> torch.Tensor:
    loss = token_loss_sum(x["hidden"], x["weight"], x["labels"], x["bias"], tile_elements=tile_elements)
    loss.backward()
    return loss


# ------------------------------------------------------------------------------- (i) equal to full logits


@pytest.mark.parametrize("n,tile,chunks", [(70, CHUNKED, 5), (64, CHUNKED, 4), (64, ONE_CHUNK, 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_full_logits(n: int, tile: int, chunks: int, bias: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """70 rows in 16-row chunks (the last one has 6), 64 rows in 4 whole chunks, and one chunk; ignored labels."""
    x = make_inputs(n, bias=bias, seed=n + tile)
    assert (x["labels"] == IGNORE_INDEX).any() and (x["labels"] != IGNORE_INDEX).any()
    ref = detached_copy(x)
    expected = full_logits_loss(**ref)
    expected.backward()
    spy = Spy(monkeypatch)

    loss = run_loss(x, tile)

    assert loss.shape == () and loss.dtype == torch.float32
    if chunks > 1:
        assert chunk_rows(V, tile) == ROWS and -(-n // ROWS) == chunks
    else:
        assert chunk_rows(V, tile) >= n
    # the path the sizes were chosen for is the one taken: 16-row chunks (the last one short), or none
    assert spy.chunk_sizes == ([ROWS] * (n // ROWS) + ([n % ROWS] if n % ROWS else []) if chunks > 1 else [])
    tol = {"atol": 1e-5, "rtol": 1e-5}
    torch.testing.assert_close(loss.detach(), expected.detach(), **tol)
    torch.testing.assert_close(loss.detach(), token_loss_sum_reference(**detached_copy(x)).detach(), **tol)
    got, want = grads(x), grads(ref)
    assert got.keys() == want.keys() == ({"hidden", "weight", "bias"} if bias else {"hidden", "weight"})
    for k in want:
        assert got[k] is not None and got[k].shape == want[k].shape, k
        torch.testing.assert_close(got[k], want[k], **tol, msg=lambda m, k=k: f"grad of {k}: {m}")


def test_gradients_accumulate_across_calls() -> None:
    """Two micro-batches' losses backpropagated one after the other add up to the gradient of the whole batch."""
    x = make_inputs(64, seed=3)
    whole = detached_copy(x)
    full_logits_loss(**whole).backward()
    for part in (slice(0, 40), slice(40, 64)):
        token_loss_sum(x["hidden"][part], x["weight"], x["labels"][part], x["bias"], tile_elements=CHUNKED).backward()
    for k, want in grads(whole).items():
        torch.testing.assert_close(grads(x)[k], want, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ (ii) ignored positions, (iii) all ignored


@pytest.mark.parametrize("tile", [CHUNKED, ONE_CHUNK])
def test_ignored_positions_get_zero_gradient(tile: int) -> None:
    x = make_inputs(70, ignore_frac=0.4, seed=5)
    ignored = x["labels"] == IGNORE_INDEX
    assert 0 < int(ignored.sum()) < 70
    run_loss(x, tile)
    assert (x["hidden"].grad[ignored] == 0).all()
    assert (x["hidden"].grad[~ignored].abs().sum(1) > 0).all()


@pytest.mark.parametrize("tile", [CHUNKED, ONE_CHUNK])
def test_all_ignored_gives_zero_loss_and_gradients(tile: int) -> None:
    x = make_inputs(70, ignore_frac=1.0, seed=6)
    assert (x["labels"] == IGNORE_INDEX).all()
    loss = run_loss(x, tile)
    assert loss.shape == () and torch.isfinite(loss) and loss.item() == 0.0
    for k, g in grads(x).items():
        assert g is not None and g.shape == x[k].shape, k
        assert torch.isfinite(g).all() and (g == 0).all(), k


# ---------------------------------------------------------------------------------------- (iv) empty input


@pytest.mark.parametrize("tile", [CHUNKED, ONE_CHUNK])
def test_empty_input(tile: int) -> None:
    """0 rows (a micro-batch without scored tokens): loss 0, a backward that adds nothing."""
    x = make_inputs(0, seed=7)
    loss = token_loss_sum(x["hidden"], x["weight"], x["labels"], x["bias"], tile_elements=tile)
    assert loss.shape == () and loss.item() == 0.0
    loss.backward()
    assert x["hidden"].grad is not None and x["hidden"].grad.shape == (0, H)
    for k in ("weight", "bias"):
        g = x[k].grad  # None (not in the graph) or zeros: either way the step's accumulated gradient is unchanged
        assert g is None or (g.shape == x[k].shape and (g == 0).all()), k


# ----------------------------------------------------------------------------------------- 16-bit inputs


@pytest.mark.parametrize("n,tile", [(70, CHUNKED), (70, ONE_CHUNK), (0, CHUNKED)], ids=["chunked", "one-chunk",
                                                                                       "empty"])
def test_half_precision_loss_is_float32(n: int, tile: int) -> None:
    """The documented contract: "a 0-d tensor (float32 for half-precision inputs)". A bf16 loss keeps 8 significant
    bits: a sum of thousands of NLLs is rounded to a multiple of 256 at 45,000 (up to 0.3%)."""
    x = make_inputs(n, dtype=torch.bfloat16, seed=8)
    loss = token_loss_sum(x["hidden"], x["weight"], x["labels"], x["bias"], tile_elements=tile)
    assert loss.shape == ()
    assert loss.dtype == torch.float32


# ------------------------------------------------------------------------------------------ (v) CUDA, bf16


@pytest.mark.gpu
@pytest.mark.parametrize("tile", [64 * 8192, ONE_CHUNK])
def test_cuda_bf16_matches_fp32_reference(tile: int) -> None:
    """bf16 on CUDA (8 chunks of 64 rows, and one chunk) against full logits in fp32 on the same values."""
    v, h = 8192, 256
    x = make_inputs(512, h=h, v=v, dtype=torch.bfloat16, device="cuda", seed=9)
    ref = detached_copy(x, dtype=torch.float32, device="cpu")  # bf16 -> fp32 is exact: the same values
    expected = full_logits_loss(**ref)
    expected.backward()

    loss = token_loss_sum(x["hidden"], x["weight"], x["labels"], x["bias"], tile_elements=tile)
    loss.backward()
    torch.cuda.synchronize()

    assert loss.shape == () and torch.isfinite(loss)
    torch.testing.assert_close(loss.detach().float().cpu(), expected.detach(), atol=0.0, rtol=1e-2)
    ignored = x["labels"].cpu() == IGNORE_INDEX
    for k, want in grads(ref).items():
        got = x[k].grad
        assert got is not None and got.dtype == torch.bfloat16 and got.shape == want.shape, k
        got = got.float().cpu()
        assert torch.isfinite(got).all(), k
        torch.testing.assert_close(got, want, atol=0.05 * float(want.abs().max()), rtol=0.05,
                                   msg=lambda m, k=k: f"grad of {k}: {m}")
    assert (x["hidden"].grad.cpu()[ignored] == 0).all()

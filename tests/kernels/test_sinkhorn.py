"""Sinkhorn half-step reduction (docs/methods.md §5.7): the torch reference against a dense computation, the Triton
kernel against the reference (on CPU under Triton's interpreter, in one subprocess; on CUDA when present), its
lowering for sm_80/sm_90, and the reference's memory (one tile, never the M x N cost).

Tolerances: float64 reference vs dense float64: 1e-10 (only the summation order differs). float32 (reference or
kernel) vs dense float64: 1e-6 relative to max|z|, z = (g - C)/eps, the logsumexp's inputs, whose float32 rounding
(~6e-8 relative) is what moves the result.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from curate.kernels.sinkhorn import logsumexp_cost, logsumexp_cost_reference, sinkhorn_update

from tests.kernels.script_runner import child_main, compile_for_gpu, peak_rss_growth, run_script


def make_inputs(m: int, n: int, d: int, scale: float = 1.0, seed: int = 0,
                dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"x": (torch.randn(m, d, generator=g) * scale).to(dtype),
            "y": (torch.randn(n, d, generator=g) * scale).to(dtype),
            "potential": (torch.randn(n, generator=g) * scale).to(dtype)}


def dense(x: torch.Tensor, y: torch.Tensor, potential: torch.Tensor, eps: float) -> torch.Tensor:
    """The stored-cost answer in float64: logsumexp over (g_j - ||x_i - y_j||²)/eps."""
    cost = ((x.double()[:, None, :] - y.double()[None, :, :]) ** 2).sum(-1)
    return torch.logsumexp((potential.double()[None, :] - cost) / eps, dim=1)


def z_scale(x: torch.Tensor, y: torch.Tensor, potential: torch.Tensor, eps: float) -> float:
    cost = ((x.double()[:, None, :] - y.double()[None, :, :]) ** 2).sum(-1)
    return float(((potential.double()[None, :] - cost) / eps).abs().max())


@pytest.mark.parametrize("m,n,block", [(37, 53, 16), (37, 53, 2000), (64, 64, 32), (1, 300, 7), (200, 1, 64)])
@pytest.mark.parametrize("eps", [0.05, 1.0])
def test_reference_matches_dense(m: int, n: int, block: int, eps: float) -> None:
    """Tiles that divide the sizes and tiles that do not, one row, one column, a tile larger than both."""
    x = make_inputs(m, n, 12, seed=m + n)
    x64 = {k: v.double() for k, v in x.items()}
    torch.testing.assert_close(logsumexp_cost_reference(**x64, eps=eps, block=block), dense(**x, eps=eps),
                               atol=1e-10, rtol=1e-12)
    got = logsumexp_cost_reference(**x, eps=eps, block=block)
    assert got.dtype == torch.float32
    bound = 1e-6 * z_scale(**x, eps=eps)
    assert (got.double() - dense(**x, eps=eps)).abs().max().item() <= bound


def test_update_is_the_half_step_formula() -> None:
    """f_i = eps·log a_i - eps·logsumexp_j((g_j - C_ij)/eps), and its transpose with the roles swapped."""
    x = make_inputs(20, 30, 5, seed=3, dtype=torch.float64)
    log_a = torch.log(torch.softmax(torch.randn(20, dtype=torch.float64), 0))
    eps = 0.3
    f = sinkhorn_update(x["x"], x["y"], x["potential"], log_a, eps, block=8)
    torch.testing.assert_close(f, eps * log_a - eps * dense(**x, eps=eps), atol=1e-10, rtol=0)
    log_b = torch.full((30,), -math.log(30.0), dtype=torch.float64)
    g = sinkhorn_update(x["y"], x["x"], f, log_b, eps, block=8)
    torch.testing.assert_close(g, eps * log_b - eps * dense(x["y"], x["x"], f, eps), atol=1e-10, rtol=0)


def test_reference_edge_cases() -> None:
    """No columns: -inf; a -inf potential on a whole first tile (exp(-inf - -inf) must not be NaN); a far-away
    point whose every z underflows exp in float32 stays finite through the running max."""
    x = make_inputs(5, 0, 4)
    assert torch.isneginf(logsumexp_cost_reference(**x, eps=0.1)).all()
    x = make_inputs(6, 40, 4, seed=1)
    x["potential"][:16] = float("-inf")
    got = logsumexp_cost_reference(**x, eps=0.5, block=16)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), dense(**x, eps=0.5), atol=1e-4, rtol=1e-6)
    x = make_inputs(3, 10, 4, seed=2)
    x["x"][0] += 100.0  # C ~ 4e4: z ~ -4e5, exp underflows without the shift
    got = logsumexp_cost_reference(**x, eps=0.1)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), dense(**x, eps=0.1), rtol=1e-6, atol=0)


def test_dispatch_on_cpu_is_the_reference() -> None:
    x = make_inputs(10, 17, 6)
    assert torch.equal(logsumexp_cost(**x, eps=0.2, block=8), logsumexp_cost_reference(**x, eps=0.2, block=8))


def test_bad_shapes_are_errors() -> None:
    x = make_inputs(4, 5, 3)
    with pytest.raises(ValueError, match="potential"):
        logsumexp_cost_reference(x["x"], x["y"], x["potential"][:4], 0.1)
    with pytest.raises(ValueError, match=r"\(M, d\)"):
        logsumexp_cost_reference(x["x"], x["y"][:, :2], x["potential"], 0.1)
    with pytest.raises(TypeError):
        logsumexp_cost_reference(x["x"].half(), x["y"].half(), x["potential"], 0.1)


def test_reference_memory_is_one_tile() -> None:
    """At M x N = 1000 x 100k the reference's peak-RSS growth is about one tile, far below the 400 MB of a stored
    float32 cost: measured in a fresh subprocess, with the stored cost in the same subprocess as a control."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak RSS")
    out = run_script(__file__, ["--memory"], env={"MALLOC_MMAP_THRESHOLD_": "131072"}, timeout=300)
    cost_bytes = out["m"] * out["n"] * 4
    # the control: the meter sees the stored cost, at least a quarter of it (freed heap is reused and Linux updates the
    # high-water RSS lazily: measured 0.42-1.0 of it), 25 times the tile bound below
    assert out["stored_delta"] >= 0.25 * cost_bytes, out
    assert out["ref_delta"] <= 4 * out["block"] ** 2 * 4 + 8 * (out["m"] + out["n"]) * 4, out
    assert out["max_abs_err"] <= 1e-3, out


# ----------------------------------------------------------------------------- Triton under the interpreter


def _interpret_cases() -> dict[str, dict[str, Any]]:
    """Small cases (the interpreter runs each program in numpy). `kwargs` go to logsumexp_cost_triton."""
    cases: dict[str, dict[str, Any]] = {
        "default_blocks": {"x": make_inputs(70, 133, 40, seed=1), "eps": 0.5, "kwargs": {}},
        # several row blocks, 3 column splits (the last short), d < BLOCK_D and not a multiple of it
        "splits_small_blocks": {"x": make_inputs(70, 133, 24, seed=2), "eps": 0.1,
                                "kwargs": {"splits": 3, "blocks": (16, 32, 16)}},
        "one_row": {"x": make_inputs(1, 50, 8, seed=3), "eps": 1.0, "kwargs": {"blocks": (16, 16, 16)}},
        "one_column": {"x": make_inputs(40, 1, 8, seed=4), "eps": 1.0, "kwargs": {"blocks": (16, 16, 16)}},
        "tiny_eps": {"x": make_inputs(20, 45, 16, scale=0.3, seed=5), "eps": 0.01,
                     "kwargs": {"blocks": (16, 16, 16), "splits": 2}},
    }
    x = make_inputs(20, 48, 16, seed=6)
    x["potential"][:16] = float("-inf")  # the whole first tile: the NaN guard
    cases["neg_inf_first_tile"] = {"x": x, "eps": 0.5, "kwargs": {"blocks": (16, 16, 16)}}
    x = make_inputs(25, 30, 20, seed=7)
    x["x"] = torch.stack([x["x"], torch.zeros_like(x["x"])], 1)[:, 0]  # row stride 40: passed as a view
    x["y"] = torch.cat([x["y"], torch.randn(30, 5)], 1)[:, :20]
    cases["strided_views"] = {"x": x, "eps": 0.5, "kwargs": {"blocks": (16, 16, 16)}}
    return cases


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("triton")
    folder = tmp_path_factory.mktemp("interpret_sinkhorn")
    cases = _interpret_cases()
    torch.save(cases, folder / "cases.pt")
    run_script(__file__, ["--interpret", str(folder)], env={"TRITON_INTERPRET": "1"}, timeout=300)
    return {"cases": cases, "outputs": torch.load(folder / "outputs.pt")}


@pytest.mark.parametrize("name", list(_interpret_cases()))
def test_triton_interpreter_matches_reference(interpreted: dict[str, Any], name: str) -> None:
    case, out = interpreted["cases"][name], interpreted["outputs"][name]
    assert out["interpreted"]  # the child really ran the interpreter
    got = out["lse"]
    x, eps = case["x"], case["eps"]
    assert got.dtype == torch.float32 and got.shape == (x["x"].shape[0],)
    expected = dense(**x, eps=eps)
    bound = 1e-6 * z_scale(**x, eps=eps) + 1e-6
    assert (got.double() - expected).abs().max().item() <= bound
    ref = logsumexp_cost_reference(**x, eps=eps, block=16)
    assert (got - ref).abs().max().item() <= 2 * bound


def test_triton_compiles_for_gpu() -> None:
    """The kernel lowers to a cubin for sm_80 and sm_90 without a GPU (catches what the interpreter forgives)."""
    pytest.importorskip("triton")
    out = run_script(__file__, ["--compile"], env={}, timeout=240)
    assert out["errors"] == [], out["errors"]
    assert len(out["compiled"]) == 2


@pytest.mark.gpu
def test_triton_gpu_matches_reference() -> None:
    from curate.kernels.triton_sinkhorn import logsumexp_cost_triton

    x = {k: v.cuda() for k, v in make_inputs(1000, 50_000, 384, scale=0.05, seed=8).items()}
    got = logsumexp_cost_triton(**x, eps=0.1)
    expected = logsumexp_cost_reference(**{k: v.double() for k, v in x.items()}, eps=0.1)
    torch.testing.assert_close(got.double(), expected, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(logsumexp_cost_triton(**x, eps=0.1, splits=1), got, atol=1e-4, rtol=1e-5)


# ----------------------------------------------------------------------------- subprocess side


def _interpret_main(folder: Path) -> dict[str, Any]:
    from curate.kernels import triton_sinkhorn
    from triton.runtime.interpreter import InterpretedFunction

    interpreted = isinstance(triton_sinkhorn._partial_lse_cost_kernel, InterpretedFunction)
    outputs = {name: {"lse": triton_sinkhorn.logsumexp_cost_triton(**c["x"], eps=c["eps"], **c["kwargs"]),
                      "interpreted": interpreted}
               for name, c in torch.load(folder / "cases.pt").items()}
    torch.save(outputs, folder / "outputs.pt")
    return {"cases": len(outputs)}


def _compile_main() -> dict[str, Any]:
    from curate.kernels.triton_sinkhorn import _partial_lse_cost_kernel

    signature = {"x_ptr": "*fp32", "y_ptr": "*fp32", "xsq_ptr": "*fp32", "ysq_ptr": "*fp32", "pot_ptr": "*fp32",
                 "out_ptr": "*fp32", "m_rows": "i32", "n_rows": "i32", "dim": "i32", "span": "i32",
                 "inv_eps": "fp32", "stride_x": "i32", "stride_y": "i32"}
    constexprs = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_D": 32}
    compiled, errors = [], []
    for capability in (80, 90):
        error = compile_for_gpu(_partial_lse_cost_kernel, signature, constexprs, capability, 4, 2)
        if error:
            errors.append(f"sm_{capability}: {error}")
        else:
            compiled.append(f"sm_{capability}")
    return {"compiled": compiled, "errors": errors}


def _memory_main() -> dict[str, Any]:
    torch.set_num_threads(2)
    m, n, d, block = 1000, 100_000, 8, 512
    x = make_inputs(m, n, d, seed=9)
    torch.ones(64, 64) @ torch.ones(64, 64)  # load the BLAS before the baseline
    # and page in the reference's code and thread pools on a small input: the meter then sees data, not libraries
    logsumexp_cost_reference(x["x"][:64], x["y"][:4 * block], x["potential"][:4 * block], eps=1.0, block=block)
    got, ref_delta = peak_rss_growth(lambda: logsumexp_cost_reference(**x, eps=1.0, block=block))
    stored = lambda: torch.logsumexp(torch.cdist(x["x"], x["y"]).square_().neg_().add_(x["potential"][None, :]), 1)  # noqa: E731
    expected, stored_delta = peak_rss_growth(stored)
    return {"m": m, "n": n, "block": block, "ref_delta": ref_delta, "stored_delta": stored_delta,
            "max_abs_err": (got - expected).abs().max().item()}


if __name__ == "__main__":
    child_main({"--interpret": lambda args: _interpret_main(Path(args[0])), "--compile": lambda args: _compile_main(),
                "--memory": lambda args: _memory_main()})

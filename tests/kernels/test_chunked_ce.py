"""Fused chunked cross-entropy (docs/methods.md §0.2): the torch reference against `F.cross_entropy`, the Triton
kernel against the reference (on CPU under Triton's interpreter, on CUDA when present), memory, `sequence_nll`.

Triton's interpreter is chosen when `@triton.jit` runs (at import of `kernels.triton_ce`, from
`TRITON_INTERPRET`), so the interpreter cases run in ONE subprocess with the variable set: this process never
imports the kernel module in interpreter mode. Run as a script, this file is that subprocess.

Tolerances (absolute, on NLL values of about 4-11):
- reference vs cross_entropy, fp32: 1e-5 (observed ~2e-6; only the summation order differs).
- reference vs cross_entropy, bf16 inputs: 1e-4, where cross_entropy gets the same bf16 matmul upcast to fp32.
- Triton (interpreter) vs reference on the fp32 upcast of the inputs, for fp32/fp16/bf16 inputs: 1e-5. 16-bit to
  fp32 is exact and the kernel accumulates in fp32, so only the summation order differs. (The interpreter
  cannot multiply bf16 tiles, it would multiply their raw bits: the kernel upcasts bf16 tiles to fp32 on CPU
  tensors, so a bf16 `tl.dot` itself is exercised only by the GPU tests.)
- Triton vs the reference on the 16-bit inputs themselves: the reference rounds each logit to bf16/fp16 (the
  matmul's output dtype) and the kernel does not, so the NLL may differ by up to
  2 · u · max|logit| (u = 2^-8 for bf16, 2^-11 for fp16: the logsumexp and the label logit each move by at
  most the largest logit error).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from curate.kernels.chunked_ce import IGNORE_INDEX, sequence_nll, token_nll, token_nll_reference

from tests.kernels.head_inputs import head_inputs
from tests.kernels.script_runner import child_main, compile_for_gpu, peak_rss_growth, run_script

# glibc serves large blocks by mmap and unmaps them when freed, unless its threshold has adapted upwards after
# a free (then freed tiles linger in the heap and the peak RSS sometimes counts two): a fixed threshold keeps
# RSS equal to live memory, so the peak measures what the code holds
FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072"}
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11, torch.float32: 2.0**-24}


def make_inputs(n: int, h: int, v: int, dtype: torch.dtype = torch.float32, bias: bool = True,
                ignore_frac: float = 0.2, seed: int = 0) -> dict[str, Any]:
    """Random LM-head inputs with logits of a realistic spread (std ~2) and a fraction of ignored labels."""
    x = head_inputs(n, h, v, bias, ignore_frac, seed)
    return {k: t if t is None or k == "labels" else t.to(dtype) for k, t in x.items()}


def full_ce(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
            bias: torch.Tensor | None = None) -> torch.Tensor:
    """The full-logits answer: the matmul in the inputs' dtype, upcast, bias in fp32, then cross_entropy."""
    logits = (hidden @ weight.T).float()
    if bias is not None:
        logits = logits + bias.float()
    return F.cross_entropy(logits, labels, reduction="none", ignore_index=IGNORE_INDEX)


def upcast(inputs: dict[str, Any]) -> dict[str, Any]:
    """The same inputs in fp32 (exact for 16-bit floats)."""
    return {k: (t.float() if t is not None and t.is_floating_point() else t) for k, t in inputs.items()}


# ----------------------------------------------------------------------------- reference vs cross_entropy


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-4)])
@pytest.mark.parametrize("v,chunk", [(1003, 100), (1003, 59), (1003, 1003), (1003, 4096), (97, 1), (50257, 4096),
                                     (50257, 1000)])
@pytest.mark.parametrize("bias", [True, False])
def test_reference_matches_cross_entropy(dtype: torch.dtype, atol: float, v: int, chunk: int, bias: bool) -> None:
    """Chunks that divide V (59 · 17 = 1003, V itself) and that do not, chunk 1 (small V), chunk > V; ignored labels."""
    x = make_inputs(24, 40, v, dtype, bias=bias, seed=v + chunk)
    got = token_nll_reference(**x, chunk_size=chunk)
    assert got.dtype == torch.float32 and got.shape == (24,)
    torch.testing.assert_close(got, full_ce(**x), atol=atol, rtol=1e-5)
    ignored = x["labels"] == IGNORE_INDEX
    assert ignored.any() and (got[ignored] == 0).all()


def test_reference_edge_cases() -> None:
    """N = 0, every label ignored, int32 labels, non-contiguous views, and a -inf bias over the whole first
    chunk (the online max starts at -inf there: exp(-inf - -inf) must not turn into NaN)."""
    x = make_inputs(0, 16, 300)
    assert token_nll_reference(**x, chunk_size=64).shape == (0,)

    x = make_inputs(8, 16, 300, ignore_frac=1.0)
    assert (token_nll_reference(**x, chunk_size=64) == 0).all()

    x = make_inputs(16, 16, 300, ignore_frac=0.0)
    expected = full_ce(**x)
    torch.testing.assert_close(token_nll_reference(x["hidden"], x["weight"], x["labels"].int(), x["bias"], 64),
                               expected, atol=1e-5, rtol=1e-5)

    wide = torch.randn(300, 40)
    views = {"hidden": torch.stack([x["hidden"], x["hidden"]], 2).flatten(1)[:, ::2],
             "weight": wide[:, :16].copy_(x["weight"]),
             "labels": torch.stack([x["labels"], x["labels"]], 1)[:, 0], "bias": x["bias"]}
    assert not views["hidden"].is_contiguous() and not views["weight"].is_contiguous()
    torch.testing.assert_close(token_nll_reference(**views, chunk_size=64), expected, atol=1e-5, rtol=1e-5)

    bias = x["bias"].clone()
    bias[:64] = float("-inf")
    x["labels"][x["labels"] < 64] = 100  # a label with a -inf logit has an infinite NLL; keep them finite
    got = token_nll_reference(x["hidden"], x["weight"], x["labels"], bias, chunk_size=64)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, full_ce(x["hidden"], x["weight"], x["labels"], bias), atol=1e-5, rtol=1e-5)


def test_token_nll_on_cpu_is_the_reference() -> None:
    x = make_inputs(10, 16, 257)
    assert torch.equal(token_nll(**x, chunk_size=50), token_nll_reference(**x, chunk_size=50))


def test_sequence_nll() -> None:
    nll = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    for m in (mask, mask.bool(), mask.float()):
        total, mean, count = sequence_nll(nll, m)
        torch.testing.assert_close(total, torch.tensor([5.0, 26.0, 0.0]))
        torch.testing.assert_close(count, torch.tensor([2.0, 4.0, 0.0]))
        torch.testing.assert_close(mean[:2], torch.tensor([2.5, 6.5]))
        assert torch.isnan(mean[2])  # no scored token: NaN, not 0


def test_reference_memory_is_chunk_sized() -> None:
    """Peak memory of the reference at V = 128k is O(N · chunk), not O(N · V): measured as the peak-RSS growth
    of a fresh subprocess (Linux), with the full-logits path in the same subprocess as a control (it must grow
    by at least the logits' size, so the meter is seen to work). Also the results agree."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak RSS")
    out = _run_script(["--memory"], env=FIXED_MALLOC, timeout=240)
    full_bytes = out["n"] * out["v"] * 4
    # the meter sees a (N, V) float32 allocation: at least a quarter of it (Linux updates the high-water RSS lazily,
    # so a fresh clone has measured 0.9-1.0 of it, a busy machine less), many times the one tile asked of the chunks
    assert out["full_delta"] >= 0.25 * full_bytes, out
    # one (N, chunk) fp32 tile (1024 x 4096: 16 MiB; measured ~21 MiB with BLAS scratch), never two, and far
    # from the 512 MiB of (N, V) logits
    assert out["ref_delta"] <= 2 * out["n"] * out["chunk"] * 4, out
    assert out["max_abs_err"] <= 1e-5, out


# ----------------------------------------------------------------------------- Triton under the interpreter


def _interpret_cases() -> dict[str, dict[str, Any]]:
    """Interpreter cases (small: the interpreter runs each program in numpy). `kwargs` go to token_nll_triton."""
    cases: dict[str, dict[str, Any]] = {}
    # default tiles, odd V and H, one split (the CPU default)
    cases["fp32_default_tiles"] = {"x": make_inputs(37, 40, 1003, seed=1), "kwargs": {}}
    # several row blocks, 3 vocabulary splits whose last is short, H < BLOCK_H and H not a multiple of it
    cases["fp32_splits_small_tiles"] = {"x": make_inputs(70, 24, 257, bias=False, seed=2),
                                        "kwargs": {"splits": 3, "blocks": (16, 32, 16)}}
    cases["bf16_bias_2_splits"] = {"x": make_inputs(37, 40, 1003, torch.bfloat16, seed=3), "kwargs": {"splits": 2}}
    cases["fp16_no_bias"] = {"x": make_inputs(20, 48, 300, torch.float16, bias=False, seed=4),
                             "kwargs": {"blocks": (16, 64, 32)}}
    # views: row-strided hidden (kept, stride passed), column-strided hidden (copied), a weight that is the left
    # block of a wider matrix (row stride != H), non-contiguous labels, int32 labels
    x = make_inputs(33, 20, 200, seed=5)
    x["hidden"] = torch.stack([x["hidden"], torch.zeros_like(x["hidden"])], 1)[:, 0]  # row stride 40
    x["weight"] = torch.cat([x["weight"], torch.randn(200, 7)], 1)[:, :20]
    x["labels"] = torch.stack([x["labels"].int(), x["labels"].int()], 1)[:, 1]
    cases["views_int32_labels"] = {"x": x, "kwargs": {"blocks": (16, 64, 16), "splits": 2}}
    x = make_inputs(19, 32, 150, seed=6)
    x["hidden"] = torch.stack([x["hidden"], x["hidden"]], 2).flatten(1)[:, ::2]  # column stride 2
    cases["column_strided_hidden"] = {"x": x, "kwargs": {"blocks": (16, 64, 16)}}
    # -inf bias over the whole first tile (the guard against exp(-inf - -inf))
    x = make_inputs(16, 16, 200, ignore_frac=0.0, seed=7)
    x["bias"][:64] = float("-inf")
    x["labels"][x["labels"] < 64] = 100
    cases["neg_inf_first_tile"] = {"x": x, "kwargs": {"blocks": (16, 64, 16)}}
    # a (B=3, T=12) batch flattened, labels masked by a loss mask with one empty row (for sequence_nll)
    x = make_inputs(36, 24, 130, ignore_frac=0.0, seed=8)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[0, :5] = False  # prompt tokens
    mask[1, 9:] = False  # padding
    mask[2] = False  # nothing scored
    x["labels"] = torch.where(mask.flatten(), x["labels"], IGNORE_INDEX)
    cases["loss_mask"] = {"x": x, "kwargs": {"blocks": (16, 32, 16), "splits": 2}, "mask": mask}
    cases["empty"] = {"x": make_inputs(0, 16, 100, seed=9), "kwargs": {}}
    return cases


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Runs every interpreter case in one subprocess with TRITON_INTERPRET=1; returns cases and outputs."""
    pytest.importorskip("triton")
    folder = tmp_path_factory.mktemp("interpret")
    cases = _interpret_cases()
    torch.save({name: {"x": c["x"], "kwargs": c["kwargs"]} for name, c in cases.items()}, folder / "cases.pt")
    started = time.perf_counter()
    _run_script(["--interpret", str(folder)], env={"TRITON_INTERPRET": "1"}, timeout=300)
    outputs = torch.load(folder / "outputs.pt")
    return {"cases": cases, "outputs": outputs, "seconds": time.perf_counter() - started}


@pytest.mark.parametrize("name", list(_interpret_cases()))
def test_triton_interpreter_matches_reference(interpreted: dict[str, Any], name: str) -> None:
    case, out = interpreted["cases"][name], interpreted["outputs"][name]
    x = case["x"]
    got = out["nll"]
    n = x["hidden"].shape[0]
    assert got.dtype == torch.float32 and got.shape == (n,)
    assert out["interpreted"]  # the child really ran the interpreter, not a compiled kernel
    expected = token_nll_reference(**upcast(x), chunk_size=64)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got[x["labels"] == IGNORE_INDEX] == 0).all()

    dtype = x["hidden"].dtype
    if dtype != torch.float32:
        # against the reference on the 16-bit inputs (logits rounded to 16 bits there): the derived bound
        logits = x["hidden"].float() @ x["weight"].float().T
        bound = 2 * UNIT_ROUNDOFF[dtype] * logits.abs().max().item() + 1e-5
        assert (got - token_nll_reference(**x, chunk_size=64)).abs().max().item() <= bound
    if name == "views_int32_labels":
        assert out["layouts"] == [False, False, False]  # the views reached the kernel as views
    if "mask" in case:
        mask = case["mask"]
        total, mean, count = sequence_nll(got.view(mask.shape), mask)
        ref_total, ref_mean, _ = sequence_nll(expected.view(mask.shape), mask)
        torch.testing.assert_close(total, ref_total, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(count, torch.tensor([7.0, 9.0, 0.0]))
        torch.testing.assert_close(mean, ref_mean, atol=1e-5, rtol=1e-5, equal_nan=True)
        assert torch.isnan(mean[2])


def test_triton_compiles_for_gpu() -> None:
    """The kernel lowers to a cubin for sm_80 and sm_90 with no GPU (Triton's own compiler, in a subprocess):
    catches what the interpreter forgives (globals in jit code, constexpr and dtype errors in tl.dot)."""
    pytest.importorskip("triton")
    out = _run_script(["--compile"], env={"TRITON_DEFAULT_FP_FUSION": "1"}, timeout=240)
    assert out["errors"] == [], out["errors"]
    assert len(out["compiled"]) == 3


# ----------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
def test_triton_gpu_matches_reference(dtype: torch.dtype, bias: bool) -> None:
    from curate.kernels.triton_ce import token_nll_triton

    x = {k: (t.cuda() if t is not None else None) for k, t in make_inputs(3000, 200, 50257, dtype, bias).items()}
    got = token_nll_triton(**x)
    expected = token_nll_reference(**upcast(x), chunk_size=4096)  # cuBLAS fp32 (TF32 off by default)
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=2e-5)
    # one split, or many, agree
    torch.testing.assert_close(token_nll_triton(**x, splits=1), got, atol=1e-5, rtol=1e-6)
    if dtype != torch.float32:
        logits_max = (x["hidden"].float() @ x["weight"].float().T).abs().max().item()
        bound = 2 * UNIT_ROUNDOFF[dtype] * logits_max + 2e-4
        assert (got - token_nll_reference(**x)).abs().max().item() <= bound
    assert (got[x["labels"] == IGNORE_INDEX] == 0).all()


@pytest.mark.gpu
def test_token_nll_dispatches_to_triton_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import curate.kernels.triton_ce as triton_ce

    calls: list[torch.dtype] = []
    original = triton_ce.token_nll_triton

    def recording(hidden: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(hidden.dtype)
        return original(hidden, *args, **kwargs)

    monkeypatch.setattr(triton_ce, "token_nll_triton", recording)
    x = {k: (t.cuda() if t is not None else None) for k, t in make_inputs(100, 64, 1003, torch.bfloat16).items()}
    got = token_nll(**x)
    assert calls == [torch.bfloat16]
    torch.testing.assert_close(got, original(**x))
    x64 = {k: (t.double() if t is not None and t.is_floating_point() else t) for k, t in x.items()}
    token_nll(**x64)  # tl.dot has no float64: the reference takes it
    assert calls == [torch.bfloat16]


@pytest.mark.gpu
def test_triton_gpu_memory_is_not_vocab_sized() -> None:
    """At V = 128k the kernel allocates far less than the (N, V) fp32 logits (outputs and split partials only)."""
    from curate.kernels.triton_ce import token_nll_triton

    x = {k: (t.cuda() if t is not None else None)
         for k, t in make_inputs(4096, 256, 131072, torch.bfloat16).items()}
    token_nll_triton(**x)  # compile first
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    token_nll_triton(**x)
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - base < 4096 * 131072 * 4 / 64


# ----------------------------------------------------------------------------- subprocess side


def _run_script(args: list[str], env: dict[str, str], timeout: int) -> dict[str, Any]:
    return run_script(__file__, args, env, timeout)


def _interpret_main(folder: Path) -> dict[str, Any]:
    """Child: runs the saved cases through token_nll_triton under the interpreter, saves the outputs."""
    assert os.environ.get("TRITON_INTERPRET") == "1"
    from curate.kernels import triton_ce
    from triton.runtime.interpreter import InterpretedFunction

    interpreted = isinstance(triton_ce._partial_lse_kernel, InterpretedFunction)
    outputs = {}
    for name, case in torch.load(folder / "cases.pt").items():
        x = case["x"]
        layouts = [x["hidden"].is_contiguous(), x["weight"].is_contiguous(), x["labels"].is_contiguous()]
        outputs[name] = {"nll": triton_ce.token_nll_triton(**x, **case["kwargs"]), "layouts": layouts,
                         "interpreted": interpreted}
    torch.save(outputs, folder / "outputs.pt")
    return {"cases": len(outputs)}


def _compile_main() -> dict[str, Any]:
    """Child: compiles the kernel for CUDA targets without a GPU."""
    from curate.kernels.triton_ce import _partial_lse_kernel, _tiles

    compiled, errors = [], []
    for capability, dtype, torch_dtype, has_bias, precision in [(90, "bf16", torch.bfloat16, True, "ieee"),
                                                               (80, "fp16", torch.float16, False, "ieee"),
                                                               (90, "fp32", torch.float32, False, "tf32")]:
        block_n, block_v, block_h, num_warps, num_stages = _tiles(torch_dtype)
        signature = {"h_ptr": f"*{dtype}", "w_ptr": f"*{dtype}", "b_ptr": f"*{dtype}", "y_ptr": "*i64",
                     "lse_ptr": "*fp32", "tgt_ptr": "*fp32", "n_rows": "i32", "vocab": "i32", "hidden_size": "i32",
                     "span": "i32", "stride_h": "i32", "stride_w": "i32"}
        constexprs = {"HAS_BIAS": has_bias, "PRECISION": precision, "UPCAST": False, "BLOCK_N": block_n,
                      "BLOCK_V": block_v, "BLOCK_H": block_h}
        error = compile_for_gpu(_partial_lse_kernel, signature, constexprs, capability, num_warps, num_stages)
        if error:
            errors.append(f"sm_{capability} {dtype}: {error}")
        else:
            compiled.append(f"sm_{capability} {dtype}")
    return {"compiled": compiled, "errors": errors}


def _memory_main() -> dict[str, Any]:
    """Child: ru_maxrss growth of the reference (chunk 4096) and then of the full-logits path at V = 128k."""
    torch.set_num_threads(2)
    n, h, v, chunk = 1024, 64, 131072, 4096
    x = make_inputs(n, h, v, seed=11)
    torch.ones(64, 64) @ torch.ones(64, 64)  # load the BLAS before the baseline
    token_nll_reference(**make_inputs(64, h, 2 * chunk, seed=12), chunk_size=chunk)  # page in its code and pools
    got, ref_delta = peak_rss_growth(lambda: token_nll_reference(**x, chunk_size=chunk))
    expected, full_delta = peak_rss_growth(lambda: full_ce(**x))
    return {"n": n, "v": v, "chunk": chunk, "ref_delta": ref_delta, "full_delta": full_delta,
            "max_abs_err": (got - expected).abs().max().item()}


if __name__ == "__main__":
    child_main({"--interpret": lambda args: _interpret_main(Path(args[0])), "--compile": lambda args: _compile_main(),
                "--memory": lambda args: _memory_main()})

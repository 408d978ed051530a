"""The implicit-GEMM conv2d kernels run in the host emulator.

Oracles: the NumPy backend (per-tap matrix products for conv2d, a scatter-add
for the transpose: neither shares code with the kernels' gather), the
textbook loops of :mod:`gpuconv.reference`, and the adjoint identity
``<conv2d(z, w), y> == <z, conv_transpose2d(y, w)>``.  Every launch uses the
product's plan (:func:`gpuconv.kernels.conv2d_launch` and its transpose).
Inputs sit between NaN guards (an out-of-bounds read poisons a result),
outputs and workspaces between sentinels (which must survive) and are
poisoned with NaN (every element must be written).  Geometries straddle the
64 x 64 block tile and the 16-wide reduction slice, and include 1 x 1 images,
single channels, output phases with no taps and split reductions.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from conftest import assert_close, random_array
from gpuconv import kernels as K
from gpuconv import reference
from gpuconv.backends.numpy import NumpyBackend

kernel_emulator = pytest.importorskip("kernel_emulator")
if kernel_emulator.compiler() is None:
    kernel_emulator.skip_or_fail("no host C++ compiler (g++ or $CXX) to build the kernel emulator")

NP = NumpyBackend()
DTYPES = [np.float32, np.float64, np.complex64, np.complex128, np.float16]
MODES = ["zeros", "reflect", "replicate", "circular"]
GUARD = 64
SENTINEL = 1234.0  # exactly representable in every dtype above


@pytest.fixture(scope="module")
def emu():
    return kernel_emulator.Emulator("conv2d.cu")


def guarded(values: np.ndarray, fill) -> tuple[np.ndarray, np.ndarray]:
    """(buffer, view): ``values`` copied into the middle of a buffer filled with ``fill``."""
    buf = np.full(values.size + 2 * GUARD, fill, dtype=values.dtype)
    view = buf[GUARD:GUARD + values.size].reshape(values.shape)
    view[...] = values
    return buf, view


def intact(buf: np.ndarray) -> bool:
    return bool(np.all(buf[:GUARD] == SENTINEL) and np.all(buf[-GUARD:] == SENTINEL))


def run(emu, plan: K.ConvPlan, dtype, x, w, out_shape) -> np.ndarray:
    """Run a plan (and its split-K reduction) on guarded buffers; check the guards."""
    dtype = np.dtype(dtype)
    _, xg = guarded(np.ascontiguousarray(x, dtype), np.nan)
    _, wg = guarded(np.ascontiguousarray(w, dtype), np.nan)
    obuf, og = guarded(np.full(out_shape, np.nan, dtype), SENTINEL)
    if plan.reduce is None:
        emu.launch(plan.kernel, dtype, plan.launch, xg, wg, og)
    else:
        wsbuf, ws = guarded(np.full(plan.workspace_items, np.nan, dtype), SENTINEL)
        emu.launch(plan.kernel, dtype, plan.launch, xg, wg, ws)
        assert intact(wsbuf), "the kernel wrote outside its workspace"
        emu.launch("conv2d_splitk_reduce", dtype, plan.reduce, xg, ws, og)
    assert intact(obuf), "the kernel wrote outside its output"
    assert not np.isnan(og).any(), "an output was not written or read out of bounds"
    return og.copy()


def oracle_dtype(dtype):
    return np.complex128 if np.dtype(dtype).kind == "c" else np.float64


def out_hw(H, W, k, stride, dilation, pads):
    return ((H + pads[0] + pads[1] - dilation[0] * (k[0] - 1) - 1) // stride[0] + 1,
            (W + pads[2] + pads[3] - dilation[1] * (k[1] - 1) - 1) // stride[1] + 1)


def conv2d_case(emu, rng, dtype, N, C, H, W, Cout, G, k, stride, dil, pads, mode, *,
                splits=None, chunk=None, grid_limits=K.GRID_LIMITS):
    x = random_array(rng, (N, C, H, W), dtype)
    w = random_array(rng, (Cout, C // G, *k), dtype)
    Ho, Wo = out_hw(H, W, k, stride, dil, pads)
    plan = K.conv2d_launch(x.shape, w.shape, stride, pads, dil, G, mode, (Ho, Wo), dtype,
                           splits=splits, grid_limits=grid_limits)
    if chunk is not None:  # a smaller tap table: chunks start inside channels
        plan = dataclasses.replace(
            plan, launch=dataclasses.replace(plan.launch, args=plan.launch.args[:-1] + (chunk,)))
    got = run(emu, plan, dtype, x, w, (N, Cout, Ho, Wo))
    od = oracle_dtype(dtype)
    want = NP.conv2d(x.astype(od), w.astype(od), stride, pads, dil, G, mode, "direct", 1 << 30)
    return got, want, plan, (x, w)


CONV_CASES = [
    # N, C, H, W, Cout, groups, k, stride, dilation, pads (t, b, l, r)
    (2, 3, 9, 11, 10, 1, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    (1, 4, 13, 7, 8, 2, (3, 2), (2, 1), (1, 2), (2, 0, 1, 1)),
    (2, 6, 8, 8, 6, 6, (3, 3), (1, 2), (2, 1), (2, 2, 2, 2)),
    (1, 2, 1, 37, 17, 1, (1, 5), (1, 3), (1, 1), (0, 0, 3, 2)),
    (1, 2, 37, 1, 3, 1, (4, 1), (2, 1), (1, 1), (1, 2, 0, 0)),
    (1, 1, 140, 2, 9, 1, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0)),
    (1, 1, 1, 1, 1, 1, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0)),      # one pixel, one channel
    (1, 2, 1, 1, 3, 1, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),      # 1 x 1 image, padded
    (3, 3, 5, 4, 70, 1, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),     # 2 channel tiles, K = 27
    (2, 40, 5, 6, 5, 1, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),     # K = 360: two tap tables
]


def _legal_pads(mode, H, W, pads):
    # PyTorch's (and the front door's) limits: reflect < size, circular <= size.
    limit = {"reflect": (H - 1, W - 1), "circular": (H, W)}.get(mode)
    if limit and (max(pads[:2]) > limit[0] or max(pads[2:]) > limit[1]):
        return (min(pads[0], limit[0]), min(pads[1], limit[0]),
                min(pads[2], limit[1]), min(pads[3], limit[1]))
    return pads


def _mode_cases():
    for mode in MODES:
        for case in CONV_CASES:
            N, C, H, W, Cout, G, k, stride, dil, pads = case
            pads = _legal_pads(mode, H, W, pads)
            if min(out_hw(H, W, k, stride, dil, pads)) >= 1:  # a 1 x 1 image cannot reflect
                yield pytest.param(case[:-1] + (pads,), mode,
                                   id=mode + "-" + "x".join(map(str, case[:5])))


@pytest.mark.parametrize("case, padding_mode", list(_mode_cases()))
def test_conv2d_kernel(emu, rng, case, padding_mode):
    N, C, H, W, Cout, G, k, stride, dil, pads = case
    # Every dtype with zero padding; float32 and float16 for the folded modes
    # (the fold is the same integer code for every type).
    dtypes = DTYPES if padding_mode == "zeros" else [np.float32, np.float16]
    for dtype in dtypes:
        got, want, plan, _ = conv2d_case(emu, rng, dtype, N, C, H, W, Cout, G, k, stride, dil,
                                         pads, padding_mode)
        assert plan.kernel == ("conv2d_igemm" if padding_mode == "zeros"
                               else "conv2d_igemm_padded")
        assert got.dtype == np.dtype(dtype)
        assert_close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("splits", [1, 2, 5])
def test_conv2d_split_k(emu, rng, dtype, splits):
    # K = 8 * 9 = 72: 5 slices of 16 (9 of 8): every split count has work.
    got, want, plan, _ = conv2d_case(emu, rng, dtype, 2, 8, 7, 6, 9, 1, (3, 3), (1, 1), (1, 1),
                                     (1, 1, 1, 1), "zeros", splits=splits)
    assert plan.splits == splits and plan.launch.grid[2] == splits
    assert (plan.reduce is None) == (splits == 1)
    assert_close(got, want, dtype)


def test_conv2d_split_k_is_deterministic(emu, rng):
    x = random_array(rng, (1, 30, 6, 6), np.float32)
    w = random_array(rng, (4, 30, 3, 3), np.float32)
    plan = K.conv2d_launch(x.shape, w.shape, (1, 1), (1, 1, 1, 1), (1, 1), 1, "zeros", (6, 6),
                           np.float32, splits=4)
    first = run(emu, plan, np.float32, x, w, (1, 4, 6, 6))
    again = run(emu, plan, np.float32, x, w, (1, 4, 6, 6))
    assert np.array_equal(first, again)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("chunk", [5, 16, 37])
def test_conv2d_tap_table_chunks(emu, rng, mode, chunk):
    # Chunks that start and end inside a channel's taps and inside a slice:
    # the per-chunk channel base and the null taps that pad the last slice.
    got, want, _, _ = conv2d_case(emu, rng, np.float32, 2, 7, 6, 5, 9, 1, (3, 2), (1, 2),
                                  (2, 1), (2, 2, 1, 1), mode, chunk=chunk, splits=2)
    assert_close(got, want, np.float32)


@pytest.mark.parametrize("mode, pads", [("reflect", (2, 2, 3, 3)), ("circular", (3, 3, 4, 4)),
                                        ("replicate", (6, 5, 7, 9))])
def test_conv2d_padding_as_wide_as_allowed(emu, rng, mode, pads):
    # A 3 x 4 input padded by a whole period (reflect: size - 1, circular: size):
    # every coordinate the fold can see, corners included.
    for dtype in (np.float64, np.complex64):
        got, want, _, _ = conv2d_case(emu, rng, dtype, 2, 3, 3, 4, 5, 1, (3, 2), (1, 2), (2, 3),
                                      pads, mode)
        assert_close(got, want, dtype)


def test_conv2d_grid_stride_loop(emu, rng):
    # gridDim.y clipped to 2 of 2 groups x 2 channel tiles.
    got, want, plan, _ = conv2d_case(emu, rng, np.float32, 2, 4, 6, 6, 140, 2, (3, 3), (1, 1),
                                     (1, 1), (1, 1, 1, 1), "reflect",
                                     grid_limits=(2**31 - 1, 2, 2))
    assert plan.launch.grid[1] == 2
    assert_close(got, want, np.float32)


def random_conv2d_geometry(rng):
    """A random conv2d layer with at least one output pixel."""
    while True:
        G = int(rng.choice([1, 1, 2, 3]))
        Cg, Coutg = int(rng.integers(1, 6)), int(rng.choice([1, 3, 9, 33, 70]))
        N, H, W = int(rng.integers(1, 4)), int(rng.integers(1, 13)), int(rng.integers(1, 13))
        k = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        dil = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        mode = str(rng.choice(MODES))
        pads = _legal_pads(mode, H, W, tuple(int(p) for p in rng.integers(0, 4, 4)))
        Ho, Wo = out_hw(H, W, k, stride, dil, pads)
        if Ho >= 1 and Wo >= 1:
            return (N, G * Cg, H, W, G * Coutg, G, k, stride, dil, pads, mode)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_random_geometries(emu, rng, dtype):
    for _ in range(6):
        *case, mode = random_conv2d_geometry(rng)
        splits = [None, 1, 2, 3][int(rng.integers(0, 4))]
        got, want, _, _ = conv2d_case(emu, rng, dtype, *case, mode, splits=splits)
        assert_close(got, want, dtype)


def test_conv2d_matches_the_textbook_loops(emu, rng):
    for _ in range(4):
        N, C, H, W, Cout, G, k, stride, dil, pads, mode = random_conv2d_geometry(rng)
        got, _, _, (x, w) = conv2d_case(emu, rng, np.float64, N, C, H, W, Cout, G, k, stride,
                                        dil, pads, mode)
        want = reference.conv2d(x, w, stride=stride, padding=pads, dilation=dil, groups=G,
                                padding_mode=mode)
        assert_close(got, want, np.float64)


# -- conv_transpose2d -------------------------------------------------------------

def transpose_case(emu, rng, dtype, N, C, H, W, Cout, G, k, stride, dil, padding, out_pad, *,
                   splits=None, grid_limits=K.GRID_LIMITS):
    x = random_array(rng, (N, C, H, W), dtype)
    w = random_array(rng, (C, Cout // G, *k), dtype)
    Ho = (H - 1) * stride[0] - 2 * padding[0] + dil[0] * (k[0] - 1) + out_pad[0] + 1
    Wo = (W - 1) * stride[1] - 2 * padding[1] + dil[1] * (k[1] - 1) + out_pad[1] + 1
    plan = K.conv_transpose2d_launch(x.shape, w.shape, stride, padding, dil, G, (Ho, Wo), dtype,
                                     splits=splits, grid_limits=grid_limits)
    got = run(emu, plan, dtype, x, w, (N, Cout, Ho, Wo))
    od = oracle_dtype(dtype)
    want = NP.conv_transpose2d(x.astype(od), w.astype(od), stride, padding, dil, G, (Ho, Wo),
                               "direct", 1 << 30)
    return got, want, plan, (x, w)


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c[:5])))
def test_conv_transpose2d_kernel(emu, rng, case):
    N, C, H, W, Cout, G, k, stride, dil, pads = case
    padding = (min(pads[0], dil[0] * (k[0] - 1)), min(pads[2], dil[1] * (k[1] - 1)))
    out_pad = (stride[0] - 1, 0)
    for dtype in DTYPES:
        got, want, plan, _ = transpose_case(emu, rng, dtype, N, C, H, W, Cout, G, k, stride,
                                            dil, padding, out_pad)
        assert plan.kernel == "conv_transpose2d_igemm"
        assert_close(got, want, dtype)


@pytest.mark.parametrize("stride, dilation, k", [
    ((3, 4), (1, 1), (2, 2)),   # stride > kernel: phases no tap reaches
    ((4, 2), (2, 2), (3, 3)),   # u * 2 mod 4 is never odd: half the row phases are empty
    ((2, 3), (3, 2), (3, 4)),
])
def test_conv_transpose2d_phases(emu, rng, stride, dilation, k):
    got, want, plan, _ = transpose_case(emu, rng, np.float32, 2, 3, 4, 5, 6, 1, k, stride,
                                        dilation, (1, 0), (stride[0] - 1, 1))
    assert plan.launch.grid[1] == stride[0] * stride[1]  # one sub-problem per phase
    assert_close(got, want, np.float32)
    if dilation == (2, 2):
        assert np.all(got[:, :, 0::2, :] == 0)  # rows oi + 1 = odd: no tap lands there


def random_transpose_geometry(rng):
    """A random transposed layer with at least one output pixel."""
    while True:
        G = int(rng.choice([1, 1, 2, 3]))
        Cg, Coutg = int(rng.integers(1, 6)), int(rng.choice([1, 3, 9, 33, 70]))
        N, H, W = int(rng.integers(1, 4)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
        k = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        dil = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        padding = tuple(int(rng.integers(0, d * (kk - 1) + 1)) for d, kk in zip(dil, k))
        out_pad = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dil))
        size = [(n - 1) * s - 2 * p + d * (kk - 1) + o + 1
                for n, s, p, d, kk, o in zip((H, W), stride, padding, dil, k, out_pad)]
        if min(size) >= 1:
            return (N, G * Cg, H, W, G * Coutg, G, k, stride, dil, padding, out_pad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_transpose2d_random_geometries(emu, rng, dtype):
    for _ in range(5):
        case = random_transpose_geometry(rng)
        splits = [None, 1, 2, 3][int(rng.integers(0, 4))]
        got, want, _, _ = transpose_case(emu, rng, dtype, *case, splits=splits)
        assert_close(got, want, dtype)


def test_conv_transpose2d_is_the_adjoint_of_the_textbook_conv2d(emu, rng):
    # <conv2d(z, w), y> == <z, conv_transpose2d(y, w)> for every z and y: the
    # transpose is checked against the textbook loops, not another transpose.
    for _ in range(4):
        N, C, H, W, Cout, G, k, stride, dil, padding, out_pad = random_transpose_geometry(rng)
        got, _, _, (y, w) = transpose_case(emu, rng, np.float64, N, C, H, W, Cout, G, k, stride,
                                           dil, padding, out_pad, splits=2)
        z = rng.standard_normal(got.shape)
        forward = reference.conv2d(z, w, stride=stride, dilation=dil, groups=G,
                                   padding=(padding[0], padding[0], padding[1], padding[1]))
        forward = forward[:, :, :H, :W]  # output_padding rows/columns have no partner
        assert forward.shape == y.shape
        lhs, rhs = float(np.vdot(forward, y)), float(np.vdot(z, got))
        assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.complex128])
def test_conv_transpose2d_split_k(emu, rng, dtype):
    got, want, plan, _ = transpose_case(emu, rng, dtype, 1, 24, 4, 3, 5, 1, (3, 3), (2, 2),
                                        (1, 1), (1, 1), (1, 1), splits=3)
    assert plan.splits == 3
    assert_close(got, want, dtype)


def test_conv_transpose2d_grid_stride_loop(emu, rng):
    got, want, plan, _ = transpose_case(emu, rng, np.float32, 2, 4, 3, 4, 6, 2, (3, 3), (2, 2),
                                        (1, 1), (1, 1), (1, 0), grid_limits=(2**31 - 1, 3, 2))
    assert plan.launch.grid[1] == 3
    assert_close(got, want, np.float32)


def test_block_constants_match_the_source():
    src = K.source("conv2d.cu")
    assert f"#define GC_IG_BM {K.CONV_TILE[0]}\n" in src
    assert f"#define GC_IG_BN {K.CONV_TILE[1]}\n" in src
    assert f"#define GC_IG_THREADS {K.CONV_THREADS}\n" in src
    assert f"#define GC_IG_TAB {K.CONV_TABLE}\n" in src
    generic = re.search(r"template <typename T> struct gc_ig_cfg \{ enum \{ BK = (\d+),", src)
    assert generic
    for dtype, tn in K.TYPENAMES.items():
        specific = re.search(rf"template <> struct gc_ig_cfg<{tn}> {{ enum {{ BK = (\d+),", src)
        assert int((specific or generic).group(1)) == K.CONV_SLICE[dtype], tn

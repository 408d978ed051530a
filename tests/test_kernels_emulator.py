"""gpuconv's CUDA kernels run in the host emulator, compared with the NumPy backend.

Every launch uses the product's launch geometry (``gpuconv.kernels.*_launch``).
Outputs are poisoned with NaN before the launch; every buffer sits inside
guard zones (NaN around inputs, so an out-of-bounds read poisons a result; a
sentinel around outputs, which must be intact afterwards).  Sizes straddle
the 32 x 32 output tile and the 16 x 16 weight chunk.  The conv2d kernels
have their own file, tests/test_conv2d_kernel.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_close, random_array
from gpuconv import kernels as K
from gpuconv.backends.numpy import NumpyBackend
from gpuconv.correlate import _plane_geometry

kernel_emulator = pytest.importorskip("kernel_emulator")
if kernel_emulator.compiler() is None:
    kernel_emulator.skip_or_fail("no host C++ compiler (g++ or $CXX) to build the kernel emulator")

Emulator = kernel_emulator.Emulator
NP = NumpyBackend()
DTYPES = [np.float32, np.float64, np.complex64, np.complex128, np.float16]
GUARD = 64
SENTINEL = 1234.0  # exactly representable in every dtype above


@pytest.fixture(scope="module",
                params=[()] + [(v,) for v in K.VARIANTS["correlate_planes.cu"]],
                ids=lambda d: "+".join(d) or "default")
def planes_emu(request):
    """The planes kernels, as shipped and in each compile-time variant."""
    return Emulator("correlate_planes.cu", defines=request.param)


def guarded(values: np.ndarray, fill) -> tuple[np.ndarray, np.ndarray]:
    """(buffer, view): ``values`` copied into the middle of a buffer filled with ``fill``."""
    buf = np.full(values.size + 2 * GUARD, fill, dtype=values.dtype)
    view = buf[GUARD:GUARD + values.size].reshape(values.shape)
    view[...] = values
    return buf, view


def run(emu, kernel, dtype, launch, x, w, out_shape):
    """Launch on guarded copies; check the guards and that every output was written."""
    dtype = np.dtype(dtype)
    _, xg = guarded(np.ascontiguousarray(x, dtype), np.nan)
    _, wg = guarded(np.ascontiguousarray(w, dtype), np.nan)
    obuf, og = guarded(np.full(out_shape, np.nan, dtype), SENTINEL)
    emu.launch(kernel, dtype, launch, xg, wg, og)
    assert np.all(obuf[:GUARD] == SENTINEL) and np.all(obuf[-GUARD:] == SENTINEL), \
        "the kernel wrote outside its output"
    assert not np.isnan(og).any(), "an output was not written or read out of bounds"
    return og.copy()


def oracle_dtype(dtype):
    return np.complex128 if np.dtype(dtype).kind == "c" else np.float64


def fill_for(dtype):
    return 0.5 - 0.25j if np.dtype(dtype).kind == "c" else 0.5


def planes_case(emu, rng, dtype, B, H, W, kh, kw, mode, boundary, grid_limits=K.GRID_LIMITS):
    x = random_array(rng, (B, H, W), dtype)
    w = random_array(rng, (kh, kw), dtype)
    out_shape, origin, _ = _plane_geometry(mode, False, (H, W), (kh, kw))
    fill = fill_for(dtype)
    launch = K.planes_launch(x.shape, w.shape, out_shape, origin, boundary, fill, grid_limits)
    got = run(emu, "correlate_planes", dtype, launch, x, w, (B, *out_shape))
    od = oracle_dtype(dtype)
    want = NP.correlate_planes(x.astype(od), w.astype(od), out_shape, origin, boundary,
                               fill, "direct", 1 << 30)
    return got, want


SHAPES = [(1, 37), (37, 1), (31, 33), (33, 31), (32, 32), (5, 70)]
KSIZES = [(1, 1), (3, 3), (2, 5), (17, 18), (35, 3)]


@pytest.mark.parametrize("H, W", SHAPES)
@pytest.mark.parametrize("kh, kw", KSIZES)
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
def test_correlate_planes_float32_geometry(planes_emu, rng, H, W, kh, kw, boundary):
    for mode in ("full", "same", "valid"):
        if mode == "valid" and not ((H >= kh and W >= kw) or (kh >= H and kw >= W)):
            continue
        got, want = planes_case(planes_emu, rng, np.float32, 2, H, W, kh, kw, mode, boundary)
        assert_close(got, want, np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_correlate_planes_dtypes(planes_emu, rng, dtype, boundary, mode):
    for (H, W), (kh, kw) in [((33, 34), (3, 4)), ((9, 40), (17, 5))]:
        if mode == "valid" and not (H >= kh and W >= kw):
            continue
        got, want = planes_case(planes_emu, rng, dtype, 2, H, W, kh, kw, mode, boundary)
        assert got.dtype == np.dtype(dtype)
        assert_close(got, want, dtype)


@pytest.mark.parametrize("boundary", ["wrap", "symm"])
def test_correlate_planes_offsets_beyond_one_period(planes_emu, rng, boundary):
    # A kernel several times larger than the plane reads the extension many
    # periods away from the plane (numpy.pad semantics).
    for (H, W), (kh, kw) in [((3, 2), (13, 11)), ((1, 4), (9, 19)), ((5, 1), (21, 2))]:
        for mode in ("full", "same"):
            got, want = planes_case(planes_emu, rng, np.float64, 1, H, W, kh, kw, mode, boundary)
            assert_close(got, want, np.float64)


def test_correlate_planes_grid_stride_loops(planes_emu, rng):
    # Clip gridDim.y and gridDim.z to 2 so that the kernel's loops over tile
    # rows and planes (how it fits CUDA's 65535 limit) are exercised.
    got, want = planes_case(planes_emu, rng, np.float32, 5, 100, 40, 3, 3, "same", "symm",
                            grid_limits=(2**31 - 1, 2, 2))
    assert_close(got, want, np.float32)


def test_launch_geometry_respects_grid_limits():
    launch = K.planes_launch((200000, 8, 8), (3, 3), (8, 8), (1, 1), "fill", 0)
    assert launch.grid == (1, 1, 65535)
    launch = K.planes_launch((1, 3_000_000, 8), (3, 3), (3_000_000, 8), (1, 1), "fill", 0)
    assert launch.grid[1] == 65535
    # Offsets into a plane are 64-bit: a plane of more than 2^31 pixels runs ...
    launch = K.planes_launch((1, 70000, 70000), (3, 3), (70000, 70000), (1, 1), "fill", 0)
    assert launch.grid == (2188, 2188, 1)
    # ... but a coordinate along one axis (plus a tile and the kernel) is an int.
    with pytest.raises(ValueError, match="32-bit index range"):
        K.planes_launch((1, 1, 2**31 - 60), (1, 3), (1, 2**31 - 60), (0, 1), "fill", 0)


@pytest.mark.parametrize("defines, failure", [
    (("GPUCONV_PLANT_HALO_BUG",), "off-by-one in the halo load"),
    (("GPUCONV_PLANT_MISSING_BARRIER",), "missing __syncthreads after the tile load"),
])
def test_planted_bug_is_caught(rng, defines, failure):
    """The emulator tests fail on a kernel with a planted bug: they can see bugs."""
    buggy = Emulator("correlate_planes.cu", defines=defines)
    caught = 0
    for boundary in ("fill", "symm"):
        try:
            got, want = planes_case(buggy, rng, np.float32, 2, 40, 45, 3, 5, "same", boundary)
            assert_close(got, want, np.float32)
        except (AssertionError, kernel_emulator.EmulatorError):
            caught += 1
    assert caught == 2, f"the emulator comparison missed a planted {failure}"


def test_thread_orders_expose_a_race(rng):
    """Without the barrier a thread may read tile entries before another thread has
    stored them; the two thread orders then disagree, whatever the oracle says."""
    racy = Emulator("correlate_planes.cu", defines=("GPUCONV_PLANT_MISSING_BARRIER",))
    with pytest.raises(kernel_emulator.EmulatorError, match="depends on scheduling"):
        planes_case(racy, rng, np.float32, 1, 20, 20, 3, 3, "same", "fill")


def test_emulator_barrier_is_real(planes_emu, rng):
    """Every thread stops at __syncthreads: one round per barrier per block, none skipped."""
    x = random_array(rng, (1, 20, 20), np.float32)
    w = random_array(rng, (3, 3), np.float32)
    launch = K.planes_launch(x.shape, w.shape, (20, 20), (1, 1), "fill", 0.0)
    _, xg = guarded(x, np.nan)
    _, wg = guarded(w, np.nan)
    _, og = guarded(np.full((1, 20, 20), np.nan, np.float32), SENTINEL)
    rounds = planes_emu.launch("correlate_planes", np.float32, launch, xg, wg, og)
    # One tile, one weight chunk: two barriers.
    assert launch.grid == (1, 1, 1) and rounds == 2


def test_block_constants_match_the_sources():
    planes = K.source("correlate_planes.cu")
    assert f"#define GC_TW {K.PLANES_BLOCK[0]}\n" in planes
    assert f"#define GC_BY {K.PLANES_BLOCK[1]}\n" in planes
    assert K.PLANES_TILE == (K.PLANES_BLOCK[1] * 4, K.PLANES_BLOCK[0])
    assert "#define GC_RPT 4\n" in planes

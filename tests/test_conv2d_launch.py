"""Launch plans of the implicit-GEMM conv kernels: plain Python, no compiler, no GPU.

The grid must cover every output pixel and channel tile, the reduction is
split only when the grid is too small for the device (and never into empty
splits, never past the scratch budget), and every in-kernel 32-bit offset is
kept in range by the tap-table chunk, or the call is refused with a sentence.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from gpuconv import kernels as K

BM, BN = K.CONV_TILE


def conv_plan(x_shape, w_shape, pad=1, stride=1, dilation=1, groups=1, mode="zeros",
              dtype=np.float32, **kw):
    N, C, H, W = x_shape
    Cout, _, kh, kw_ = w_shape
    pads = (pad,) * 4
    Ho = (H + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
    Wo = (W + 2 * pad - dilation * (kw_ - 1) - 1) // stride + 1
    return K.conv2d_launch(x_shape, w_shape, (stride, stride), pads, (dilation, dilation),
                           groups, mode, (Ho, Wo), dtype, **kw), (Ho, Wo)


def test_grid_covers_every_pixel_and_channel_tile(rng):
    for _ in range(50):
        N, G = int(rng.integers(1, 9)), int(rng.choice([1, 2, 4]))
        C, Cout = G * int(rng.integers(1, 40)), G * int(rng.integers(1, 200))
        H, W, k = int(rng.integers(1, 60)), int(rng.integers(1, 60)), int(rng.integers(1, 4))
        plan, (Ho, Wo) = conv_plan((N, C, H, W), (Cout, C // G, k, k), pad=k // 2, groups=G)
        gx, gy, gz = plan.launch.grid
        assert gx * BM >= N * Ho * Wo > (gx - 1) * BM
        assert gy == G * math.ceil(Cout // G / BN)
        assert gz == plan.splits and plan.launch.block == (K.CONV_THREADS, 1, 1)
        assert plan.launch.args[-2:] == (plan.splits, plan.launch.args[-1])


def test_big_grids_are_not_split():
    # (32, 64, 28, 28) -> 64, 3x3: 392 blocks, more than 2 per SM of a 132-SM GPU.
    plan, _ = conv_plan((32, 64, 28, 28), (64, 64, 3, 3))
    assert plan.splits == 1 and plan.reduce is None and plan.workspace_items == 0


def test_small_grids_split_the_reduction():
    # (8, 256, 14, 14) -> 256: 25 x 4 = 100 blocks, K = 2304 (144 slices).
    plan, _ = conv_plan((8, 256, 14, 14), (256, 256, 3, 3), sm_count=132)
    blocks = plan.launch.grid[0] * plan.launch.grid[1]
    assert blocks == 100
    # As many splits as fill one wave of 2 blocks per SM without starting a second.
    assert plan.splits == (2 * 132) // blocks == plan.launch.grid[2] == 2
    assert plan.reduce.args == (plan.splits, 8 * 256, 14 * 14)
    assert plan.reduce.grid[0] * K.CONV_THREADS >= 8 * 256 * 14 * 14
    # float32 partials: one output's worth of float32 per split.
    assert plan.workspace_items == plan.splits * 8 * 256 * 14 * 14
    # A device with more SMs splits more; one with few enough does not split.
    assert conv_plan((8, 256, 14, 14), (256, 256, 3, 3), sm_count=400)[0].splits > plan.splits
    assert conv_plan((8, 256, 14, 14), (256, 256, 3, 3), sm_count=99)[0].splits == 1
    assert conv_plan((8, 256, 14, 14), (256, 256, 3, 3), sm_count=100)[0].splits == 2


def test_split_respects_the_scratch_budget_and_minimum_work():
    out_bytes = 8 * 256 * 14 * 14 * 4
    plan, _ = conv_plan((8, 256, 14, 14), (256, 256, 3, 3), sm_count=400,
                        scratch_bytes=3 * out_bytes)
    assert plan.splits == 3 and plan.workspace_items * 4 <= 3 * out_bytes
    assert conv_plan((8, 256, 14, 14), (256, 256, 3, 3), sm_count=400,
                     scratch_bytes=out_bytes)[0].splits == 1
    # K = 27: two slices, too little to split.
    assert conv_plan((1, 3, 8, 8), (4, 3, 3, 3))[0].splits == 1


def test_float16_partials_are_float32():
    plan, _ = conv_plan((8, 256, 14, 14), (256, 256, 3, 3), dtype=np.float16)
    assert plan.splits > 1
    # Items of the input dtype: two float16 per float32 partial.
    assert plan.workspace_items == 2 * plan.splits * 8 * 256 * 14 * 14


@pytest.mark.parametrize("dtype", list(K.TYPENAMES))
def test_forced_splits_never_leave_a_split_without_work(dtype):
    for C, splits in itertools.product([1, 2, 5, 16, 40], [1, 2, 3, 7, 50]):
        plan, _ = conv_plan((1, C, 5, 5), (3, C, 3, 3), dtype=dtype, splits=splits)
        slices = math.ceil(C * 9 / K.CONV_SLICE[np.dtype(dtype)])
        per = math.ceil(slices / plan.splits)
        assert 1 <= plan.splits <= min(splits, slices)
        assert (plan.splits - 1) * per < slices  # the last split starts before the end
    with pytest.raises(ValueError, match="splits must be a positive integer, got 0"):
        conv_plan((1, 3, 5, 5), (3, 3, 3, 3), splits=0)


def test_grid_y_is_clipped_to_the_limit():
    plan, _ = conv_plan((1, 4, 8, 8), (140, 2, 3, 3), groups=2, grid_limits=(2**31 - 1, 3, 65535))
    assert plan.launch.grid[1] == 3  # a grid-stride loop covers the other channel tiles


def test_pixels_beyond_int32_are_fine():
    # 2^32 output pixels: the kernels index pixels in 64 bits.
    plan, (Ho, Wo) = conv_plan((65536, 1, 256, 256), (1, 1, 1, 1), pad=0)
    assert plan.launch.grid[0] * BM >= 65536 * Ho * Wo > 2**31


def test_tap_table_chunk_keeps_offsets_in_int32():
    plan, _ = conv_plan((1, 64, 32, 32), (8, 64, 3, 3))
    assert plan.launch.args[-1] == K.CONV_TABLE
    # 1x1 taps on 16384^2 planes: a chunk may only span a few channels.
    H = W = 16384
    plan, _ = conv_plan((1, 64, H, W), (8, 64, 1, 1), pad=0)
    chunk = plan.launch.args[-1]
    assert 1 <= chunk < K.CONV_TABLE
    assert (math.ceil(chunk / 1) + 1) * H * W <= 2**31 - 1 + H * W
    assert (chunk + 1) * H * W > 2**31 - 1 - 2 * (H + 1) * W  # not needlessly small
    with pytest.raises(ValueError, match="32-bit in-plane offsets; .*method='gemm'"):
        conv_plan((1, 2, 40000, 40000), (1, 2, 1, 1), pad=0)


@pytest.mark.parametrize("mode, pad, ok", [("reflect", 4, True), ("reflect", 5, False),
                                           ("circular", 5, True), ("circular", 6, False),
                                           ("replicate", 40, True)])
def test_padding_wider_than_one_period_is_refused(mode, pad, ok):
    # A 5 x 7 input: the kernel folds a padded coordinate into the plane once.
    if ok:
        conv_plan((1, 1, 5, 7), (1, 1, 3, 3), pad=pad, mode=mode)
    else:
        with pytest.raises(ValueError, match=f"padding_mode='{mode}' needs pads"):
            conv_plan((1, 1, 5, 7), (1, 1, 3, 3), pad=pad, mode=mode)


def test_plane_size_and_weights_are_checked():
    with pytest.raises(ValueError, match="32-bit index range"):
        conv_plan((1, 1, 50000, 50000), (1, 1, 1, 1), pad=0)


@pytest.mark.parametrize("k, d, s", [(3, 1, 2), (4, 2, 4), (5, 3, 2), (2, 1, 3), (1, 1, 1)])
def test_phase_taps(k, d, s):
    for shift in range(-3, 7):
        want = [u for u in range(k) if (shift - u * d) % s == 0]
        assert K._phase_taps(k, d, s, shift) == len(want)
    # Every tap lands in exactly one phase.
    assert sum(K._phase_taps(k, d, s, a) for a in range(s)) == k


def test_transpose_plan_has_one_sub_problem_per_phase():
    plan = K.conv_transpose2d_launch((4, 16, 7, 7), (16, 8, 4, 4), (2, 3), (1, 1), (1, 1), 2,
                                     (14, 21))
    gx, gy, _ = plan.launch.grid
    assert gy == 2 * 1 * 2 * 3  # groups x channel tiles x phases
    assert gx * BM >= 4 * 7 * 7  # the largest phase: ceil(14/2) x ceil(21/3) per image
    assert plan.kernel == "conv_transpose2d_igemm"


def test_work_counts_for_a_cost_model():
    # (32, 1, 28, 28) -> 6, 5x5 valid: 288 tiles of 64 pixels x 64 channels x 32 taps
    # (25 useful), 6 channels of 64: the kernel issues (64 / 6) * (32 / 25) = 13.65x the
    # useful products.
    plan, (Ho, Wo) = conv_plan((32, 1, 28, 28), (6, 1, 5, 5), pad=0)
    useful = 32 * Ho * Wo * 6 * 25
    assert plan.tile_macs == 288 * 64 * 64 * 32
    assert plan.tile_macs / useful == pytest.approx(64 / 6 * 32 / 25)
    # 288 blocks on 132 SMs x 2: two waves, the second nearly empty.
    assert plan.wave_macs == 2 * 264 * 64 * 64 * 32
    assert plan.launches == 1
    split, _ = conv_plan((8, 256, 14, 14), (256, 256, 3, 3))
    assert split.launches == 2
    assert split.tile_macs == 25 * 4 * 2 * 64 * 64 * (2304 // 2)

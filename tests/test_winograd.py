"""method="winograd": exactness of the transforms, agreement with an extended-precision
oracle within the documented error bound, every layer geometry it accepts, the ones it
refuses, NaN/Inf behaviour, bounded scratch, the nn layer and the CuPy backend's code."""

from __future__ import annotations

import tracemalloc
from fractions import Fraction

import numpy as np
import pytest
import scipy.signal

import gpuconv
from conftest import random_array
from gpuconv import _winograd, nn, reference

PADDING_MODES = ["zeros", "reflect", "replicate", "circular"]


# -- oracles -----------------------------------------------------------------------------
def exact_conv(xpad, w, groups):
    """The valid 3x3 correlation in extended precision (long double, or float64 where
    that is all the platform has: then the oracle's own error is added to the tolerance)."""
    wide = np.clongdouble if np.iscomplexobj(xpad) or np.iscomplexobj(w) else np.longdouble
    x = np.asarray(xpad).astype(wide)
    w = np.asarray(w).astype(wide)
    N, _, Hp, Wp = x.shape
    Cout, Cg = w.shape[:2]
    Ho, Wo = Hp - 2, Wp - 2
    xg = x.reshape(N, groups, Cg, Hp, Wp)
    wg = w.reshape(groups, Cout // groups, Cg, 3, 3)
    out = np.zeros((N, groups, Cout // groups, Ho, Wo), dtype=wide)
    for u in range(3):
        for v in range(3):
            out += np.einsum("goc,ngchw->ngohw", wg[:, :, :, u, v], xg[:, :, :, u:u + Ho, v:v + Wo])
    return out.reshape(N, Cout, Ho, Wo)


def oracle_error(xpad, w, groups):
    """Bound on the oracle's own error: gamma_{9 Cg} of its precision times sum |x||w|."""
    eps = float(np.finfo(np.longdouble).eps) / 2
    n = 9 * np.shape(w)[1] + 1
    absref = exact_conv(np.abs(xpad), np.abs(w), groups)
    return (2 * n * eps * absref).astype(np.float64)


def assert_within_bound(got, xpad, w, groups, m, work_dtype, result_dtype=None):
    """|got - exact| <= error_bound (+ the oracle's error, + rounding to float16)."""
    got = np.asarray(got)
    exact = exact_conv(xpad, w, groups)
    tol = _winograd.error_bound(xpad, w, groups, m, work_dtype) + oracle_error(xpad, w, groups)
    if result_dtype is not None and np.dtype(result_dtype) == np.float16:
        tol = tol + float(np.finfo(np.float16).eps) * np.abs(exact).astype(np.float64)
    err = np.abs(got.astype(exact.dtype) - exact).astype(np.float64)
    assert got.shape == exact.shape
    assert np.all(err <= tol), f"max err/bound {np.max(err / np.maximum(tol, 1e-300)):.3g}"


def padded(x, pads, padding_mode="zeros"):
    mode = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
            "circular": "wrap"}[padding_mode]
    t, b, l, r = pads
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), mode=mode)


# -- the transforms --------------------------------------------------------------------------
@pytest.mark.parametrize("m", sorted(_winograd.TILES))
def test_transforms_compute_the_correlation_exactly(m, rng):
    tile = _winograd.TILES[m]
    a = tile.alpha
    for _ in range(20):
        d = [Fraction(int(v), int(q)) for v, q in zip(rng.integers(-9, 10, a),
                                                      rng.integers(1, 7, a))]
        g = [Fraction(int(v), int(q)) for v, q in zip(rng.integers(-9, 10, 3),
                                                      rng.integers(1, 7, 3))]
        Gg = [sum(tile.G[k][u] * g[u] for u in range(3)) for k in range(a)]
        Bd = [sum(tile.BT[k][p] * d[p] for p in range(a)) for k in range(a)]
        y = [sum(tile.AT[i][k] * Gg[k] * Bd[k] for k in range(a)) for i in range(m)]
        assert y == [sum(d[i + u] * g[u] for u in range(3)) for i in range(m)]


@pytest.mark.parametrize("m", sorted(_winograd.TILES))
def test_flipping_the_kernel_permutes_the_transform(m):
    # G @ g[::-1] == (G @ g)[flip]: the adjoint reuses the forward transform.
    tile = _winograd.TILES[m]
    for k, row in enumerate(tile.G):
        assert tuple(reversed(row)) == tile.G[tile.flip[k]]
    assert all(isinstance(v, int) for row in tile.AT + tile.BT for v in row)


def test_adjoint_transform_is_the_transform_of_the_flipped_swapped_kernel(rng):
    G = 2
    w = rng.standard_normal((6, 5, 3, 3))  # as conv_transpose2d's (C_in, C_out/G, 3, 3)
    for m in _winograd.TILES:
        got = _winograd.transform_weight(np, w, G, m).adjoint(np).U
        wf = w.reshape(G, 3, 5, 3, 3)[..., ::-1, ::-1].transpose(0, 2, 1, 3, 4)
        want = _winograd.transform_weight(np, np.ascontiguousarray(wf).reshape(10, 3, 3, 3),
                                          G, m).U
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-16)


def test_tile_choice():
    assert _winograd.choose_tile((28, 28), 64) == 4
    assert _winograd.choose_tile((28, 28), 15) == 2  # few channels: the accurate tile
    assert _winograd.choose_tile((2, 2), 64) == 2    # one 2x2 tile beats a 4x4 one
    assert _winograd.choose_tile((1, 200), 64) == 2


# -- against the oracle, within the bound ----------------------------------------------------
LAYERS = [
    # N, C, H, W, C_out, groups, padding
    (2, 4, 9, 11, 6, 2, 1),
    (1, 3, 3, 3, 2, 1, 0),     # one output
    (1, 2, 4, 5, 3, 1, 0),     # Ho, Wo = 2, 3
    (3, 1, 1, 7, 1, 1, 1),     # Ho = 1
    (2, 32, 13, 10, 16, 1, 1),  # F(4x4): ragged, 13 x 10 outputs
    (1, 64, 8, 8, 8, 4, 1),     # 16 channels per group
    (1, 160, 4, 4, 5, 1, 1),    # many channels
    (2, 6, 7, 6, 6, 6, 2),     # depthwise, padding wider than needed
]


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_within_the_error_bound(layer, dtype, rng):
    N, C, H, W, Cout, G, p = layer
    x = random_array(rng, (N, C, H, W), dtype)
    w = random_array(rng, (Cout, C // G, 3, 3), dtype)
    got = gpuconv.conv2d(x, w, padding=p, groups=G, method="winograd")
    assert got.dtype == dtype
    xpad = padded(x, (p, p, p, p))
    m = _winograd.choose_tile((H + 2 * p - 2, W + 2 * p - 2), C // G)
    assert_within_bound(got, xpad, w, G, m, dtype)


@pytest.mark.parametrize("m", sorted(_winograd.TILES))
@pytest.mark.parametrize("dtype", [np.float32, np.complex64, np.complex128])
def test_each_tile_within_the_error_bound(m, dtype, rng):
    for N, C, H, W, Cout, G in [(2, 8, 11, 9, 4, 2), (1, 3, 6, 7, 2, 1)]:
        xpad = random_array(rng, (N, C, H, W), dtype)
        w = random_array(rng, (Cout, C // G, 3, 3), dtype)
        got = _winograd.conv2d(np, xpad, w, G, (H - 2, W - 2), 2**26, tile=m)
        assert_within_bound(got, xpad, w, G, m, dtype)


@pytest.mark.parametrize("padding_mode", PADDING_MODES)
def test_every_padding_mode_and_same_padding(padding_mode, rng):
    x = random_array(rng, (2, 4, 7, 9), np.float64)
    w = random_array(rng, (4, 2, 3, 3), np.float64)
    b = random_array(rng, (4,), np.float64)
    for padding in (1, (2, 1), "same", "valid"):
        got = gpuconv.conv2d(x, w, b, padding=padding, groups=2, padding_mode=padding_mode,
                             method="winograd")
        want = gpuconv.conv2d(x, w, b, padding=padding, groups=2, padding_mode=padding_mode,
                              method="direct")
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    pads = (1, 1, 2, 2)
    got = gpuconv.conv2d(x, w, padding=(1, 2), groups=2, padding_mode=padding_mode,
                         method="winograd")
    np.testing.assert_allclose(got, reference.conv2d(x, w, padding=pads, groups=2,
                                                     padding_mode=padding_mode),
                               rtol=1e-12, atol=1e-12)


def test_unbatched_integer_and_float16_inputs(rng):
    x = rng.integers(-5, 6, size=(3, 8, 8))
    w = rng.integers(-3, 4, size=(2, 3, 3, 3))
    got = gpuconv.conv2d(x, w, padding=1, method="winograd")
    assert got.dtype == np.float64 and got.shape == (2, 8, 8)
    # Integer data: float64 Winograd is exact up to rounding, not bit-exact.
    np.testing.assert_allclose(got, reference.conv2d(x[None], w, padding=(1, 1, 1, 1))[0],
                               rtol=0, atol=1e-12)
    xh = random_array(rng, (2, 16, 9, 9), np.float16)
    wh = random_array(rng, (4, 16, 3, 3), np.float16)
    got = gpuconv.conv2d(xh, wh, padding=1, method="winograd")
    assert got.dtype == np.float16
    m = _winograd.choose_tile((9, 9), 16)
    assert_within_bound(got, padded(xh.astype(np.float32), (1, 1, 1, 1)), wh.astype(np.float32),
                        1, m, np.float32, result_dtype=np.float16)


def test_bias_and_batch_of_one(rng):
    x = random_array(rng, (1, 5, 6, 6), np.float64)
    w = random_array(rng, (3, 5, 3, 3), np.float64)
    b = random_array(rng, (3,), np.float64)
    np.testing.assert_allclose(gpuconv.conv2d(x, w, b, padding=1, method="winograd"),
                               reference.conv2d(x, w, b, padding=(1, 1, 1, 1)),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding", [0, 1, 2, 3])
def test_conv_transpose2d_stride_one(padding, rng):
    for N, C, H, W, Coutg, G in [(2, 4, 6, 7, 3, 2), (1, 32, 5, 9, 16, 1), (3, 2, 3, 3, 1, 1)]:
        x = random_array(rng, (N, C, H, W), np.float64)
        w = random_array(rng, (C, Coutg, 3, 3), np.float64)
        if H + 2 - 2 * padding < 1 or W + 2 - 2 * padding < 1:
            continue
        got = gpuconv.conv_transpose2d(x, w, padding=padding, groups=G, method="winograd")
        want = gpuconv.conv_transpose2d(x, w, padding=padding, groups=G, method="direct")
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
def test_planes_against_scipy(mode, boundary, rng):
    x = rng.standard_normal((3, 17, 10))
    k = rng.standard_normal((3, 3))
    for fn, oracle in ((gpuconv.correlate2d, scipy.signal.correlate2d),
                       (gpuconv.convolve2d, scipy.signal.convolve2d)):
        got = fn(x, k, mode, boundary, fillvalue=1.5, method="winograd")
        want = np.stack([oracle(p, k, mode, boundary, fillvalue=1.5) for p in x])
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_bands_of_tile_rows_when_one_image_exceeds_the_scratch(rng):
    # A scratch bound below one image's buffers: bands of tile rows, same answer.
    x = random_array(rng, (2, 8, 41, 23), np.float64)
    w = random_array(rng, (16, 8, 3, 3), np.float64)
    want = gpuconv.conv2d(x, w, padding=1, method="direct")
    for limit in (1, 40_000, 2**26):
        with gpuconv.scratch_limit(limit):
            got = gpuconv.conv2d(x, w, padding=1, method="winograd")
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_scratch_stays_under_the_limit(rng):
    x = random_array(rng, (16, 16, 64, 64), np.float32)
    w = random_array(rng, (16, 16, 3, 3), np.float32)
    xpad = padded(x, (1, 1, 1, 1))
    limit = 2**20
    _winograd.conv2d(np, xpad[:1], w, 1, (64, 64), limit)  # warm up caches
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        got = _winograd.conv2d(np, xpad, w, 1, (64, 64), limit)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # The output, the weight transform and the bounded buffers.
    transform = 36 * w.size // 9 * 4
    assert peak <= got.nbytes + transform + limit + 2**16, (peak, got.nbytes)
    # Unbounded, the input transform alone would be 2.25x the input.
    assert peak < got.nbytes + 2.25 * xpad.nbytes
    np.testing.assert_allclose(got, gpuconv.conv2d(x, w, padding=1, method="direct"),
                               rtol=1e-4, atol=1e-4)


# -- what it refuses --------------------------------------------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda x, w: gpuconv.conv2d(x, w, stride=2, method="winograd"), r"stride \(2, 2\)"),
    (lambda x, w: gpuconv.conv2d(x, w, dilation=(1, 2), method="winograd"),
     r"dilation \(1, 2\)"),
    (lambda x, w: gpuconv.conv2d(x, w[..., :2], method="winograd"), r"size \(3, 2\)"),
    (lambda x, w: gpuconv.conv_transpose2d(x, w, stride=2, method="winograd"),
     r"stride \(2, 2\)"),
    (lambda x, w: gpuconv.correlate2d(x[0, 0], np.ones((5, 5)), method="winograd"),
     r"in2 of shape \(5, 5\)"),
    (lambda x, w: nn.Conv2D(2, 2, 5, method="winograd"), r"kernel_size of spatial size"),
    (lambda x, w: nn.Conv2D(2, 2, 3, stride=2, method="winograd"), r"stride \(2, 2\)"),
])
def test_unsupported_geometry_is_a_value_error(call, match):
    x = np.ones((1, 2, 8, 8))
    w = np.ones((2, 2, 3, 3))
    with pytest.raises(ValueError, match=r"method='winograd' needs a 3x3 kernel.*" + match):
        call(x, w)


# -- non-finite values ---------------------------------------------------------------------------
def _nonfinite_case(value, m, rng):
    x = rng.standard_normal((1, 16, 12, 12))
    w = rng.standard_normal((4, 16, 3, 3))
    x[0, 5, 6, 7] = value
    direct = gpuconv.conv2d(x, w, method="direct")
    wino = _winograd.conv2d(np, x, w, 1, (10, 10), 2**26, tile=m)
    return direct, wino


def _tiles_reading(pos, m, out_hw):
    """Outputs of every tile whose input window (alpha = m + 2 samples from t*m) holds pos."""
    mask = np.zeros(out_hw, bool)
    for t in range(-(-out_hw[0] // m)):
        for s in range(-(-out_hw[1] // m)):
            if t * m <= pos[0] < t * m + m + 2 and s * m <= pos[1] < s * m + m + 2:
                mask[t * m:(t + 1) * m, s * m:(s + 1) * m] = True
    return mask


@pytest.mark.parametrize("m", sorted(_winograd.TILES))
def test_nan_spreads_to_the_tiles_that_read_it(m, rng):
    # The transforms are dense matrix products: 0 * NaN is NaN, so a NaN reaches
    # every output of the (at most 2 x 2) tiles whose input window holds it.
    direct, wino = _nonfinite_case(np.nan, m, rng)
    assert np.isnan(direct).sum() == 4 * 9
    tiles = _tiles_reading((6, 7), m, (10, 10))
    expected = np.broadcast_to(tiles, wino.shape)
    np.testing.assert_array_equal(np.isnan(wino), expected)
    assert np.all(expected[np.isnan(direct)])


def test_inf_can_come_back_as_nan(rng):
    for m in _winograd.TILES:
        with np.errstate(invalid="ignore"):
            direct, wino = _nonfinite_case(np.inf, m, rng)
        hit = ~np.isfinite(direct)
        assert not np.isnan(direct).any()
        assert np.isnan(wino[hit]).any()          # Inf - Inf inside the transform


def test_exact_zeros_come_back_as_rounding_noise():
    # A zero-sum kernel on a constant patch: direct summation is exactly 0.
    x = np.full((1, 1, 8, 8), 0.1)
    w = np.array([[[[1.0, -2.0, 1.0], [1.0, -2.0, 1.0], [1.0, -2.0, 1.0]]]]) / 3
    direct = gpuconv.conv2d(x, w, method="direct")
    wino = _winograd.conv2d(np, x, w, 1, (6, 6), 2**26, tile=4)
    assert np.all(direct == 0) or np.abs(direct).max() < 1e-17
    assert np.abs(wino).max() < 1e-15


# -- measured accuracy (the documented ratios) ---------------------------------------------------
def test_measured_error_against_direct_summation(rng):
    # Max |error| / sum |x||w| over the window, relative to direct summation's (float32):
    # F(2x2) about 1.2-4x, F(4x4) about 6-10x with 64 channels (5-6x in the mean square).
    x = random_array(rng, (4, 64, 14, 14), np.float32)
    w = random_array(rng, (32, 64, 3, 3), np.float32)
    exact = exact_conv(x, w, 1).astype(np.float64)
    absref = exact_conv(np.abs(x), np.abs(w), 1).astype(np.float64)
    rel = {"direct": np.abs(gpuconv.conv2d(x, w, method="direct") - exact) / absref}
    for m in _winograd.TILES:
        rel[m] = np.abs(_winograd.conv2d(np, x, w, 1, (12, 12), 2**26, tile=m) - exact) / absref
    rms = {k: np.sqrt(np.mean(v**2)) for k, v in rel.items()}
    assert rel[2].max() < 5 * rel["direct"].max() and rms[2] < 3 * rms["direct"]
    assert rel[4].max() < 15 * rel["direct"].max() and rms[4] < 8 * rms["direct"]
    assert rms[4] > rms[2]


# -- the weight gradient -------------------------------------------------------------------------
def exact_weight_grad(xpad, dy, groups):
    x = np.asarray(xpad).astype(np.longdouble)
    dy = np.asarray(dy).astype(np.longdouble)
    N, C, Hp, Wp = x.shape
    Cout, Ho, Wo = dy.shape[1:]
    Cg, Og = C // groups, Cout // groups
    out = np.zeros((groups, Og, Cg, 3, 3), dtype=np.longdouble)
    xg = x.reshape(N, groups, Cg, Hp, Wp)
    dg = dy.reshape(N, groups, Og, Ho, Wo)
    for u in range(3):
        for v in range(3):
            out[..., u, v] = np.einsum("ngohw,ngchw->goc", dg, xg[:, :, :, u:u + Ho, v:v + Wo])
    return out.reshape(Cout, Cg, 3, 3)


@pytest.mark.parametrize("m", sorted(_winograd.TILES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_grad_within_the_error_bound(m, dtype, rng):
    for N, C, Hp, Wp, Cout, G, limit in [(2, 4, 11, 13, 6, 2, 2**26), (3, 16, 10, 10, 8, 1, 2**26),
                                         (2, 8, 21, 9, 8, 1, 30_000)]:
        xpad = random_array(rng, (N, C, Hp, Wp), dtype)
        dy = random_array(rng, (N, Cout, Hp - 2, Wp - 2), dtype)
        got = _winograd.weight_grad(np, xpad, dy, G, limit, tile=m)
        assert got.shape == (Cout, C // G, 3, 3) and got.dtype == dtype
        exact = exact_weight_grad(xpad, dy, G)
        tol = _winograd.weight_grad_error_bound(xpad, dy, G, m, dtype)
        err = np.abs(got.astype(np.longdouble) - exact).astype(np.float64)
        assert np.all(err <= tol), np.max(err / tol)


def test_weight_grad_through_functional(rng):
    from gpuconv.nn import functional as F

    x = random_array(rng, (3, 8, 9, 7), np.float64)
    dy = random_array(rng, (3, 4, 9, 7), np.float64)
    for padding_mode in PADDING_MODES:
        args = ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2, padding_mode)
        np.testing.assert_allclose(F.conv2d_weight_grad(x, dy, *args, method="winograd"),
                                   F.conv2d_weight_grad(x, dy, *args, method="direct"),
                                   rtol=1e-12, atol=1e-12)
    got = F.conv2d_weight_grad(x.astype(np.float16), dy.astype(np.float16), (3, 3), (1, 1),
                               (1, 1, 1, 1), (1, 1), 1, method="winograd")
    assert got.dtype == np.float16
    with pytest.raises(ValueError, match="method='winograd' needs a 3x3 kernel"):
        F.conv2d_weight_grad(x, dy[..., ::2, ::2], (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1,
                             method="winograd")


# -- the nn layer ---------------------------------------------------------------------------------
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_conv2d_layer_gradients_match_direct(padding_mode, rng, monkeypatch):
    kwargs = dict(padding=1, padding_mode=padding_mode, seed=3, dtype=np.float64, groups=2)
    # 16 channels per group both ways: forward and input gradient use the same tile.
    wino = nn.Conv2D(32, 32, 3, method="winograd", **kwargs)
    direct = nn.Conv2D(32, 32, 3, method="direct", **kwargs)
    x = rng.standard_normal((2, 32, 9, 10))
    y = wino(x)
    np.testing.assert_allclose(y, direct(x), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    computed = []
    original = _winograd._compute_transform
    monkeypatch.setattr(_winograd, "_compute_transform",
                        lambda *a: computed.append(a) or original(*a))
    gx = wino.backward(g)
    assert computed == []  # the input gradient reused the forward's transform
    np.testing.assert_allclose(gx, direct.backward(g), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(wino.weight.grad, direct.weight.grad, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(wino.bias.grad, direct.bias.grad, rtol=1e-12, atol=1e-12)


def test_conv2d_layer_sees_in_place_weight_updates(rng):
    layer = nn.Conv2D(16, 16, 3, padding=1, seed=0, dtype=np.float64, method="winograd")
    x = rng.standard_normal((2, 16, 8, 8))
    opt = nn.SGD(layer.parameters(), lr=0.5)
    for _ in range(2):
        y = layer(x)
        np.testing.assert_allclose(y, gpuconv.conv2d(x, layer.weight.data, layer.bias.data,
                                                     padding=1, method="direct"),
                                   rtol=1e-12, atol=1e-12)
        gx = layer.backward(np.ones_like(y))
        np.testing.assert_allclose(gx, gpuconv.conv_transpose2d(
            np.ones_like(y), layer.weight.data, padding=1, method="direct"),
            rtol=1e-12, atol=1e-12)
        opt.step()  # in place: the next forward must not reuse the old transform
        opt.zero_grad()


def test_conv2d_layer_finite_differences(rng):
    layer = nn.Conv2D(3, 4, 3, padding=1, seed=1, dtype=np.float64, method="winograd")
    x = rng.standard_normal((1, 3, 5, 6))
    c = rng.standard_normal((1, 4, 5, 6))
    layer(x)
    gx = layer.backward(c)
    h = 1e-6
    for idx in [(0, 0, 0, 0), (0, 1, 2, 3), (0, 2, 4, 5)]:
        e = np.zeros_like(x)
        e[idx] = h
        fd = ((layer(x + e) * c).sum() - (layer(x - e) * c).sum()) / (2 * h)
        assert abs(fd - gx[idx]) < 1e-6 * max(1.0, abs(fd))


# -- the CuPy backend's code, emulated on the CPU ------------------------------------------------
def test_generic_code_on_the_emulated_cupy_backend(rng, monkeypatch):
    kernel_emulator = pytest.importorskip("kernel_emulator")
    from gpuconv import backend as registry

    emulated = kernel_emulator.emulated_cupy_backend()
    monkeypatch.setitem(registry._factories, "cupy-emulated", lambda: emulated)
    x = random_array(rng, (2, 16, 9, 10), np.float32)
    w = random_array(rng, (8, 8, 3, 3), np.float32)
    xt = random_array(rng, (2, 8, 6, 5), np.float32)
    planes = random_array(rng, (3, 12, 11), np.float32)
    k = random_array(rng, (3, 3), np.float32)
    calls = [
        lambda: gpuconv.conv2d(x, w, padding=1, groups=2, padding_mode="reflect",
                               method="winograd"),
        lambda: gpuconv.conv_transpose2d(xt, w, padding=1, groups=1, method="winograd"),
        lambda: gpuconv.correlate2d(planes, k, "same", "symm", method="winograd"),
    ]
    for call in calls:
        with gpuconv.set_backend("cupy-emulated"):
            got = call()
        want = call()
        assert type(got) is type(want) and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The generic path ran (no native kernel launches for winograd).
    assert not any(k.launches for k in emulated.emulated_kernels.values())


def test_blas_threads_restored_after_concurrent_calls(rng):
    # The NumPy backend runs chunks on its pool with BLAS at one thread; calls from
    # several threads at once must leave BLAS's own limit as they found it.
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl is not "
                                        "installed: chunks then run one after the other")
    import threading

    before = [i["num_threads"] for i in threadpoolctl.threadpool_info()]
    x = random_array(rng, (8, 16, 30, 30), np.float32)
    w = random_array(rng, (16, 16, 3, 3), np.float32)
    want = gpuconv.conv2d(x, w, padding=1, method="winograd")
    results = []

    def run():
        for _ in range(5):
            results.append(gpuconv.conv2d(x, w, padding=1, method="winograd"))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [i["num_threads"] for i in threadpoolctl.threadpool_info()] == before
    assert len(results) == 15 and all(np.array_equal(r, want) for r in results)

"""gpuconv.max_pool2d / avg_pool2d and the pooling layers: PyTorch's semantics exactly.

Oracles: PyTorch where installed (values and indices bit for bit), and the torch-free
textbook loops in gpuconv.reference on the same random inputs and geometries; the layers'
gradients against PyTorch and against the adjoint identity / finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpuconv
from gpuconv import nn, reference

from conftest import assert_close, check_array

FLOATS = [np.float16, np.float32, np.float64]


def random_geometry(rng, *, dilation=True):
    """Any valid-looking pooling geometry (some do not fit: both sides must then raise)."""
    k = tuple(int(v) for v in rng.integers(1, 5, 2))
    g = {"kernel_size": k,
         "stride": None if rng.random() < 0.2 else tuple(int(v) for v in rng.integers(1, 4, 2)),
         "padding": tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k),
         "ceil_mode": bool(rng.integers(2))}
    if dilation:
        g["dilation"] = tuple(int(v) for v in rng.integers(1, 4, 2))
    return g


def random_input(rng, dtype, shape, special=True):
    """Small integers (so windows hold ties), with NaN and -inf sprinkled into floats."""
    x = rng.integers(-3, 4, shape).astype(dtype)
    if special and np.dtype(dtype).kind == "f":
        x[rng.random(shape) < 0.05] = np.nan
        x[rng.random(shape) < 0.05] = -np.inf
    return x


def fits(shape, g):
    """Whether the oracle's output-size formula gives at least one window per axis."""
    k, p = g["kernel_size"], g["padding"]
    s = k if g["stride"] is None else g["stride"]
    d = g.get("dilation", (1, 1))
    return all(reference._pool_size(shape[2 + a], k[a], s[a], p[a], d[a], g["ceil_mode"]) >= 1
               for a in range(2))


def _host(a):
    return a.get() if type(a).__module__.startswith("cupy") else np.asarray(a)


# -- against PyTorch -------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS + [np.int64, np.int32, np.uint8])
def test_max_pool2d_matches_torch(rng, dtype):
    torch = pytest.importorskip("torch", reason="torch is not installed: nothing to compare")
    compared = 0
    for _ in range(60):
        g = random_geometry(rng)
        x = random_input(rng, dtype, (2, 3, *rng.integers(1, 12, 2)))
        try:
            expected, expected_idx = torch.nn.functional.max_pool2d(
                torch.from_numpy(x), return_indices=True, **g)
        except RuntimeError:
            with pytest.raises(ValueError):
                gpuconv.max_pool2d(x, **g)
            continue
        out, idx = gpuconv.max_pool2d(x, return_indices=True, **g)
        assert out.dtype == x.dtype and idx.dtype == np.int64
        np.testing.assert_array_equal(out, expected.numpy(), err_msg=str(g))
        np.testing.assert_array_equal(idx, expected_idx.numpy(), err_msg=str(g))
        compared += 1
    assert compared > 30


@pytest.mark.parametrize("dtype", FLOATS)
def test_avg_pool2d_matches_torch(rng, dtype):
    torch = pytest.importorskip("torch", reason="torch is not installed: nothing to compare")
    compared = 0
    for _ in range(60):
        g = random_geometry(rng, dilation=False)
        g["count_include_pad"] = bool(rng.integers(2))
        g["divisor_override"] = [None, None, 3, -2][rng.integers(4)]
        x = random_input(rng, dtype, (2, 3, *rng.integers(1, 12, 2)))
        try:
            expected = torch.nn.functional.avg_pool2d(torch.from_numpy(x), **g)
        except RuntimeError:
            with pytest.raises(ValueError):
                gpuconv.avg_pool2d(x, **g)
            continue
        out = gpuconv.avg_pool2d(x, **g)
        assert out.dtype == x.dtype
        # Same sums in the same order, same division: equal, not merely close.
        np.testing.assert_array_equal(out, expected.numpy(), err_msg=str(g))
        compared += 1
    assert compared > 30


# -- against the textbook loops (no torch needed) ---------------------------------------
@pytest.mark.parametrize("dtype", FLOATS + [np.int64, np.bool_])
def test_max_pool2d_matches_reference(backend, rng, dtype):
    compared = 0
    for _ in range(25):
        g = random_geometry(rng)
        x = random_input(rng, dtype, (1, 2, *rng.integers(1, 9, 2)))
        if not fits(x.shape, g):
            with pytest.raises(ValueError, match="does not fit"):
                gpuconv.max_pool2d(backend.asarray(x), **g)
            continue
        expected, expected_idx = reference.max_pool2d(x, return_indices=True, **g)
        out, idx = gpuconv.max_pool2d(backend.asarray(x), return_indices=True, **g)
        check_array(out, backend.xp, x.dtype, expected.shape)
        check_array(idx, backend.xp, np.int64, expected.shape)
        np.testing.assert_array_equal(_host(out), expected, err_msg=str(g))
        np.testing.assert_array_equal(_host(idx), expected_idx, err_msg=str(g))
        compared += 1
    assert compared > 10


@pytest.mark.parametrize("dtype", FLOATS + [np.complex128])
def test_avg_pool2d_matches_reference(backend, rng, dtype):
    compared = 0
    for _ in range(25):
        g = random_geometry(rng, dilation=False)
        g["count_include_pad"] = bool(rng.integers(2))
        g["divisor_override"] = [None, None, 4][rng.integers(3)]
        shape = (1, 2, *rng.integers(1, 9, 2))
        x = rng.standard_normal(shape).astype(dtype)
        if np.dtype(dtype).kind == "c":
            x = x + 1j * rng.standard_normal(shape)
        if not fits(shape, g):
            with pytest.raises(ValueError, match="does not fit"):
                gpuconv.avg_pool2d(backend.asarray(x), **g)
            continue
        expected = reference.avg_pool2d(x.astype(np.complex128 if x.dtype.kind == "c"
                                                 else np.float64), **g)
        out = gpuconv.avg_pool2d(backend.asarray(x), **g)
        assert out.dtype == x.dtype
        assert_close(out, expected, dtype, xp=backend.xp)
        compared += 1
    assert compared > 10


@st.composite
def pooling_cases(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    g = {"kernel_size": (kh, kw),
         "stride": draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3)))),
         "padding": (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))),
         "ceil_mode": draw(st.booleans())}
    H, W = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    return g, (1, 2, H, W), seed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pooling_cases())
def test_pooling_properties_against_reference(case):
    g, shape, seed = case
    rng = np.random.default_rng(seed)
    x = random_input(rng, np.float64, shape)
    if not fits(shape, g):
        with pytest.raises(ValueError, match="does not fit"):
            gpuconv.avg_pool2d(x, **g)
        return
    expected = reference.avg_pool2d(x, **g)
    np.testing.assert_allclose(gpuconv.avg_pool2d(x, **g), expected, rtol=1e-12, atol=0)
    out, idx = gpuconv.max_pool2d(x, return_indices=True, **g)
    ref, ref_idx = reference.max_pool2d(x, return_indices=True, **g)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(idx, ref_idx)
    # Each finite maximum is the value at its index.
    flat = x.reshape(shape[0], shape[1], -1)
    picked = np.take_along_axis(flat, idx.reshape(shape[0], shape[1], -1), axis=-1)
    np.testing.assert_array_equal(picked.reshape(out.shape), out)


# -- rules stated in the docs, checked directly ------------------------------------------
def test_nan_wins_and_padding_never_does():
    x = np.array([[[[1.0, np.nan, 3.0, np.nan]]]])
    out, idx = gpuconv.max_pool2d(x, (1, 4), return_indices=True)
    assert np.isnan(out[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 3  # the last NaN
    x = np.full((1, 1, 2, 2), -np.inf)
    out, idx = gpuconv.max_pool2d(x, 2, stride=1, padding=1, return_indices=True)
    assert np.all(out == -np.inf)
    # An all -inf window points at its first sample inside the image, never the padding.
    np.testing.assert_array_equal(idx[0, 0], [[0, 0, 1], [0, 0, 1], [2, 2, 3]])
    ties = np.array([[[[2.0, 2.0], [2.0, 1.0]]]])
    assert gpuconv.max_pool2d(ties, 2, return_indices=True)[1][0, 0, 0, 0] == 0  # first max


def test_ceil_mode_output_size_rule():
    x = np.arange(4.0).reshape(1, 1, 1, 4)
    # span (4 + 2 - 2) / 3 rounds up to 2: three windows, but the third would start at
    # column 5, in the right padding, so it is dropped.
    out = gpuconv.max_pool2d(x, (1, 2), stride=(1, 3), padding=(0, 1), ceil_mode=True)
    np.testing.assert_array_equal(out[0, 0], [[0.0, 3.0]])
    # Without padding the partial window at the edge stays.
    out = gpuconv.avg_pool2d(np.arange(5.0).reshape(1, 1, 5), (1, 2), ceil_mode=True)
    np.testing.assert_array_equal(out, [[[0.5, 2.5, 4.0]]])
    assert gpuconv.avg_pool2d(np.arange(5.0).reshape(1, 1, 5), (1, 2)).shape == (1, 1, 2)


def test_count_include_pad_and_divisor_override():
    x = np.ones((1, 1, 3, 3))
    corner = gpuconv.avg_pool2d(x, 3, stride=1, padding=1)[0, 0, 0, 0]
    assert corner == pytest.approx(4 / 9)
    assert gpuconv.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)[0, 0, 0, 0] == 1
    assert gpuconv.avg_pool2d(x, 3, stride=1, padding=1, divisor_override=2)[0, 0, 0, 0] == 2


def test_unbatched_and_empty_batch(rng):
    x = rng.standard_normal((3, 7, 6))
    np.testing.assert_array_equal(gpuconv.max_pool2d(x, 2), gpuconv.max_pool2d(x[None], 2)[0])
    out, idx = gpuconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert out.shape == idx.shape == (3, 4, 3)
    np.testing.assert_array_equal(gpuconv.avg_pool2d(x, 3, 2, 1),
                                  gpuconv.avg_pool2d(x[None], 3, 2, 1)[0])
    assert gpuconv.max_pool2d(np.zeros((0, 2, 5, 5)), 2).shape == (0, 2, 2, 2)
    assert gpuconv.avg_pool2d(np.zeros((0, 2, 5, 5)), 2).shape == (0, 2, 2, 2)


def test_dtypes(rng):
    big = np.array([[[[2**62 + 1, 2**62]]]], dtype=np.int64)
    out = gpuconv.max_pool2d(big, (1, 2))
    assert out.dtype == np.int64 and out[0, 0, 0, 0] == 2**62 + 1  # exact, not via float64
    b = np.array([[[[False, True], [False, False]]]])
    assert gpuconv.max_pool2d(b, 2).dtype == np.bool_ and gpuconv.max_pool2d(b, 2)[0, 0, 0, 0]
    ints = rng.integers(-5, 5, (1, 2, 4, 4))
    avg = gpuconv.avg_pool2d(ints, 2)
    assert avg.dtype == np.float64
    np.testing.assert_allclose(avg, reference.avg_pool2d(ints.astype(float), 2), rtol=1e-15)
    z = rng.standard_normal((1, 1, 4, 4)) + 1j * rng.standard_normal((1, 1, 4, 4))
    np.testing.assert_allclose(gpuconv.avg_pool2d(z, 2),
                               gpuconv.avg_pool2d(z.real, 2) + 1j * gpuconv.avg_pool2d(z.imag, 2),
                               rtol=1e-15)
    h = rng.standard_normal((1, 1, 4, 4)).astype(np.float16)
    assert gpuconv.avg_pool2d(h, 2).dtype == np.float16
    assert gpuconv.max_pool2d(h, 2).dtype == np.float16


BAD = [
    (lambda: gpuconv.max_pool2d(np.zeros((4, 4)), 2), ValueError, r"4-D .* or 3-D"),
    (lambda: gpuconv.max_pool2d(np.zeros((1, 0, 4, 4)), 2), ValueError, "non-empty"),
    (lambda: gpuconv.max_pool2d(np.zeros((1, 1, 4, 4)), 0), ValueError, "kernel_size must be >= 1"),
    (lambda: gpuconv.max_pool2d(np.zeros((1, 1, 4, 4)), 2.0), TypeError, "kernel_size"),
    (lambda: gpuconv.max_pool2d(np.zeros((1, 1, 4, 4)), 2, stride=0), ValueError, "stride"),
    (lambda: gpuconv.max_pool2d(np.zeros((1, 1, 4, 4)), 2, dilation=0), ValueError, "dilation"),
    (lambda: gpuconv.max_pool2d(np.zeros((1, 1, 4, 4)), 3, padding=2), ValueError,
     "half the kernel"),
    (lambda: gpuconv.max_pool2d(np.zeros((1, 1, 4, 4)), 2, padding=-1), ValueError, "padding"),
    (lambda: gpuconv.max_pool2d(np.zeros((1, 1, 4, 4)), 5), ValueError, "does not fit"),
    (lambda: gpuconv.max_pool2d(np.zeros((1, 1, 4, 4)), 2, dilation=4), ValueError,
     "does not fit"),
    (lambda: gpuconv.max_pool2d(np.zeros((1, 1, 4, 4)), 2, ceil_mode="yes"), TypeError,
     "ceil_mode must be True or False"),
    (lambda: gpuconv.max_pool2d(np.zeros((1, 1, 4, 4)), 2, return_indices=1), TypeError,
     "return_indices"),
    (lambda: gpuconv.max_pool2d(np.zeros((1, 1, 4, 4), complex), 2), TypeError, "complex"),
    (lambda: gpuconv.max_pool2d(np.array([[[["a"]]]]), 1), TypeError, "input has dtype"),
    (lambda: gpuconv.avg_pool2d(np.zeros((1, 1, 4, 4)), 2, divisor_override=0), ValueError,
     "divisor_override must not be 0"),
    (lambda: gpuconv.avg_pool2d(np.zeros((1, 1, 4, 4)), 2, divisor_override=1.5), TypeError,
     "divisor_override"),
    (lambda: gpuconv.avg_pool2d(np.zeros((1, 1, 4, 4)), 2, count_include_pad=None), TypeError,
     "count_include_pad"),
    (lambda: gpuconv.avg_pool2d(np.zeros((1, 1, 4, 4)), (2, 2, 2)), ValueError,
     "pair of ints"),
    (lambda: nn.AvgPool2D(2, divisor_override=0), ValueError, "divisor_override"),
    (lambda: nn.MaxPool2D(3, padding=2), ValueError, "half the kernel"),
]


@pytest.mark.parametrize("call,exc,match", BAD)
def test_bad_input_raises_naming_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# -- dask -----------------------------------------------------------------------------
def test_dask_chunks_over_batch_and_channels(rng):
    da = pytest.importorskip("dask.array", reason="dask[array] is not installed (the 'dask' extra)")
    import dask

    x = rng.standard_normal((5, 4, 9, 8))
    lazy = da.from_array(x, chunks=(2, 3, 9, 8))
    with dask.config.set(scheduler="synchronous"):
        out, idx = gpuconv.max_pool2d(lazy, 3, 2, 1, ceil_mode=True, return_indices=True)
        assert isinstance(out, da.Array) and isinstance(idx, da.Array)
        want, want_idx = gpuconv.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
        np.testing.assert_array_equal(out.compute(), want)
        np.testing.assert_array_equal(idx.compute(), want_idx)
        avg = gpuconv.avg_pool2d(lazy, 2, count_include_pad=False)
        np.testing.assert_array_equal(avg.compute(), gpuconv.avg_pool2d(x, 2,
                                                                       count_include_pad=False))
        unbatched = gpuconv.avg_pool2d(da.from_array(x[0], chunks=(1, 9, 8)), 2)
        np.testing.assert_array_equal(unbatched.compute(), gpuconv.avg_pool2d(x[0], 2))
    with pytest.raises(ValueError, match="chunked along H or W"):
        gpuconv.max_pool2d(da.from_array(x, chunks=(5, 4, 5, 8)), 2)
    with pytest.raises(ValueError, match="half the kernel"):  # the in-memory checks, lazily
        gpuconv.avg_pool2d(lazy, 2, padding=2)


# -- the layers -------------------------------------------------------------------------
LAYERS = [
    (lambda m: m.MaxPool2D(3, stride=2, padding=1, dilation=2, ceil_mode=True), (2, 3, 11, 9)),
    (lambda m: m.MaxPool2D((2, 3), stride=(1, 2), ceil_mode=True), (1, 2, 5, 8)),
    (lambda m: m.AvgPool2D(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
     (2, 3, 10, 9)),
    (lambda m: m.AvgPool2D((3, 2), stride=(2, 3), divisor_override=5), (1, 2, 8, 8)),
]
LAYER_IDS = ["max_dilated_ceil", "max_rect_overlap", "avg_ceil_nopad", "avg_override"]


def _torch_layer(torch, make):
    class Names:
        MaxPool2D = torch.nn.MaxPool2d
        AvgPool2D = torch.nn.AvgPool2d
    return make(Names)


@pytest.mark.parametrize("make,shape", LAYERS, ids=LAYER_IDS)
def test_pooling_layers_match_torch(rng, make, shape):
    torch = pytest.importorskip("torch", reason="torch is not installed: nothing to compare")
    x = rng.standard_normal(shape)
    ours = make(nn)
    y = ours(x)
    g = rng.standard_normal(y.shape)
    dx = ours.backward(g)
    xt = torch.tensor(x, requires_grad=True)
    yt = _torch_layer(torch, make)(xt)
    (yt * torch.tensor(g)).sum().backward()
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("make,shape", LAYERS, ids=LAYER_IDS)
def test_pooling_layer_gradients(backend, rng, make, shape):
    """Torch-free: average pooling is linear, so backward is its adjoint; max pooling's
    gradient matches finite differences where the windows' maxima are unique."""
    layer = make(nn)
    x = rng.permutation(np.prod(shape)).reshape(shape) / 7.0  # distinct values: no ties
    y = layer(backend.asarray(x))
    g = rng.standard_normal(y.shape)
    dx = _host(layer.backward(backend.asarray(g)))
    if isinstance(layer, nn.AvgPool2D):
        probe = rng.standard_normal(shape)
        lhs = float((_host(layer(backend.asarray(probe))) * g).sum())
        np.testing.assert_allclose(lhs, float((probe * dx).sum()), rtol=1e-12)
        return
    eps = 1e-3  # values are 1/7 apart, so no maximum changes under the nudge
    fd = np.zeros_like(x)
    for i in np.ndindex(*shape):
        for sign in (1, -1):
            xs = x.copy()
            xs[i] += sign * eps
            fd[i] += sign * float((_host(layer(backend.asarray(xs))) * g).sum()) / (2 * eps)
    np.testing.assert_allclose(dx, fd, rtol=1e-9, atol=1e-9)


def test_pooling_layers_take_unbatched_input(rng):
    x = rng.standard_normal((2, 6, 6))
    for layer in (nn.MaxPool2D(2), nn.AvgPool2D(2)):
        y = layer(x)
        assert y.shape == (2, 3, 3)
        assert layer.backward(np.ones_like(y)).shape == x.shape

"""conv2d and conv_transpose2d against the textbook loop, PyTorch's CPU
convolution (when installed) and the adjoint identity, with hypothesis
drawing shapes, strides, paddings, dilations and groups."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import gpuconv
from conftest import assert_close, random_array, to_host
from gpuconv import reference

METHODS = ["direct", "gemm"]
DTYPES = [np.float16, np.float32, np.float64, np.complex64, np.complex128]
PADDING_MODES = ["zeros", "reflect", "replicate", "circular"]

# Function-scoped fixtures (backend, rng) are fine here: the backend stays set
# for all examples and rng only supplies fresh data.
FAST = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="torch is not installed: PyTorch comparison "
                                               "skipped (the reference-loop tests still run)")


def _tf_same(n, k, s, d):
    """TensorFlow's 'SAME' rule, written out independently of gpuconv.conv."""
    out = (n + s - 1) // s
    total = max(0, (out - 1) * s + (k - 1) * d + 1 - n)
    return total // 2, total - total // 2


def _pads(padding, hw, k, s, d):
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        return _tf_same(hw[0], k[0], s[0], d[0]) + _tf_same(hw[1], k[1], s[1], d[1])
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return (ph, ph, pw, pw)


@st.composite
def conv_cases(draw, same_stride=True):
    groups = draw(st.integers(1, 3))
    cin = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 3))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    hw = tuple(draw(st.integers(max(1, d[i] * (k[i] - 1) - 1), d[i] * (k[i] - 1) + 7))
               for i in range(2))
    padding = draw(st.one_of(st.integers(0, 3),
                             st.tuples(st.integers(0, 3), st.integers(0, 3)),
                             st.sampled_from(["valid", "same"])))
    if isinstance(padding, tuple) and draw(st.booleans()):
        padding = list(padding)
    padding_mode = draw(st.sampled_from(PADDING_MODES))
    n = draw(st.integers(1, 2))
    bias = draw(st.booleans())
    return dict(n=n, cin=cin, cout=cout, k=k, s=s, d=d, hw=hw, padding=padding,
                padding_mode=padding_mode, groups=groups, bias=bias)


def _valid_case(c):
    """None if gpuconv must accept the case, else the reason it must refuse it."""
    pads = _pads(c["padding"] if not isinstance(c["padding"], list) else tuple(c["padding"]),
                 c["hw"], c["k"], c["s"], c["d"])
    H, W = c["hw"]
    if c["padding_mode"] == "reflect" and (max(pads[:2]) >= H or max(pads[2:]) >= W):
        return "reflect"
    if c["padding_mode"] == "circular" and (max(pads[:2]) > H or max(pads[2:]) > W):
        return "circular"
    for i, (lo, hi) in enumerate([pads[:2], pads[2:]]):
        if c["hw"][i] + lo + hi < c["d"][i] * (c["k"][i] - 1) + 1:
            return "fit"
    return None


def _arrays(rng, c, dtype=np.float64):
    x = random_array(rng, (c["n"], c["cin"]) + c["hw"], dtype)
    w = random_array(rng, (c["cout"], c["cin"] // c["groups"]) + c["k"], dtype)
    b = random_array(rng, (c["cout"],), dtype) if c["bias"] else None
    return x, w, b


@pytest.mark.parametrize("method", METHODS)
@FAST
@given(c=conv_cases())
def test_conv2d_matches_reference_loop(backend, rng, method, c):
    x, w, b = _arrays(rng, c)
    call = dict(bias=b, stride=c["s"], padding=c["padding"], dilation=c["d"],
                groups=c["groups"], padding_mode=c["padding_mode"], method=method)
    refused = _valid_case(c)
    if refused:
        with pytest.raises(ValueError, match="padding|weight"):
            gpuconv.conv2d(x, w, **call)
        return
    got = gpuconv.conv2d(backend.xp.asarray(x), backend.xp.asarray(w), **call)
    pads = _pads(c["padding"] if not isinstance(c["padding"], list) else tuple(c["padding"]),
                 c["hw"], c["k"], c["s"], c["d"])
    expected = reference.conv2d(x, w, b, c["s"], pads, c["d"], c["groups"], c["padding_mode"])
    assert_close(got, expected, np.float64, xp=backend.xp)
    if c["padding"] == "same":
        assert got.shape[2:] == tuple(-(-n // s) for n, s in zip(c["hw"], c["s"]))


@pytest.mark.parametrize("method", METHODS)
@FAST
@given(c=conv_cases())
def test_conv2d_matches_torch(backend, rng, torch, method, c):
    if c["padding"] == "same":
        # PyTorch refuses 'same' with stride > 1; that case is checked against
        # the TensorFlow rule in test_same_with_stride_follows_tensorflow.
        assume(c["s"] == (1, 1))
    assume(_valid_case(c) is None)
    x, w, b = _arrays(rng, c)
    padding = tuple(c["padding"]) if isinstance(c["padding"], list) else c["padding"]
    layer = torch.nn.Conv2d(c["cin"], c["cout"], c["k"], stride=c["s"], padding=padding,
                            dilation=c["d"], groups=c["groups"], bias=c["bias"],
                            padding_mode=c["padding_mode"], dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w))
        if c["bias"]:
            layer.bias.copy_(torch.from_numpy(b))
        expected = layer(torch.from_numpy(x)).numpy()
    got = gpuconv.conv2d(backend.xp.asarray(x), backend.xp.asarray(w), b, c["s"], c["padding"],
                         c["d"], c["groups"], padding_mode=c["padding_mode"], method=method)
    assert_close(got, expected, np.float64, xp=backend.xp)


@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n, k, s, d, pads", [
    (7, 3, 2, 1, (1, 1)),   # ceil(7/2) = 4 outputs, total padding 2
    (8, 3, 2, 1, (0, 1)),   # total padding 1: the odd pixel goes bottom/right
    (10, 4, 3, 1, (1, 2)),
    (8, 2, 2, 2, (0, 1)),   # dilated kernel spans 3
    (5, 5, 3, 1, (1, 2)),
    (10, 1, 4, 1, (0, 0)),
])
def test_same_with_stride_follows_tensorflow(backend, rng, method, padding_mode, n, k, s, d,
                                             pads):
    assert _tf_same(n, k, s, d) == pads
    x = rng.standard_normal((2, 3, n, n + 1))
    w = rng.standard_normal((4, 3, k, k))
    wpads = _tf_same(n + 1, k, s, d)
    got = gpuconv.conv2d(backend.xp.asarray(x), backend.xp.asarray(w), stride=s,
                         padding="same", dilation=d, padding_mode=padding_mode, method=method)
    assert got.shape == (2, 4, -(-n // s), -(-(n + 1) // s))
    expected = reference.conv2d(x, w, None, (s, s), pads + wpads, (d, d), 1, padding_mode)
    assert_close(got, expected, np.float64, xp=backend.xp)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", METHODS)
def test_conv2d_dtypes(backend, rng, dtype, method):
    x = random_array(rng, (2, 4, 9, 8), dtype)
    w = random_array(rng, (6, 2, 3, 2), dtype)
    b = random_array(rng, (6,), dtype)
    got = gpuconv.conv2d(backend.xp.asarray(x), backend.xp.asarray(w), backend.xp.asarray(b),
                         stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2,
                         padding_mode="reflect", method=method)
    wide = np.complex128 if np.dtype(dtype).kind == "c" else np.float64
    expected = reference.conv2d(x.astype(wide), w.astype(wide), b.astype(wide), (2, 1),
                                (1, 1, 2, 2), (1, 2), 2, "reflect")
    assert_close(got, expected, dtype, xp=backend.xp)


@pytest.mark.parametrize("method", METHODS)
def test_unbatched_input(backend, rng, method):
    x = rng.standard_normal((3, 7, 6))
    w = rng.standard_normal((5, 3, 3, 3))
    b = rng.standard_normal(5)
    got = gpuconv.conv2d(x, w, b, padding=1, method=method)
    expected = reference.conv2d(x[None], w, b, padding=(1, 1, 1, 1))[0]
    assert expected.shape == (5, 7, 6)
    assert_close(got, expected, np.float64, xp=backend.xp)
    y = rng.standard_normal((5, 7, 6))
    got_t = gpuconv.conv_transpose2d(y, w, padding=1, method=method)
    batched = gpuconv.conv_transpose2d(y[None], w, padding=1, method=method)[0]
    assert batched.shape == (3, 7, 6)
    assert_close(got_t, batched, np.float64)


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_unbatched_matches_torch(backend, rng, torch):
    x = rng.standard_normal((2, 6, 5))
    w = rng.standard_normal((4, 2, 2, 3))
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                          padding="same").numpy()
    got = gpuconv.conv2d(x, w, padding="same")
    assert_close(got, expected, np.float64, xp=backend.xp)


@pytest.mark.parametrize("method", METHODS)
def test_bias_is_added_per_output_channel(backend, rng, method):
    x = rng.standard_normal((2, 3, 5, 5))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    with_bias = gpuconv.conv2d(x, w, b, method=method)
    without = gpuconv.conv2d(x, w, method=method)
    assert_close(with_bias - without, np.broadcast_to(b[None, :, None, None], without.shape),
                 np.float64, scale=10, xp=backend.xp)


@pytest.mark.parametrize("method", METHODS)
def test_one_by_one_convolution_is_a_matrix_product(backend, rng, method):
    x = rng.standard_normal((2, 5, 4, 3))
    w = rng.standard_normal((7, 5, 1, 1))
    got = gpuconv.conv2d(x, w, method=method)
    expected = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], x)
    assert_close(got, expected, np.float64, xp=backend.xp)
    assert_close(got[0], reference.corr2d_multi_in_out_1x1(x[0], w), np.float64, xp=backend.xp)


@pytest.mark.parametrize("method", METHODS)
def test_multi_channel_matches_chapter_loops(backend, rng, method):
    x = rng.standard_normal((3, 6, 5))
    w = rng.standard_normal((2, 3, 2, 3))
    got = gpuconv.conv2d(x, w, method=method)
    assert_close(got, reference.corr2d_multi_in_out(x, w), np.float64, xp=backend.xp)


# -- conv_transpose2d ------------------------------------------------------

@st.composite
def transpose_cases(draw, output_padding_below_stride=False):
    groups = draw(st.integers(1, 3))
    cin = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 2))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 3)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    limit = s if output_padding_below_stride else tuple(max(a, b) for a, b in zip(s, d))
    op = (draw(st.integers(0, limit[0] - 1)), draw(st.integers(0, limit[1] - 1)))
    hw = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    out_hw = tuple((hw[i] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1
                   for i in range(2))
    assume(min(out_hw) >= 1)
    return dict(n=draw(st.integers(1, 2)), cin=cin, cout=cout, k=k, s=s, d=d, p=p, op=op,
                hw=hw, out_hw=out_hw, groups=groups, bias=draw(st.booleans()))


@pytest.mark.parametrize("method", METHODS)
@FAST
@given(c=transpose_cases(output_padding_below_stride=True))
def test_conv_transpose2d_is_the_adjoint_of_conv2d(backend, rng, method, c):
    # <conv2d(x, w), y> == <x, conv_transpose2d(y, w)>: no torch needed.
    x = rng.standard_normal((c["n"], c["cout"]) + c["out_hw"])
    w = rng.standard_normal((c["cin"], c["cout"] // c["groups"]) + c["k"])
    y = rng.standard_normal((c["n"], c["cin"]) + c["hw"])
    forward = gpuconv.conv2d(x, w, stride=c["s"], padding=c["p"], dilation=c["d"],
                             groups=c["groups"], method=method)
    adjoint = gpuconv.conv_transpose2d(
        y, w, stride=c["s"], padding=c["p"], output_padding=c["op"], groups=c["groups"],
        dilation=c["d"], method=method)
    for got, like in ((forward, y), (adjoint, x)):
        assert isinstance(got, backend.xp.ndarray)
        assert (got.dtype, got.shape) == (like.dtype, like.shape)
    lhs = np.vdot(to_host(forward), y)
    rhs = np.vdot(x, to_host(adjoint))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10 * np.abs(x).sum())


@pytest.mark.parametrize("method", METHODS)
@FAST
@given(c=transpose_cases())
def test_conv_transpose2d_matches_torch(backend, rng, torch, method, c):
    x = rng.standard_normal((c["n"], c["cin"]) + c["hw"])
    w = rng.standard_normal((c["cin"], c["cout"] // c["groups"]) + c["k"])
    b = rng.standard_normal(c["cout"]) if c["bias"] else None
    expected = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x), torch.from_numpy(w), None if b is None else torch.from_numpy(b),
        c["s"], c["p"], c["op"], c["groups"], c["d"]).numpy()
    got = gpuconv.conv_transpose2d(backend.xp.asarray(x), backend.xp.asarray(w), b, c["s"],
                                   c["p"], c["op"], c["groups"], c["d"], method=method)
    assert got.shape == expected.shape == (c["n"], c["cout"]) + c["out_hw"]
    assert_close(got, expected, np.float64, xp=backend.xp)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", METHODS)
def test_conv_transpose2d_dtypes_via_adjoint(backend, rng, dtype, method):
    # Written out as the explicit matrix of conv2d: column j of conv2d's
    # matrix is conv2d of the j-th unit image; the transpose's matrix is its
    # transpose (no conjugation: PyTorch's transposed convolution is linear).
    w = random_array(rng, (3, 2, 2, 3), dtype)
    y = random_array(rng, (1, 3, 3, 2), dtype)
    got = gpuconv.conv_transpose2d(backend.xp.asarray(y), backend.xp.asarray(w), stride=2,
                                   padding=(0, 1), method=method)
    assert got.dtype == np.dtype(dtype)
    wide = np.complex128 if np.dtype(dtype).kind == "c" else np.float64
    out_shape = got.shape
    size = int(np.prod(out_shape))
    matrix = np.stack([
        reference.conv2d(np.eye(size, dtype=wide)[j].reshape(out_shape), w.astype(wide),
                         stride=(2, 2), padding=(0, 0, 1, 1)).ravel()
        for j in range(size)], axis=1)
    expected = (matrix.T @ y.astype(wide).ravel()).reshape(out_shape)
    assert_close(got, expected, dtype, xp=backend.xp)


@pytest.mark.parametrize("limit", [1, 4096, 100_000])
def test_gemm_chunks_under_a_tiny_scratch_limit(backend, rng, limit):
    # The scratch bound forces many chunks (down to one column block each);
    # chunk edges must not change the result.
    x = rng.standard_normal((3, 4, 11, 9))
    w = rng.standard_normal((6, 2, 3, 2))
    y = rng.standard_normal((3, 4, 5, 6))
    wt = rng.standard_normal((4, 3, 3, 2))
    planes = rng.standard_normal((3, 13, 11))
    k = rng.standard_normal((4, 5))
    with gpuconv.scratch_limit(limit):
        got = gpuconv.conv2d(x, w, None, (2, 1), (1, 2), (1, 2), 2, method="gemm",
                             padding_mode="circular")
        got_t = gpuconv.conv_transpose2d(y, wt, None, 2, 1, 1, 2, 1, method="gemm")
        got_c = gpuconv.correlate2d(planes, k, "same", "symm", method="gemm")
    assert_close(got,
                 reference.conv2d(x, w, None, (2, 1), (1, 1, 2, 2), (1, 2), 2, "circular"),
                 np.float64, xp=backend.xp)
    assert_close(got_t, gpuconv.conv_transpose2d(y, wt, None, 2, 1, 1, 2, 1, method="direct"),
                 np.float64)
    assert_close(got_c,
                 np.stack([scipy.signal.correlate2d(p, k, "same", "symm") for p in planes]),
                 np.float64, xp=backend.xp)

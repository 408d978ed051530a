"""gpuconv.nn gradients: central finite differences in float64, and torch.autograd.

Every layer is checked as the scalar ``f = sum(layer(x) * g)`` for a random
upstream gradient ``g``: ``backward(g)`` must return df/dx and leave df/dp in
each parameter's ``grad``.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpuconv
from conftest import assert_close, check_array, random_array
from gpuconv import nn

# (name, layer kwargs, input shape): strides, paddings (symmetric, 'same' with
# its odd pixel at the bottom/right, rectangular), dilations, groups, every
# padding mode, sizes where the stride leaves unread rows, no bias, unbatched.
CONV_CASES = [
    ("plain", dict(in_channels=2, out_channels=3, kernel_size=3), (2, 2, 6, 7)),
    ("stride2_pad1", dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1),
     (2, 2, 7, 8)),
    ("stride3_remainder", dict(in_channels=1, out_channels=2, kernel_size=2, stride=3),
     (2, 1, 8, 9)),
    ("dilation2_pad2", dict(in_channels=2, out_channels=2, kernel_size=3, dilation=2,
                            padding=2), (1, 2, 7, 6)),
    ("rect_kernel_mixed", dict(in_channels=2, out_channels=2, kernel_size=(2, 3),
                               stride=(2, 1), dilation=(1, 2), padding=(1, 0)), (2, 2, 7, 8)),
    ("groups2", dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, stride=(1, 2),
                     padding=1), (2, 4, 6, 7)),
    ("depthwise", dict(in_channels=3, out_channels=3, kernel_size=3, groups=3, padding=1),
     (2, 3, 5, 5)),
    ("same_stride2", dict(in_channels=2, out_channels=2, kernel_size=4, stride=2,
                          padding="same"), (2, 2, 7, 6)),
    ("no_bias", dict(in_channels=2, out_channels=2, kernel_size=(1, 2), bias=False),
     (2, 2, 6, 8)),
    ("reflect", dict(in_channels=2, out_channels=2, kernel_size=3, padding=(1, 2),
                     padding_mode="reflect"), (2, 2, 6, 7)),
    ("replicate_stride2", dict(in_channels=2, out_channels=3, kernel_size=3, stride=2,
                               padding=2, padding_mode="replicate"), (2, 2, 7, 6)),
    ("circular_groups_dilation", dict(in_channels=4, out_channels=2, kernel_size=3, groups=2,
                                      dilation=2, padding=(2, 3), padding_mode="circular"),
     (1, 4, 6, 5)),
    ("reflect_same", dict(in_channels=1, out_channels=2, kernel_size=(2, 4), padding="same",
                          padding_mode="reflect"), (2, 1, 5, 6)),
    ("unbatched", dict(in_channels=2, out_channels=2, kernel_size=3, stride=2, padding=1),
     (2, 7, 7)),
]


def _to_np(a):
    return gpuconv.backend.resolve_backend(a=a).to_numpy(a)


def numeric_grad(f, arr, eps=1e-6):
    """Central differences of the scalar ``f()`` with respect to the NumPy array ``arr``."""
    g = np.zeros_like(arr)
    flat, gflat = arr.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g


def check_layer(layer, x_np, rng, backend, rtol=1e-6):
    """Analytic gradients of ``sum(layer(x) * g)`` against finite differences."""
    be = backend
    layer.to(be.name, np.float64)
    params = layer.parameters()
    masters = [_to_np(p.data).copy() for p in params]
    y = layer(be.asarray(x_np))
    check_array(y, be.xp, np.float64, y.shape)
    g_np = rng.standard_normal(tuple(y.shape))
    layer.zero_grad()
    dx = layer.backward(be.asarray(g_np))
    check_array(dx, be.xp, np.float64, x_np.shape)
    for p in params:
        check_array(p.grad, be.xp, np.float64, p.data.shape)
    dx = _to_np(dx)
    analytic = [_to_np(p.grad) for p in params]

    def f():
        for p, m in zip(params, masters):
            p.data = be.asarray(m)
        return float((_to_np(layer(be.asarray(x_np))) * g_np).sum())

    expected_dx = numeric_grad(f, x_np)
    scale = max(np.abs(expected_dx).max(), 1.0)
    np.testing.assert_allclose(dx, expected_dx, rtol=rtol, atol=rtol * scale)
    for p, m, a in zip(params, masters, analytic):
        expected = numeric_grad(f, m)
        assert a.shape == expected.shape, p
        scale = max(np.abs(expected).max(), 1.0)
        np.testing.assert_allclose(a, expected, rtol=rtol, atol=rtol * scale,
                                   err_msg=f"gradient of {p.name}")


@pytest.mark.slow_on_standin("finite differences: a forward pass per weight, 1-6 s each")
@pytest.mark.parametrize("name,kwargs,shape", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv2d_finite_differences(backend, rng, name, kwargs, shape):
    layer = nn.Conv2D(**kwargs, seed=rng, dtype=np.float64, backend=backend.name)
    check_layer(layer, rng.standard_normal(shape), rng, backend)


@pytest.mark.parametrize("name,kwargs,shape", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_weight_grad_rowpitched_equals_conv2d(backend, rng, name, kwargs, shape):
    # 'auto', 'gemm' and (NumPy) 'direct' compute small-stride weight gradients as
    # matrix products over the row-pitched input; that must be the conv2d of the
    # swapped arrays.
    from gpuconv.conv import _resolve_padding
    from gpuconv.nn.functional import _as_swapped_conv2d, conv2d_weight_grad, pad_nchw

    layer = nn.Conv2D(**kwargs, seed=rng, dtype=np.float64, backend=backend.name)
    x = rng.standard_normal(shape)
    x = x if x.ndim == 4 else x[None]
    y = layer(backend.asarray(x))
    g = backend.asarray(rng.standard_normal(tuple(y.shape)))
    pads = _resolve_padding(layer.padding, x.shape[-2:], layer.kernel_size, layer.stride,
                            layer.dilation)
    common = dict(stride=layer.stride, pads=pads, dilation=layer.dilation, groups=layer.groups,
                  padding_mode=layer.padding_mode)
    # The oracle: conv2d (direct) of the swapped arrays, the gradient's definition.
    kh, kw = layer.kernel_size
    Ho, Wo = g.shape[2:]
    need = [d * (k - 1) + s * (n - 1) + 1 for d, k, s, n in
            zip(layer.dilation, (kh, kw), layer.stride, (Ho, Wo))]
    xpad = pad_nchw(backend.xp, backend.asarray(x), pads, layer.padding_mode)
    swapped = _as_swapped_conv2d(backend.xp, xpad[:, :, :need[0], :need[1]], g, layer.stride,
                                 layer.dilation, layer.groups, "direct")
    for method in ("auto", "gemm", "direct"):
        got = conv2d_weight_grad(backend.asarray(x), g, layer.kernel_size, **common,
                                 method=method)
        np.testing.assert_allclose(_to_np(got), _to_np(swapped), rtol=1e-12, atol=1e-12,
                                   err_msg=method)


@pytest.mark.slow_on_standin("2-3 s of emulated kernels")
@pytest.mark.parametrize("method", ["direct", "gemm"])
def test_conv2d_gradient_is_method_independent(backend, rng, method):
    # The three convolutions of a step run with the layer's method; each must
    # give the finite-difference gradient, not only "auto".
    layer = nn.Conv2D(3, 4, 3, stride=2, padding=1, groups=1, seed=rng, dtype=np.float64,
                      backend=backend.name, method=method)
    check_layer(layer, rng.standard_normal((2, 3, 7, 6)), rng, backend)


@pytest.mark.parametrize("layer_factory,shape", [
    (lambda rng: nn.Linear(5, 3, seed=rng), (4, 5)),
    (lambda rng: nn.Linear(4, 2, bias=False, seed=rng), (2, 3, 4)),
    (lambda rng: nn.ReLU(), (3, 2, 4, 4)),
    (lambda rng: nn.Flatten(), (3, 2, 3, 2)),
    (lambda rng: nn.MaxPool2D(2), (2, 2, 6, 6)),
    (lambda rng: nn.MaxPool2D(3, stride=2, padding=1), (2, 2, 7, 6)),
    (lambda rng: nn.MaxPool2D((2, 3), stride=(1, 2)), (1, 2, 5, 7)),
    (lambda rng: nn.AvgPool2D(2), (2, 2, 6, 6)),
    (lambda rng: nn.AvgPool2D(3, stride=2, padding=1), (2, 2, 7, 6)),
    (lambda rng: nn.AvgPool2D((3, 2), stride=(2, 3)), (1, 3, 8, 8)),
], ids=["linear", "linear_3d_nobias", "relu", "flatten", "maxpool2", "maxpool3_s2_p1",
        "maxpool_rect_overlap", "avgpool2", "avgpool3_s2_p1", "avgpool_rect"])
def test_layer_finite_differences(backend, rng, layer_factory, shape):
    x = rng.standard_normal(shape)
    # Keep pooling windows free of ties and ReLU inputs away from the kink,
    # where the function is not differentiable.
    x += np.sign(x) * 0.05
    check_layer(layer_factory(rng), x, rng, backend)


@pytest.mark.slow_on_standin("finite differences through two layers, 9 s")
def test_sequential_finite_differences(backend, rng):
    net = nn.Sequential(
        nn.Conv2D(2, 3, 3, padding=1, padding_mode="reflect", seed=rng), nn.ReLU(),
        nn.MaxPool2D(2), nn.Conv2D(3, 4, 2, stride=2, groups=1, seed=rng), nn.Flatten(),
        nn.Linear(16, 3, seed=rng))
    check_layer(net, rng.standard_normal((2, 2, 8, 8)), rng, backend, rtol=1e-5)


def test_gradients_accumulate_until_zero_grad(backend, rng):
    layer = nn.Conv2D(2, 2, 3, seed=rng, dtype=np.float64, backend=backend.name)
    x = backend.asarray(rng.standard_normal((1, 2, 5, 5)))
    g = backend.asarray(rng.standard_normal((1, 2, 3, 3)))
    layer(x)
    layer.backward(g)
    once = _to_np(layer.weight.grad).copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(_to_np(layer.weight.grad), 2 * once, rtol=1e-12)
    # As in PyTorch, zero_grad forgets the gradients; the next backward stores its own.
    layer.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(_to_np(layer.weight.grad), once, rtol=1e-12)
    nn.SGD(layer.parameters(), lr=0.1).zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None


def test_optimizer_skips_parameters_without_a_gradient(rng):
    net = nn.Sequential(nn.Linear(3, 2, seed=rng, dtype=np.float64),
                        nn.Linear(2, 2, seed=rng, dtype=np.float64))
    before = [p.data.copy() for p in net.parameters()]
    opt = nn.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    net.zero_grad()
    net[1].weight.grad = rng.standard_normal((2, 2))
    opt.step()
    changed = [not np.array_equal(b, p.data) for b, p in zip(before, net.parameters())]
    assert changed == [False, False, True, False]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_loss_finite_differences(rng, reduction):
    pred, target = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    value, grad = nn.mse_loss(pred, target, reduction=reduction)
    expected = ((pred - target) ** 2).sum() / (pred.size if reduction == "mean" else 1)
    assert value == pytest.approx(expected, rel=1e-12)
    fd = numeric_grad(lambda: nn.mse_loss(pred, target, reduction=reduction).value, pred)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("soft", [False, True], ids=["labels", "probabilities"])
def test_cross_entropy_finite_differences(rng, reduction, soft):
    logits = 3 * rng.standard_normal((5, 4))
    if soft:
        target = rng.random((5, 4))
        target /= target.sum(axis=1, keepdims=True)
    else:
        target = rng.integers(0, 4, size=5)
    value, grad = nn.cross_entropy(logits, target, reduction=reduction)
    # Oracle: the textbook formula, fine for these moderate logits.
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    onehot = target if soft else np.eye(4)[target]
    expected = -(onehot * np.log(p)).sum() / (5 if reduction == "mean" else 1)
    assert value == pytest.approx(expected, rel=1e-12)
    fd = numeric_grad(lambda: nn.cross_entropy(logits, target, reduction=reduction).value,
                      logits)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_cross_entropy_is_stable_for_huge_logits(rng):
    logits = rng.standard_normal((4, 5))
    labels = rng.integers(0, 5, size=4)
    small = nn.cross_entropy(logits, labels)
    # Shifting a row by a constant changes nothing mathematically; 1e4 would
    # overflow exp() in the textbook formula.
    big = nn.cross_entropy(logits + 1e4, labels)
    assert np.isfinite(big.value)
    assert big.value == pytest.approx(small.value, rel=1e-9)
    np.testing.assert_allclose(big.grad, small.grad, atol=1e-12)
    far = nn.cross_entropy(np.array([[1e4, -1e4]]), np.array([1]))
    assert far.value == pytest.approx(2e4)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_])
def test_losses_of_integer_predictions_have_float64_gradients(rng, dtype):
    pred = rng.integers(0, 2 if dtype is np.bool_ else 5, size=(4, 3)).astype(dtype)
    target = rng.standard_normal((4, 3))
    value, grad = nn.mse_loss(pred, target)
    exact = pred.astype(np.float64)
    assert grad.dtype == np.float64
    np.testing.assert_allclose(grad, 2 * (exact - target) / exact.size, rtol=1e-15)
    assert value == pytest.approx(((exact - target) ** 2).mean(), rel=1e-14)
    labels = rng.integers(0, 3, size=4)
    value, grad = nn.cross_entropy(pred, labels, reduction="sum")
    expected = nn.cross_entropy(exact, labels, reduction="sum")
    assert grad.dtype == np.float64 and np.any(grad != 0)
    np.testing.assert_array_equal(grad, expected.grad)
    assert value == expected.value


def test_losses_keep_a_floating_prediction_dtype(rng):
    pred = rng.standard_normal((4, 3)).astype(np.float32)
    assert nn.mse_loss(pred, rng.standard_normal((4, 3))).grad.dtype == np.float32
    assert nn.cross_entropy(pred, np.array([0, 1, 2, 0])).grad.dtype == np.float32


def test_cross_entropy_accepts_distributions_up_to_rounding(rng):
    logits = rng.standard_normal((6, 5))
    labels = rng.integers(0, 5, size=6)
    for dtype in (np.float16, np.float32, np.float64, np.int64, np.bool_):
        onehot = np.eye(5, dtype=dtype)[labels]
        got = nn.cross_entropy(logits, onehot)
        ref = nn.cross_entropy(logits, labels)
        assert got.value == pytest.approx(ref.value, rel=1e-12)
        np.testing.assert_allclose(got.grad, ref.grad, rtol=1e-12, atol=1e-15)
    soft = rng.random((6, 5)).astype(np.float32)
    soft /= soft.sum(axis=1, keepdims=True)     # rows sum to 1 within float32 rounding
    nn.cross_entropy(logits, soft)


@pytest.mark.parametrize("target,match", [
    (lambda t: t * 1.1, r"row \d sums to 1\.1"),
    (lambda t: t * 0.5, r"row \d sums to 0\.5"),
    # Rows still summing to 1, with a negative entry (every entry is < 1).
    (lambda t: t + np.eye(5)[0] - np.eye(5)[1], r"an entry is -"),
    (lambda t: np.log(t), r"an entry is -"),   # log-probabilities passed as targets
])
def test_cross_entropy_refuses_rows_that_are_not_distributions(rng, target, match):
    soft = rng.random((6, 5)) + 0.1
    soft /= soft.sum(axis=1, keepdims=True)
    with pytest.raises(ValueError, match=r"target of shape \(6, 5\) must hold a probability "
                                         r"distribution per row.*" + match):
        nn.cross_entropy(rng.standard_normal((6, 5)), target(soft))


def test_cross_entropy_refuses_complex_targets():
    with pytest.raises(TypeError, match="target probabilities must be real"):
        nn.cross_entropy(np.zeros((1, 2)), np.array([[1 + 0j, 0]]))


def _sgd_reference(start, grads, lr, momentum, dampening, weight_decay, nesterov):
    """torch.optim.SGD's update, written out from its documentation, in float64."""
    p, buf, path = start.copy(), None, []
    for g in grads:
        d = g + weight_decay * p
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
        path.append(p.copy())
    return path


SGD_SETTINGS = [
    dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False),
    dict(momentum=0.0, dampening=0.0, weight_decay=0.1, nesterov=False),
    dict(momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False),
    dict(momentum=0.9, dampening=0.0, weight_decay=1e-2, nesterov=False),
    dict(momentum=0.5, dampening=0.3, weight_decay=1e-2, nesterov=False),
    dict(momentum=0.9, dampening=1.0, weight_decay=0.0, nesterov=False),
    dict(momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=True),
    dict(momentum=0.7, dampening=0.0, weight_decay=0.05, nesterov=True),
]


@pytest.mark.parametrize("settings", SGD_SETTINGS, ids=lambda s: "-".join(
    f"{k}{v}" for k, v in s.items()))
def test_sgd_follows_the_written_out_update(rng, settings):
    start = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(5)]
    expected = _sgd_reference(start, grads, 0.1, **settings)
    p = nn.Parameter(start.copy())
    opt = nn.SGD([p], lr=0.1, **settings)
    for g, want in zip(grads, expected):
        p.grad = g.copy()
        opt.step()
        # Changing the gradient in place after the step must not reach the buffer.
        p.grad *= 7
        np.testing.assert_allclose(p.data, want, rtol=1e-13, atol=1e-15)
    # The settings matter: plain gradient descent ends elsewhere (unless they are plain).
    plain = _sgd_reference(start, grads, 0.1, 0.0, 0.0, 0.0, False)[-1]
    assert np.array_equal(plain, p.data) == (settings == SGD_SETTINGS[0])


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(momentum=0.9, dampening=1.5), ValueError, r"dampening must be >= 0.0 and <= 1.0"),
    (dict(momentum=0.9, dampening=-0.1), ValueError, r"dampening must be >= 0.0"),
    (dict(momentum=0.0, nesterov=True), ValueError, r"nesterov=True needs momentum > 0"),
    (dict(momentum=0.9, dampening=0.1, nesterov=True), ValueError, r"dampening == 0"),
    (dict(momentum=0.9, nesterov="yes"), TypeError, r"nesterov must be a bool"),
])
def test_sgd_bad_settings(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        nn.SGD(nn.Linear(2, 2).parameters(), lr=0.1, **kwargs)


def test_conv2d_init_is_pytorch_uniform_and_seeded():
    a = nn.Conv2D(64, 32, 3, groups=2, seed=7)
    b = nn.Conv2D(64, 32, 3, groups=2, seed=7)
    c = nn.Conv2D(64, 32, 3, groups=2, seed=8)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert not np.array_equal(a.weight.data, c.weight.data)
    bound = 1 / np.sqrt(32 * 3 * 3)  # fan_in = in_channels / groups * kh * kw
    w = a.weight.data
    assert w.dtype == np.float32 and w.shape == (32, 32, 3, 3)
    assert np.abs(w).max() <= bound
    # 9216 uniform draws: the extremes come close to the bound, the mean near 0.
    assert np.abs(w).max() > 0.99 * bound
    assert abs(float(w.mean())) < 0.05 * bound
    assert np.abs(a.bias.data).max() <= bound


def test_init_bound_matches_torch():
    torch = pytest.importorskip("torch",
                                reason="torch is not installed: no PyTorch init to compare")
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(6, 4, (3, 5), groups=2)
    ours = nn.Conv2D(6, 4, (3, 5), groups=2, seed=0)
    for name in ("weight", "bias"):
        t = getattr(ref, name).detach().numpy()
        o = getattr(ours, name).data
        assert t.shape == o.shape
        # Same support: the largest |value| of each is below the shared bound...
        bound = 1 / np.sqrt(3 * 3 * 5)
        assert np.abs(t).max() <= bound and np.abs(o).max() <= bound
    # ... and torch's 180 weights reach close to it (P(max < 0.9 bound) = 0.9**180),
    # so the bound is not smaller for torch either.
    assert np.abs(ref.weight.detach().numpy()).max() > 0.9 * bound
    assert np.abs(ours.weight.data).max() > 0.9 * bound


# -- torch.autograd ---------------------------------------------------------

TORCH_PAD = {"reflect": "reflect", "replicate": "replicate", "circular": "circular",
             "zeros": "constant"}


def _torch_conv_grads(torch, layer, x, g):
    from gpuconv.conv import _resolve_padding

    w = torch.tensor(_to_np(layer.weight.data), requires_grad=True)
    b = None if layer.bias is None else torch.tensor(_to_np(layer.bias.data), requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    batched = xt if xt.ndim == 4 else xt[None]
    top, bottom, left, right = _resolve_padding(layer.padding, tuple(x.shape[-2:]),
                                                layer.kernel_size, layer.stride, layer.dilation)
    padded = torch.nn.functional.pad(batched, (left, right, top, bottom),
                                     mode=TORCH_PAD[layer.padding_mode])
    y = torch.nn.functional.conv2d(padded, w, b, stride=layer.stride, dilation=layer.dilation,
                                   groups=layer.groups)
    if xt.ndim == 3:
        y = y[0]
    (y * torch.tensor(g)).sum().backward()
    return y.detach().numpy(), xt.grad.numpy(), w.grad.numpy(), \
        (None if b is None else b.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,kwargs,shape", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv2d_matches_torch_autograd(backend, rng, name, kwargs, shape, dtype):
    torch = pytest.importorskip("torch", reason="torch is not installed: no autograd to compare")
    layer = nn.Conv2D(**kwargs, seed=rng, dtype=dtype, backend=backend.name)
    x = rng.standard_normal(shape).astype(dtype)
    y = layer(backend.asarray(x))
    g = rng.standard_normal(tuple(y.shape)).astype(dtype)
    dx = layer.backward(backend.asarray(g))
    ty, tdx, tdw, tdb = _torch_conv_grads(torch, layer, x, g)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    check_array(y, backend.xp, dtype, ty.shape)
    check_array(dx, backend.xp, dtype, tdx.shape)
    check_array(layer.weight.grad, backend.xp, dtype, tdw.shape)
    np.testing.assert_allclose(_to_np(y), ty, **tol)
    np.testing.assert_allclose(_to_np(dx), tdx, **tol)
    np.testing.assert_allclose(_to_np(layer.weight.grad), tdw, **tol)
    if tdb is not None:
        np.testing.assert_allclose(_to_np(layer.bias.grad), tdb, **tol)


def test_lenet_step_matches_torch_autograd(backend, rng):
    torch = pytest.importorskip("torch", reason="torch is not installed: no autograd to compare")
    from gpuconv.examples import lenet_digits

    net = lenet_digits(seed=3, dtype=np.float64, backend=backend.name)
    ref = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(256, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 10)).double()
    ours = net.parameters()
    theirs = list(ref.parameters())
    assert [p.shape for p in ours] == [tuple(p.shape) for p in theirs]
    with torch.no_grad():
        for p, t in zip(ours, theirs):
            t.copy_(torch.tensor(_to_np(p.data)))
    x = rng.random((6, 1, 8, 8))
    labels = rng.integers(0, 10, size=6)
    loss, grad = nn.cross_entropy(net(backend.asarray(x)), backend.asarray(labels))
    net.zero_grad()
    net.backward(grad)
    tloss = torch.nn.functional.cross_entropy(ref(torch.tensor(x)), torch.tensor(labels))
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    for p, t in zip(ours, theirs):
        check_array(p.grad, backend.xp, np.float64, tuple(t.shape))
        np.testing.assert_allclose(_to_np(p.grad), t.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("settings", SGD_SETTINGS, ids=lambda s: "-".join(
    f"{k}{v}" for k, v in s.items()))
def test_sgd_matches_torch(rng, settings):
    torch = pytest.importorskip("torch", reason="torch is not installed: no optimizer to compare "
                                                "(test_sgd_follows_the_written_out_update checks "
                                                "the same formula without it)")
    start = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(4)]
    p = nn.Parameter(start.copy())
    opt = nn.SGD([p], lr=0.1, **settings)
    t = torch.tensor(start.copy(), requires_grad=True)
    topt = torch.optim.SGD([t], lr=0.1, **settings)
    for g in grads:
        p.grad = g.copy()
        opt.step()
        t.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("layer,tlayer,shape", [
    (lambda: nn.MaxPool2D(3, stride=2, padding=1),
     lambda torch: torch.nn.MaxPool2d(3, stride=2, padding=1), (2, 3, 9, 8)),
    (lambda: nn.AvgPool2D(3, stride=2, padding=1),
     lambda torch: torch.nn.AvgPool2d(3, stride=2, padding=1), (2, 3, 9, 8)),
], ids=["maxpool", "avgpool"])
def test_pooling_matches_torch(rng, layer, tlayer, shape):
    torch = pytest.importorskip("torch", reason="torch is not installed: nothing to compare")
    x = rng.standard_normal(shape)
    ours = layer()
    y = ours(x)
    g = rng.standard_normal(y.shape)
    dx = ours.backward(g)
    xt = torch.tensor(x, requires_grad=True)
    yt = tlayer(torch)(xt)
    (yt * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
def test_weight_grad_at_large_strides_equals_conv2d(rng, dtype):
    # Past stride[0] * stride[1] == 4 (and for complex at any stride) the NumPy
    # backend takes one product per tap over strided views; the oracle is the
    # gradient's definition, conv2d (direct) of the swapped arrays.
    from gpuconv.nn.functional import _as_swapped_conv2d, conv2d_weight_grad, pad_nchw

    cases = [  # (x shape, O, kernel, stride, pads, dilation, groups)
        ((2, 4, 17, 13), 6, (3, 2), (3, 4), (1, 1, 0, 2), (2, 1), 2),
        ((3, 2, 12, 12), 3, (1, 1), (5, 2), (0, 0, 0, 0), (1, 1), 1),
        ((1, 3, 9, 11), 3, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 3),
        ((2, 2, 20, 7), 2, (4, 2), (2, 3), (2, 0, 1, 1), (1, 2), 1),
    ]
    for shape, O, (kh, kw), stride, pads, dilation, groups in cases:
        x = random_array(rng, shape, dtype)
        Ho = (shape[2] + pads[0] + pads[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        Wo = (shape[3] + pads[2] + pads[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        g = random_array(rng, (shape[0], O, Ho, Wo), dtype)
        need = (dilation[0] * (kh - 1) + stride[0] * (Ho - 1) + 1,
                dilation[1] * (kw - 1) + stride[1] * (Wo - 1) + 1)
        xpad = pad_nchw(np, x, pads, "zeros")[:, :, :need[0], :need[1]]
        expected = _as_swapped_conv2d(np, xpad, g, stride, dilation, groups, "direct")
        for method in ("auto", "gemm", "direct"):
            got = conv2d_weight_grad(x, g, (kh, kw), stride, pads, dilation, groups,
                                     method=method)
            check_array(got, np, np.dtype(dtype), (O, shape[1] // groups, kh, kw))
            assert_close(got, expected, dtype)


def test_weight_grad_of_a_mostly_padded_strided_layer_is_quick(rng):
    # A 252² output gradient at stride 4: as a conv2d of the swapped arrays with
    # method='direct' this looped over 63,504 kernel taps for minutes.  The bound
    # only catches that (it takes milliseconds), it is not a speed claim.
    import time

    from gpuconv.nn.functional import conv2d_weight_grad

    x = rng.standard_normal((2, 3, 9, 9))
    g = rng.standard_normal((2, 4, 252, 252))
    results = {}
    for method in ("direct", "gemm", "auto"):
        start = time.perf_counter()
        results[method] = conv2d_weight_grad(x, g, (3, 3), (4, 4), (500,) * 4, (1, 1), 1,
                                             method=method)
        assert time.perf_counter() - start < 10.0, method
    # Only the input's 9x9 pixels are nonzero; tap (u, v) meets them at output
    # pixels (i, j) with 4i + u - 500 and 4j + v - 500 inside the image.
    expected = np.zeros((4, 3, 3, 3))
    for u in range(3):
        for v in range(3):
            rows = [i for i in range(252) if 0 <= 4 * i + u - 500 < 9]
            cols = [j for j in range(252) if 0 <= 4 * j + v - 500 < 9]
            for i in rows:
                for j in cols:
                    expected[:, :, u, v] += np.einsum(
                        "no,nc->oc", g[:, :, i, j], x[:, :, 4 * i + u - 500, 4 * j + v - 500])
    for method, got in results.items():
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=method)

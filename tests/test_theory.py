"""gpuconv.theory: every claim holds on each backend, the objects it builds agree with
independent oracles, and the checks can fail."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import scipy.sparse

import gpuconv
from gpuconv import theory
from gpuconv.theory._claim import _abs_full_conv, _gamma
from gpuconv.theory._kernels import _best_residual


def test_every_claim_holds(backend):
    results = theory.check(backend.name)
    assert len(results) >= 15
    for r in results:
        assert r.passed, (r.claim, r.max_error, r.tolerance, r.detail)
        assert r.tolerance >= 0 and r.max_error >= 0


def test_tolerances_are_tight_enough_to_catch_a_wrong_side():
    # Correlation is not commutative: the same tolerance machinery must reject it.
    rng = np.random.default_rng(1)
    f, g = rng.standard_normal((9, 7)), rng.standard_normal((4, 6))
    a = np.asarray(gpuconv.correlate2d(f, g))
    b = np.asarray(gpuconv.correlate2d(g, f))
    tol = 2 * _gamma(g.size) * float(_abs_full_conv(f, g).max())
    assert np.abs(a - b).max() > 1e3 * tol
    # Translation equivariance fails near the border with a zero boundary.
    r = theory.translation_equivariance_claim("fill")
    assert "near it the difference is" in r.detail
    near = float(r.detail.split("near it the difference is ")[1].rstrip(")"))
    assert near > 0.1


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_conv_matrix_matches_scipy(rng, mode, dtype):
    X = rng.standard_normal((6, 8)).astype(dtype)
    K = rng.standard_normal((3, 2)).astype(dtype)
    if np.dtype(dtype).kind == "c":
        X = X + 1j * rng.standard_normal(X.shape)
        K = K + 1j * rng.standard_normal(K.shape)
    expected = scipy.signal.correlate2d(X, K, mode).ravel()
    np.testing.assert_allclose(theory.conv_matrix(K, X.shape, mode) @ X.ravel(), expected,
                               atol=1e-12)
    S = theory.conv_matrix(K, X.shape, mode, sparse=True)
    assert scipy.sparse.issparse(S)
    np.testing.assert_allclose(S @ X.ravel(), expected, atol=1e-12)


def test_conv_matrix_rejects_a_kernel_that_does_not_fit():
    with pytest.raises(ValueError, match="fit"):
        theory.conv_matrix(np.ones((5, 5)), (3, 3), "valid")


@pytest.mark.parametrize("layers,shape", [
    ([(3,)], (9, 9)),
    ([(3, 1, 1), (3, 1, 1), (3, 1, 1)], (20, 21)),
    ([(7, 2, 3), (3, 2, 1), (3, 1, 1, 2)], (64, 60)),
    ([((3, 5), (2, 1), (0, 2), (1, 3))], (15, 30)),
])
def test_receptive_field_matches_gradient_support(layers, shape):
    r = theory.receptive_field_claim(layers, shape)
    assert r.passed, r.detail


def test_receptive_field_against_torch_autograd():
    torch = pytest.importorskip("torch", reason="torch is an optional oracle, not installed")
    layers = [(5, 2, 2), (3, 1, 1, 2), (3, 2, 0)]
    x = torch.zeros((1, 1, 48, 48), dtype=torch.float64, requires_grad=True)
    y = x
    for k, s, p, *d in layers:
        w = torch.ones((1, 1, k, k), dtype=torch.float64)
        y = torch.nn.functional.conv2d(y, w, stride=s, padding=p, dilation=d[0] if d else 1)
    i, j = y.shape[2] // 2, y.shape[3] // 2
    y[0, 0, i, j].backward()
    nz = np.argwhere(x.grad[0, 0].numpy() != 0)
    rf = theory.receptive_field(layers)
    lo = [rf["start"][a] + (i, j)[a] * rf["jump"][a] for a in range(2)]
    assert tuple(nz.min(axis=0)) == (max(lo[0], 0), max(lo[1], 0))
    assert tuple(nz.max(axis=0)) == (min(lo[0] + rf["size"][0] - 1, 47),
                                     min(lo[1] + rf["size"][1] - 1, 47))


def test_derivative_kernels_match_the_tables():
    # Fornberg's central-difference coefficients.
    np.testing.assert_allclose(theory.derivative_kernel(1, accuracy=4)[0],
                               [1 / 12, -2 / 3, 0, 2 / 3, -1 / 12], atol=1e-13)
    np.testing.assert_allclose(theory.derivative_kernel(2, accuracy=3)[0],
                               [-1 / 12, 4 / 3, -5 / 2, 4 / 3, -1 / 12], atol=1e-13)
    np.testing.assert_allclose(theory.derivative_kernel(3)[0], [-1, 3, -3, 1], atol=1e-13)
    for d in range(1, 6):
        assert theory.derivative_kernel(d).shape == (1, d + 1)  # the minimum size
        assert _best_residual(d, d) > 0.1                # d taps cannot do it
    with pytest.raises(ValueError, match="accuracy must be >= 1"):
        theory.derivative_kernel(2, accuracy=0)
    with pytest.raises(TypeError, match="order must be an int"):
        theory.derivative_kernel(1.5)


def test_derivative_kernel_differentiates_a_smooth_function():
    h = 0.01
    t = np.arange(0, 2, h)
    y = np.sin(t)[None, :]
    for acc, expect in [(2, 1e-4), (4, 1e-8)]:
        k = theory.derivative_kernel(1, accuracy=acc) / h
        d = np.asarray(gpuconv.correlate2d(y, k, "valid"))[0]
        c = (k.shape[1] - 1) // 2
        assert np.abs(d - np.cos(t[c:c + d.size])).max() < expect


def test_laplacian_and_summed_area():
    np.testing.assert_array_equal(theory.laplacian_kernel(),
                                  [[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    X = np.random.default_rng(3).standard_normal((5, 7))
    S = theory.summed_area(X)
    assert S[3, 4] == pytest.approx(X[:4, :5].sum())


def test_diagonal_edges_answers():
    r = theory.diagonal_edges(5)
    # Not the zero matrix, and transposing X changes the answer:
    assert np.count_nonzero(r["K_on_X"]) == 4 and np.all(np.diag(r["K_on_X"], -1) == -1)
    assert np.all(np.diag(r["K_on_XT"]) == 1) and np.count_nonzero(r["K_on_XT"]) == 4
    assert np.all(np.diag(r["KT_on_X"]) == 1)
    np.testing.assert_array_equal(r["KT_on_XT"], r["K_on_X"].T)
    # Same answers from SciPy:
    np.testing.assert_array_equal(r["K_on_X"], scipy.signal.correlate2d(r["X"], r["K"], "valid"))


def test_cli_check_prints_a_table_and_exit_code(capsys):
    from gpuconv.cli import main

    assert main(["check", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "max error" in out and "tolerance" in out and "FAIL" not in out
    assert out.count("pass") >= 15


def test_cli_check_fails_when_a_claim_fails(monkeypatch, capsys):
    from gpuconv.cli import main

    bad = theory.ClaimResult("a planted false claim", 1.0, 0.0, False, "planted")
    monkeypatch.setattr(theory, "_claims", lambda: [lambda backend=None: bad])
    assert main(["check"]) == 1
    assert "FAIL" in capsys.readouterr().out

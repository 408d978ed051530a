"""The ``train-step`` benchmark grids time the right computations."""

from __future__ import annotations

import numpy as np
import pytest

from gpuconv.backend import get_backend_object
from gpuconv.bench import GRIDS


@pytest.mark.parametrize("quick", [True, False], ids=["quick", "full"])
def test_train_step_grids_are_registered(quick):
    cases = GRIDS["train-step"].cases(quick)
    assert cases == GRIDS["train-step-parts"].cases(quick)
    assert {c.params["dtype"] for c in cases} == ({"float32"} if quick else {"float32", "float64"})
    if not quick:
        layers = {(p["N"], p["C"], p["H"], p["W"], p["C_out"], p["kernel"])
                  for p in (c.params for c in cases)}
        assert layers == {(32, 3, 32, 32, 16, 5), (32, 64, 28, 28, 64, 3),
                          (8, 256, 14, 14, 256, 3), (1, 1, 28, 28, 6, 5)}


def test_train_step_columns_compute_the_gradients(rng):
    torch = pytest.importorskip("torch", reason="torch is not installed: no anchor to compare")
    be = get_backend_object("numpy")
    step, parts = GRIDS["train-step"], GRIDS["train-step-parts"]
    for case in step.cases(True):
        inputs = step.setup(case, be, rng)
        x = torch.from_numpy(inputs["x_np"]).double().requires_grad_(True)
        w = torch.from_numpy(inputs["w_np"]).double().requires_grad_(True)
        y = torch.nn.functional.conv2d(x, w)
        y.backward(torch.from_numpy(inputs["g_np"]).double())
        for name in ("auto", "direct", "gemm", "torch"):
            grad_in = step.columns[name].factory(inputs, case, be)()
            np.testing.assert_allclose(np.asarray(grad_in), x.grad.numpy(), rtol=1e-4,
                                       atol=1e-4, err_msg=name)
        got = {name: np.asarray(parts.columns[name].factory(inputs, case, be)())
               for name in ("forward", "weight-grad", "input-grad")}
        np.testing.assert_allclose(got["forward"], y.detach().numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got["weight-grad"], w.grad.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got["input-grad"], x.grad.numpy(), rtol=1e-4, atol=1e-4)

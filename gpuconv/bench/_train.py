"""The ``train-step`` grid: one forward and backward pass of a convolution layer.

Rows are the conv layers of the ``conv2d`` grid (stride 1, no padding, with a
bias) in float32 and float64.  A gpuconv cell runs :class:`gpuconv.nn.Conv2D`
forward, then ``backward`` with a fixed random output gradient: the forward
convolution, the weight gradient (a correlation of the input with the output
gradient), the bias gradient and the input gradient (a transposed
convolution).  The ``torch`` anchor does the same with autograd on the
backend's device (the CPU for NumPy, CUDA for CuPy).  The ``forward``,
``weight-grad`` and ``input-grad`` columns time the three convolutions of the
gpuconv step separately, to show where its time goes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _cases as C
from ._columns import blocking, tensor, torch_on
from ._registry import Case, Grid, register_column, register_grid

__all__ = ["register"]

_GPUCONV_METHODS = ("auto", "direct", "gemm")


def _cases(quick: bool) -> list[Case]:
    layers = C.QUICK_CONV_LAYERS if quick else C.CONV_LAYERS
    dtypes = C.QUICK_CONV_DTYPES if quick else C.CONV_DTYPES
    return [Case(f"({N},{C},{H},{W})->{Co} {k}x{k} {dtype}",
                 {"N": N, "C": C, "H": H, "W": W, "C_out": Co, "kernel": k, "dtype": dtype},
                 family=f"{N},{C},{H},{W},{Co},{k},{dtype}")
            for dtype in dtypes for N, C, H, W, Co, k in layers]


def _setup(case: Case, backend: Any, rng: np.random.Generator) -> dict[str, Any]:
    p = case.params
    k = p["kernel"]
    x = rng.standard_normal((p["N"], p["C"], p["H"], p["W"])).astype(p["dtype"])
    w = rng.standard_normal((p["C_out"], p["C"], k, k)).astype(p["dtype"])
    b = rng.standard_normal(p["C_out"]).astype(p["dtype"])
    g = rng.standard_normal((p["N"], p["C_out"], p["H"] - k + 1, p["W"] - k + 1))
    g = g.astype(p["dtype"])
    return {"x_np": x, "w_np": w, "b_np": b, "g_np": g,
            "x": backend.asarray(x), "g": backend.asarray(g)}


def _layer(inputs: dict[str, Any], case: Case, backend: Any, method: str) -> Any:
    from gpuconv import nn

    p = case.params
    layer = nn.Conv2D(p["C"], p["C_out"], p["kernel"], dtype=p["dtype"], backend=backend.name,
                      method=method, seed=0)
    layer.weight.data = backend.asarray(inputs["w_np"])
    layer.bias.data = backend.asarray(inputs["b_np"])
    return layer


def _step(method: str):
    def factory(inputs, case, backend):
        layer = _layer(inputs, case, backend, method)
        x, g = inputs["x"], inputs["g"]

        def op():
            layer.weight.grad = layer.bias.grad = None
            layer(x)
            return layer.backward(g)
        return blocking(backend, op)
    return factory


def _part(part: str):
    def factory(inputs, case, backend):
        import gpuconv
        from gpuconv.nn import functional as F

        p = case.params
        k = p["kernel"]
        x, g = inputs["x"], inputs["g"]
        w = backend.asarray(inputs["w_np"])
        geometry = dict(stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1)
        if part == "forward":
            return blocking(backend, lambda: gpuconv.conv2d(x, w))
        if part == "weight-grad":
            return blocking(backend, lambda: F.conv2d_weight_grad(x, g, (k, k), **geometry))
        return blocking(backend, lambda: F.conv2d_input_grad(g, w, (p["H"], p["W"]),
                                                             **geometry))
    return factory


def _torch_step(inputs, case, backend):
    torch, device = torch_on(backend)
    x, w, b = (tensor(torch, inputs[n], device).requires_grad_(True)
               for n in ("x_np", "w_np", "b_np"))
    g = tensor(torch, inputs["g_np"], device)

    def op():
        x.grad = w.grad = b.grad = None
        torch.nn.functional.conv2d(x, w, b).backward(g)
        if device == "cuda":
            torch.cuda.synchronize()
        return x.grad
    return blocking(backend, op)


def _torch_forward(inputs, case, backend):
    torch, device = torch_on(backend)
    x, w, b = (tensor(torch, inputs[n], device) for n in ("x_np", "w_np", "b_np"))

    def op():
        with torch.no_grad():
            out = torch.nn.functional.conv2d(x, w, b)
        if device == "cuda":
            torch.cuda.synchronize()
        return out
    return blocking(backend, op)


def register() -> None:
    """Register the ``train-step`` and ``train-step-parts`` grids (idempotent)."""
    from ._registry import GRIDS

    if "train-step" in GRIDS:
        return
    grid = register_grid(Grid(
        "train-step", "Conv2D training step: forward + weight, bias and input gradients "
                      "(NCHW, stride 1, no padding)",
        _cases, _setup,
        notes="gpuconv columns run gpuconv.nn.Conv2D forward and backward with that "
              "method for all three convolutions. torch: conv2d + autograd backward on "
              "the backend's device."))
    for method in _GPUCONV_METHODS:
        register_column(grid.name, method, _step(method),
                        doc=f"nn.Conv2D(..., method={method!r}) forward + backward")
    register_column(grid.name, "torch", _torch_step, anchor=True,
                    doc="torch.nn.functional.conv2d + .backward() on the backend's device "
                        "(CPU for numpy, CUDA with TF32 off for cupy)")
    parts = register_grid(Grid(
        "train-step-parts", "Where a Conv2D training step's time goes (method='auto')",
        _cases, _setup,
        notes="The three convolutions of the gpuconv step, each timed alone; the ratios "
              "compare pieces, not alternatives. torch-forward: conv2d without autograd."))
    for part in ("forward", "weight-grad", "input-grad"):
        register_column(parts.name, part, _part(part),
                        doc=f"only the {part} convolution of the 'auto' step")
    register_column(parts.name, "torch-forward", _torch_forward, anchor=True,
                    doc="torch.nn.functional.conv2d(x, w, b) on the backend's device, "
                        "no autograd")

"""The built-in grids: single-channel valid correlation and four conv layers.

Anchor columns import their libraries only when a case is set up, so that
importing :mod:`gpuconv.bench` imports neither torch nor CuPy.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from ._registry import Case, Grid, Unavailable, register_column, register_grid

__all__ = ["PLANE_SIZES", "PLANE_KERNELS", "CONV_LAYERS", "GPUCONV_METHODS", "torch_threads"]

PLANE_SIZES = (256, 1024, 4096)
PLANE_KERNELS = (3, 7, 15, 31)
# (N, C_in, H, W, C_out, k): LeNet-ish, a small CIFAR layer, two ResNet-ish layers.
CONV_LAYERS = (
    (32, 3, 32, 32, 16, 5),
    (32, 64, 28, 28, 64, 3),
    (8, 256, 14, 14, 256, 3),
    (1, 1, 28, 28, 6, 5),
)
GPUCONV_METHODS = ("direct", "gemm", "auto")

_TORCH_THREADS: list[int | None] = [None]


def torch_threads(n: int | None) -> None:
    """Thread count the torch anchor uses (None: torch's default)."""
    _TORCH_THREADS[0] = n


def _torch() -> Any:
    if importlib.util.find_spec("torch") is None:
        raise Unavailable("torch is not installed")
    import torch

    if _TORCH_THREADS[0] is not None:
        torch.set_num_threads(_TORCH_THREADS[0])
    return torch


# -- single-channel valid correlation ------------------------------------------------
def _plane_cases(quick: bool) -> list[Case]:
    sizes, kernels = ((64, 128), (3, 7)) if quick else (PLANE_SIZES, PLANE_KERNELS)
    return [Case(f"{n}x{n} k{k}", {"size": n, "kernel": k, "dtype": "float32"},
                 family=f"k{k}", work=float((n - k + 1) ** 2))
            for k in kernels for n in sizes]


def _plane_setup(case: Case, backend: Any, rng: np.random.Generator) -> dict[str, Any]:
    n, k = case.params["size"], case.params["kernel"]
    x = rng.standard_normal((n, n), dtype=np.float32)
    w = rng.standard_normal((k, k), dtype=np.float32)
    return {"x_np": x, "w_np": w, "x": backend.asarray(x), "w": backend.asarray(w)}


def _planes_gpuconv(method: str):
    def factory(inputs, case, backend):
        import gpuconv

        x, w = inputs["x"], inputs["w"]
        return lambda: gpuconv.correlate2d(x, w, "valid", method=method)
    return factory


def _planes_signal(inputs, case, backend):
    import scipy.signal

    x, w = inputs["x_np"], inputs["w_np"]
    return lambda: scipy.signal.correlate2d(x, w, "valid")


def _planes_ndimage(inputs, case, backend):
    import scipy.ndimage

    x, w = inputs["x_np"], inputs["w_np"]
    return lambda: scipy.ndimage.correlate(x, w, mode="constant")


def _planes_torch(inputs, case, backend):
    torch = _torch()
    x = torch.from_numpy(inputs["x_np"])[None, None]
    w = torch.from_numpy(inputs["w_np"])[None, None]

    def call():
        with torch.no_grad():
            return torch.nn.functional.conv2d(x, w)
    return call


# -- conv layers ---------------------------------------------------------------------
def _conv_cases(quick: bool) -> list[Case]:
    layers = ((2, 3, 16, 16, 4, 3), (1, 1, 12, 12, 2, 5)) if quick else CONV_LAYERS
    dtypes = ("float32",) if quick else ("float32", "float64")
    cases = []
    for dtype in dtypes:
        for N, C, H, W, Co, k in layers:
            cases.append(Case(f"({N},{C},{H},{W})->{Co} {k}x{k} {dtype}",
                              {"N": N, "C": C, "H": H, "W": W, "C_out": Co, "kernel": k,
                               "dtype": dtype},
                              family=f"{N},{C},{H},{W},{Co},{k},{dtype}"))
    return cases


def _conv_setup(case: Case, backend: Any, rng: np.random.Generator) -> dict[str, Any]:
    p = case.params
    x = rng.standard_normal((p["N"], p["C"], p["H"], p["W"])).astype(p["dtype"])
    w = rng.standard_normal((p["C_out"], p["C"], p["kernel"], p["kernel"])).astype(p["dtype"])
    return {"x_np": x, "w_np": w, "x": backend.asarray(x), "w": backend.asarray(w)}


def _conv_gpuconv(method: str):
    def factory(inputs, case, backend):
        import gpuconv

        x, w = inputs["x"], inputs["w"]
        return lambda: gpuconv.conv2d(x, w, method=method)
    return factory


def _conv_torch(inputs, case, backend):
    torch = _torch()
    x = torch.from_numpy(inputs["x_np"])
    w = torch.from_numpy(inputs["w_np"])

    def call():
        with torch.no_grad():
            return torch.nn.functional.conv2d(x, w)
    return call


def _conv_einsum(inputs, case, backend):
    from numpy.lib.stride_tricks import sliding_window_view

    x, w = inputs["x_np"], inputs["w_np"]
    k = case.params["kernel"]

    def call():
        windows = sliding_window_view(x, (k, k), axis=(2, 3))
        return np.einsum("nchwij,ocij->nohw", windows, w, optimize=True)
    return call


def _register_builtin() -> None:
    planes = register_grid(Grid(
        "planes", "Single-channel valid correlation, float32",
        _plane_cases, _plane_setup,
        notes="scipy.ndimage.correlate computes the same-size output (it has no valid "
              "mode), a little more work than the valid output the others compute."))
    for method in GPUCONV_METHODS:
        register_column(planes.name, method, _planes_gpuconv(method),
                        doc=f"gpuconv.correlate2d(x, k, 'valid', method={method!r})")
    register_column(planes.name, "scipy.signal", _planes_signal, anchor=True,
                    doc="scipy.signal.correlate2d(x, k, 'valid')")
    register_column(planes.name, "scipy.ndimage", _planes_ndimage, anchor=True,
                    doc="scipy.ndimage.correlate(x, k, mode='constant')")
    register_column(planes.name, "torch", _planes_torch, anchor=True,
                    doc="torch.nn.functional.conv2d on the CPU, no autograd")

    conv = register_grid(Grid(
        "conv2d", "conv2d layers (NCHW, stride 1, no padding)",
        _conv_cases, _conv_setup))
    for method in GPUCONV_METHODS:
        register_column(conv.name, method, _conv_gpuconv(method),
                        doc=f"gpuconv.conv2d(x, w, method={method!r})")
    register_column(conv.name, "torch", _conv_torch, anchor=True,
                    doc="torch.nn.functional.conv2d on the CPU, no autograd")
    register_column(conv.name, "numpy.einsum", _conv_einsum, anchor=True,
                    doc="np.einsum over sliding_window_view, optimize=True")


_register_builtin()

# The FFT methods' columns live with their regret and plot helpers.
from . import _fftcols  # noqa: E402

_fftcols.register()

# The Conv2D training-step grid (forward + backward of gpuconv.nn) registers itself.
from . import _train  # noqa: E402

_train.register()

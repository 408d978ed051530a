"""The built-in grids: single-channel planes, conv layers, and the GPU's bandwidth and batch.

Sizes and layers come from :mod:`gpuconv.bench._cases`.  A grid's gpuconv
columns run on every backend; its anchors are the libraries a user of that
backend has today: SciPy and torch on the CPU for ``numpy``, CuPy's ``cupyx``
and torch on CUDA (cuDNN, TF32 off) for ``cupy``.  Every column blocks until
its result is ready (``backend.synchronize()``) and returns it; each gpuconv
result is compared with a float64 reference computed by other means.

Anchor columns import their libraries only when a case is set up, so that
importing :mod:`gpuconv.bench` imports neither torch nor CuPy.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

import numpy as np

from . import _cases as C
from ._columns import blocking, queued, tensor, torch_call, torch_on
from ._registry import Case, Grid, Unavailable, register_column, register_grid

__all__: list[str] = []

def _cupyx(module: str) -> Any:
    try:
        return importlib.import_module(f"cupyx.scipy.{module}")
    except ImportError as exc:
        raise Unavailable(f"cupyx.scipy.{module} cannot be imported: {exc}") from None


def _auto_note(op: str, x: Any, w: Any, **kwargs: Any) -> str:
    import gpuconv

    try:
        return f"auto: {gpuconv.choose_method(op, x, w, **kwargs).method}"
    except Exception as exc:  # the note is informative; the call itself reports errors
        return f"auto: ({type(exc).__name__})"


# -- float64 references (no gpuconv method involved) ----------------------------------
def _fft_correlate(backend: Any, x: np.ndarray, w: np.ndarray, mode: str) -> Any:
    """Correlation of the last two axes in float64 by one FFT of the full size."""
    xp, fft = backend.xp, backend.fft
    x64 = xp.asarray(backend.asarray(x), dtype=xp.float64)
    w64 = xp.asarray(backend.asarray(np.ascontiguousarray(w[::-1, ::-1])), dtype=xp.float64)
    (H, W), (kh, kw) = x.shape[-2:], w.shape
    shape = (H + kh - 1, W + kw - 1)
    full = fft.irfft2(fft.rfft2(x64, shape) * fft.rfft2(w64, shape), shape)
    if mode == "valid":
        return full[..., kh - 1:H, kw - 1:W]
    if mode == "same":  # odd kernels: the output centred on the input
        top, left = (kh - 1) // 2, (kw - 1) // 2
        return full[..., top:top + H, left:left + W]
    return full


def _planes_reference(inputs, case, backend):
    return _fft_correlate(backend, inputs["x_np"], inputs["w_np"], case.params["mode"])


def _conv_reference(inputs, case, backend):
    """Valid NCHW conv2d in float64 as a sum over kernel taps of channel contractions."""
    xp = backend.xp
    x = xp.asarray(backend.asarray(inputs["x_np"]), dtype=xp.float64)
    w = xp.asarray(backend.asarray(inputs["w_np"]), dtype=xp.float64)
    kh, kw = w.shape[2:]
    Ho, Wo = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    out = xp.zeros((x.shape[0], w.shape[0], Ho, Wo), dtype=xp.float64)
    for i in range(kh):
        for j in range(kw):
            window = x[:, :, i:i + Ho, j:j + Wo]                     # (N, C, Ho, Wo)
            out += xp.einsum("nchw,oc->nohw", window, w[:, :, i, j])
    return out


# -- single-channel valid correlation ------------------------------------------------
def _plane_case(n: int, k: int) -> Case:
    out = (n - k + 1) ** 2
    return Case(f"{n}x{n} k{k}", {"size": n, "kernel": k, "dtype": "float32", "mode": "valid"},
                family=f"k{k}", work=float(out), bytes=4 * (n * n + k * k + out),
                flops=2 * k * k * out)


def _plane_cases(quick: bool) -> list[Case]:
    sizes, kernels = ((C.QUICK_PLANE_SIZES, C.QUICK_PLANE_KERNELS) if quick
                      else (C.PLANE_SIZES, C.PLANE_KERNELS))
    return [_plane_case(n, k) for k in kernels for n in sizes]


def _plane_setup(case: Case, backend: Any, rng: np.random.Generator) -> dict[str, Any]:
    p = case.params
    shape = (p["batch"], p["size"], p["size"]) if "batch" in p else (p["size"], p["size"])
    x = rng.standard_normal(shape, dtype=np.float32)
    w = rng.standard_normal((p["kernel"], p["kernel"]), dtype=np.float32)
    return {"x_np": x, "w_np": w, "x": backend.asarray(x), "w": backend.asarray(w)}


def _planes_gpuconv(method: str, variant: str | None = None):
    def factory(inputs, case, backend):
        import gpuconv

        limit = C.PLANE_GEMM_MAX_KERNEL.get(backend.name) if method == "gemm" else None
        if limit is not None and case.params["kernel"] > limit:
            raise Unavailable(f"not timed on {backend.name}: gemm for one {case.params['kernel']}"
                              f"x{case.params['kernel']} kernel is never auto's choice and "
                              "costs seconds of launches a call")
        x, w, mode = inputs["x"], inputs["w"], case.params["mode"]
        op = lambda: gpuconv.correlate2d(x, w, mode, method=method)  # noqa: E731
        if variant is not None:
            op = _with_variant(backend, op, {"correlate_planes.cu": (variant,)})
        call = queued(backend, op, case.calls)
        if method == "auto":
            call.note = _auto_note("correlate2d", x, w, mode=mode)
        return call
    return factory


def _with_variant(backend: Any, op: Callable[[], Any],
                  variants: dict[str, tuple[str, ...]]) -> Callable[[], Any]:
    if not hasattr(backend, "kernel_variants"):
        raise Unavailable(f"backend {backend.name!r} has no compile-time kernel variants")

    def run():
        backend.kernel_variants = variants
        try:
            return op()
        finally:
            backend.kernel_variants = {}
    return run


def _planes_signal(inputs, case, backend):
    import scipy.signal

    x, w, mode = inputs["x_np"], inputs["w_np"], case.params["mode"]
    return blocking(backend, lambda: scipy.signal.correlate2d(x, w, mode))


def _planes_ndimage(inputs, case, backend):
    import scipy.ndimage

    x, w = inputs["x_np"], inputs["w_np"]
    return blocking(backend, lambda: scipy.ndimage.correlate(x, w, mode="constant"))


def _planes_cupyx_signal(inputs, case, backend):
    correlate2d = _cupyx("signal").correlate2d
    x, w, mode = inputs["x"], inputs["w"], case.params["mode"]
    if x.ndim == 3:  # a batch: what a cupyx user writes today, one call per plane
        return queued(backend, lambda: [correlate2d(plane, w, mode) for plane in x], case.calls)
    return queued(backend, lambda: correlate2d(x, w, mode), case.calls)


def _planes_cupyx_ndimage(inputs, case, backend):
    correlate = _cupyx("ndimage").correlate
    x, w = inputs["x"], inputs["w"]
    weights = w[None] if x.ndim == 3 else w  # a 1 x k x k kernel: each plane on its own
    return queued(backend, lambda: correlate(x, weights, mode="constant"), case.calls)


def _planes_cupyx_fftconvolve(inputs, case, backend):
    fftconvolve = _cupyx("signal").fftconvolve
    x, mode = inputs["x"], case.params["mode"]
    w = inputs["w"][::-1, ::-1]
    if x.ndim == 3:
        w = w[None]
    return queued(backend, lambda: fftconvolve(x, w, mode), case.calls)


def _planes_torch(inputs, case, backend):
    torch, device = torch_on(backend)
    x = tensor(torch, inputs["x_np"], device)
    x = x[:, None] if x.ndim == 3 else x[None, None]
    w = tensor(torch, inputs["w_np"], device)[None, None]
    k = case.params["kernel"]
    pad = k // 2 if case.params["mode"] == "same" else 0
    return torch_call(backend, torch, device,
                       lambda: torch.nn.functional.conv2d(x, w, padding=pad), case.calls)


# -- memory-bound planes and batches (device backends) ------------------------------
def _bandwidth_cases(quick: bool) -> list[Case]:
    k = C.BANDWIDTH_KERNEL
    return [Case(f"{n}x{n} k{k} same", {"size": n, "kernel": k, "dtype": "float32",
                                        "mode": "same", "queued_calls": C.QUEUE_DEPTH},
                 family=f"k{k}", work=float(n * n), bytes=4 * (2 * n * n + k * k),
                 flops=2 * k * k * n * n, calls=C.QUEUE_DEPTH)
            for n in (C.QUICK_BANDWIDTH_SIZES if quick else C.BANDWIDTH_SIZES)]


def _batched_cases(quick: bool) -> list[Case]:
    b, n, k = C.QUICK_BATCHED if quick else C.BATCHED
    return [Case(f"{b}x{n}x{n} k{k} same", {"batch": b, "size": n, "kernel": k,
                                             "dtype": "float32", "mode": "same"},
                 family=f"k{k}", work=float(b * n * n), bytes=4 * (2 * b * n * n + k * k),
                 flops=2 * k * k * b * n * n)]


# -- conv layers ---------------------------------------------------------------------
def _conv_cases(quick: bool) -> list[Case]:
    layers = C.QUICK_CONV_LAYERS if quick else C.CONV_LAYERS
    dtypes = C.QUICK_CONV_DTYPES if quick else C.CONV_DTYPES
    cases = []
    for dtype in dtypes:
        size = np.dtype(dtype).itemsize
        for N, Ci, H, W, Co, k in layers:
            Ho, Wo = H - k + 1, W - k + 1
            cases.append(Case(f"({N},{Ci},{H},{W})->{Co} {k}x{k} {dtype}",
                              {"N": N, "C": Ci, "H": H, "W": W, "C_out": Co, "kernel": k,
                               "dtype": dtype},
                              family=f"{N},{Ci},{H},{W},{Co},{k},{dtype}",
                              bytes=size * (N * Ci * H * W + Co * Ci * k * k + N * Co * Ho * Wo),
                              flops=2 * N * Co * Ho * Wo * Ci * k * k))
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
        if method == "winograd" and tuple(w.shape[2:]) != (3, 3):
            raise Unavailable("winograd computes 3x3 kernels only")
        call = blocking(backend, lambda: gpuconv.conv2d(x, w, method=method))
        if method == "auto":
            call.note = _auto_note("conv2d", x, w)
        return call
    return factory


def _conv_torch(inputs, case, backend):
    torch, device = torch_on(backend)
    x = tensor(torch, inputs["x_np"], device)
    w = tensor(torch, inputs["w_np"], device)
    return torch_call(backend, torch, device, lambda: torch.nn.functional.conv2d(x, w))


def _conv_einsum(inputs, case, backend):
    from numpy.lib.stride_tricks import sliding_window_view

    x, w = inputs["x_np"], inputs["w_np"]
    k = case.params["kernel"]

    def op():
        windows = sliding_window_view(x, (k, k), axis=(2, 3))
        return np.einsum("nchwij,ocij->nohw", windows, w, optimize=True)
    return blocking(backend, op)


def _register_builtin() -> None:
    from .. import kernels

    host, device = ("numpy",), C.DEVICE_BACKENDS
    planes = register_grid(Grid(
        "planes", "Single-channel valid correlation, float32",
        _plane_cases, _plane_setup, reference=_planes_reference,
        notes="scipy.ndimage.correlate and cupyx.scipy.ndimage.correlate compute the "
              "same-size output (they have no valid mode), a little more work than the valid "
              "output the others compute."))
    bandwidth = register_grid(Grid(
        "bandwidth", f"Memory-bound planes: float32 {C.BANDWIDTH_KERNEL}x{C.BANDWIDTH_KERNEL}, "
                     "mode='same'", _bandwidth_cases, _plane_setup,
        reference=_planes_reference, backends=device,
        notes=f"Each timed call queues {C.QUEUE_DEPTH} calls, then waits once; times are per "
              "call. GB/s: the input read once and the output written once."))
    batched = register_grid(Grid(
        "batched", "Many planes in one call: float32, mode='same'",
        _batched_cases, _plane_setup, reference=_planes_reference, backends=device,
        notes="cupyx.signal: a Python loop of cupyx.scipy.signal.correlate2d, one call per "
              "plane (cupyx's correlate2d takes 2-D arrays only)."))
    for grid in (planes, bandwidth, batched):
        methods = C.GPUCONV_METHODS if grid is planes else ("direct", "auto")
        for method in methods:
            register_column(grid.name, method, _planes_gpuconv(method),
                            doc=f"gpuconv.correlate2d(x, k, mode, method={method!r})")
        for variant in kernels.VARIANTS["correlate_planes.cu"]:
            register_column(grid.name, f"direct[{variant}]", _planes_gpuconv("direct", variant),
                            backends=device, doc=f"method='direct' built with -D{variant}")
        if grid is planes:
            register_column(grid.name, "scipy.signal", _planes_signal, anchor=True,
                            backends=host, doc="scipy.signal.correlate2d(x, k, 'valid')")
            register_column(grid.name, "scipy.ndimage", _planes_ndimage, anchor=True,
                            backends=host, doc="scipy.ndimage.correlate(x, k, mode='constant')")
        register_column(grid.name, "cupyx.signal", _planes_cupyx_signal, anchor=True,
                        backends=device, doc="cupyx.scipy.signal.correlate2d(x, k, mode)")
        register_column(grid.name, "cupyx.ndimage", _planes_cupyx_ndimage, anchor=True,
                        backends=device, doc="cupyx.scipy.ndimage.correlate(x, k, "
                                             "mode='constant')")
        register_column(grid.name, "cupyx.fftconvolve", _planes_cupyx_fftconvolve, anchor=True,
                        backends=device, doc="cupyx.scipy.signal.fftconvolve(x, k[::-1, ::-1], "
                                             "mode)")
        register_column(grid.name, "torch", _planes_torch, anchor=True,
                        doc="torch.nn.functional.conv2d, no autograd: on the CPU for numpy, on "
                            "CUDA (cuDNN, TF32 off) for cupy")

    conv = register_grid(Grid(
        "conv2d", "conv2d layers (NCHW, stride 1, no padding)",
        _conv_cases, _conv_setup, reference=_conv_reference))
    for method in C.GPUCONV_METHODS + C.CONV_EXTRA_METHODS:
        register_column(conv.name, method, _conv_gpuconv(method),
                        doc=f"gpuconv.conv2d(x, w, method={method!r})")
    register_column(conv.name, "torch", _conv_torch, anchor=True,
                    doc="torch.nn.functional.conv2d, no autograd: on the CPU for numpy, on CUDA "
                        "(cuDNN, TF32 off, cudnn.benchmark) for cupy")
    register_column(conv.name, "numpy.einsum", _conv_einsum, anchor=True, backends=host,
                    doc="np.einsum over sliding_window_view, optimize=True")


_register_builtin()

# The FFT methods' columns live with their regret and plot helpers.
from . import _fftcols  # noqa: E402

_fftcols.register()

# The Conv2D training-step grid (forward + backward of gpuconv.nn) registers itself.
from . import _train  # noqa: E402

_train.register()

"""The CuPy backend: gpuconv's CUDA kernels on an NVIDIA GPU.

``method="direct"`` runs the hand-written kernels of :mod:`gpuconv.kernels`
(batched planes with the boundary resolved in the kernel; NCHW ``conv2d`` and
its transpose); ``"gemm"`` is the generic im2col code on ``cupy.matmul``
(cuBLAS) with bounded scratch memory; ``"fft"`` uses ``cupyx.scipy.fft``.

CuPy is imported by :func:`make_backend`, the factory registered as
``"cupy"``, never when this module is imported, so ``import gpuconv`` (and
building its documentation) works where CuPy is missing.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .. import kernels
from ..backend import BackendUnavailableError
from . import ArrayBackend

__all__ = ["CupyBackend", "make_backend"]


def make_backend() -> CupyBackend:
    """The CuPy backend on the current device, or why it cannot run here.

    Raises
    ------
    BackendUnavailableError
        ``"cupy is not installed"``, or ``"no CUDA device visible: ..."`` with
        CuPy's own message (no driver, a driver too old, no device).
    """
    try:
        import cupy
    except ImportError as exc:
        detail = "" if exc.name == "cupy" else f" ({exc})"
        raise BackendUnavailableError(f"cupy is not installed{detail}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, or one too old for this CuPy
        raise BackendUnavailableError(f"no CUDA device visible: {exc}") from None
    if count == 0:
        raise BackendUnavailableError("no CUDA device visible: CuPy reports 0 devices")
    return CupyBackend(cupy)


class CupyBackend(ArrayBackend):
    """Compute with CuPy on the current CUDA device.

    Parameters
    ----------
    cupy_module : module
        ``cupy`` itself (the tests pass a stand-in that runs the same kernels
        in a host emulator).
    get_function : callable, optional
        ``(filename, kernel, dtype, defines) -> kernel callable``; the default
        compiles with ``cupy.RawModule`` once per device and variant.
    """

    name = "cupy"
    # The CUDA kernels read and write half, accumulating in float: half the traffic.
    native_float16 = frozenset({"direct"})

    def __init__(self, cupy_module: Any,
                 get_function: Callable[..., Any] = kernels.get_function):
        self.xp = cupy_module
        self._get_function = get_function
        # Compile-time kernel variants (see gpuconv.kernels.VARIANTS), for
        # measuring alternatives on a GPU; empty in normal use.
        self.kernel_variants: dict[str, tuple[str, ...]] = {}
        self._device_keys: dict[int, str] = {}
        self._sm_counts: dict[int, int] = {}

    @property
    def fft(self) -> Any:
        import cupyx.scipy.fft

        return cupyx.scipy.fft

    def asarray(self, x: Any) -> Any:
        if isinstance(x, self.xp.ndarray):
            return x
        # A NumPy input is copied to the device: this backend was chosen
        # explicitly (with "auto", NumPy inputs never reach it).
        host = np.asarray(x)
        if host.dtype.kind not in "biufc":
            # CuPy cannot hold it; the front door rejects it with the message
            # every backend gives (naming the argument and the allowed dtypes).
            return host
        return self.xp.asarray(host)

    def to_numpy(self, x: Any) -> np.ndarray:
        if isinstance(x, self.xp.ndarray) and hasattr(x, "get"):
            return x.get()
        return np.asarray(x)

    def device_key(self) -> str:
        # Asked on every method="auto" call: the device properties are looked up once.
        device_id = self.xp.cuda.Device().id
        key = self._device_keys.get(device_id)
        if key is None:
            props = self.xp.cuda.runtime.getDeviceProperties(device_id)
            name = props["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            key = self._device_keys[device_id] = f"cupy:{device_id}:{name}"
        return key

    def synchronize(self) -> None:
        """Wait for the work queued on the current stream (for timing)."""
        self.xp.cuda.get_current_stream().synchronize()

    # -- kernels -----------------------------------------------------------
    def _launch(self, filename: str, kernel: str, launch: kernels.Launch, x: Any, w: Any,
                out: Any) -> Any:
        fn = self._get_function(filename, kernel, x.dtype,
                                self.kernel_variants.get(filename, ()))
        scalars = tuple(np.int32(a) if isinstance(a, int) else np.float64(a)
                        for a in launch.args)
        # CuPy raises at once if the driver refuses the launch (bad geometry,
        # too many resources); faults inside the kernel surface at the next
        # synchronisation, as with every CUDA library.
        fn(launch.grid, launch.block, (x, w, out) + scalars)
        return out

    def correlate_planes(self, x, w, out_shape, origin, boundary, fillvalue, method,
                         scratch_bytes):
        if method != "direct":
            return super().correlate_planes(x, w, out_shape, origin, boundary, fillvalue,
                                            method, scratch_bytes)
        out = self.xp.empty((x.shape[0], *out_shape), dtype=x.dtype)
        if out.size == 0:
            return out
        launch = kernels.planes_launch(x.shape, w.shape, tuple(out_shape), tuple(origin),
                                       boundary, fillvalue)
        return self._launch("correlate_planes.cu", "correlate_planes", launch, x, w, out)

    def conv2d(self, x, w, stride, pads, dilation, groups, padding_mode, method,
               scratch_bytes):
        if method != "direct":
            return super().conv2d(x, w, stride, pads, dilation, groups, padding_mode, method,
                                  scratch_bytes)
        N, _, H, W = x.shape
        Cout, _, kh, kw = w.shape
        Ho = (H + pads[0] + pads[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        Wo = (W + pads[2] + pads[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        out = self.xp.empty((N, Cout, max(Ho, 0), max(Wo, 0)), dtype=x.dtype)
        if out.size == 0:
            return out
        plan = kernels.conv2d_launch(x.shape, w.shape, stride, pads, dilation, groups,
                                     padding_mode, (Ho, Wo), x.dtype, sm_count=self._sm_count(),
                                     scratch_bytes=scratch_bytes)
        return self._run_conv(plan, x, w, out)

    def conv_transpose2d(self, x, w, stride, padding, dilation, groups, out_hw, method,
                         scratch_bytes):
        if method != "direct":
            return super().conv_transpose2d(x, w, stride, padding, dilation, groups, out_hw,
                                            method, scratch_bytes)
        N = x.shape[0]
        Cout = w.shape[1] * groups
        out = self.xp.empty((N, Cout, *out_hw), dtype=x.dtype)
        if out.size == 0:
            return out
        plan = kernels.conv_transpose2d_launch(x.shape, w.shape, stride, padding, dilation,
                                               groups, tuple(out_hw), x.dtype,
                                               sm_count=self._sm_count(),
                                               scratch_bytes=scratch_bytes)
        return self._run_conv(plan, x, w, out)

    def _run_conv(self, plan: kernels.ConvPlan, x: Any, w: Any, out: Any) -> Any:
        # Split-K: partial sums into a workspace, then a fixed-order reduction
        # (deterministic, unlike atomics).
        if plan.reduce is None:
            return self._launch("conv2d.cu", plan.kernel, plan.launch, x, w, out)
        workspace = self.xp.empty(plan.workspace_items, dtype=x.dtype)
        self._launch("conv2d.cu", plan.kernel, plan.launch, x, w, workspace)
        return self._launch("conv2d.cu", "conv2d_splitk_reduce", plan.reduce, x, workspace, out)

    def _sm_count(self) -> int:
        device_id = self.xp.cuda.Device().id
        count = self._sm_counts.get(device_id)
        if count is None:
            props = self.xp.cuda.runtime.getDeviceProperties(device_id)
            count = self._sm_counts[device_id] = int(
                props.get("multiProcessorCount", kernels.DEFAULT_SM_COUNT))
        return count

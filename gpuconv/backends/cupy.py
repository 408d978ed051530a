"""The CuPy backend: gpuconv's CUDA kernels on an NVIDIA GPU.

``method="direct"`` runs the hand-written kernels of :mod:`gpuconv.kernels`
(batched planes with the boundary resolved in the kernel; NCHW ``conv2d`` and
its transpose).  ``"gemm"`` is one ``im2col`` launch per chunk (padding,
stride, dilation resolved in the kernel; the column buffer under the scratch
bound) and one ``cupy.matmul`` (cuBLAS) that writes the NCHW output in place;
a 1x1 stride-1 unpadded ``conv2d`` is the matrix product alone; the
transposed convolution is one product into columns and one ``col2im``
gather, and the weight gradient (:meth:`CupyBackend.conv2d_weight_grad`)
multiplies the output gradient with the same columns.  ``"fft"`` uses
``cupyx.scipy.fft``.

Every method runs under ``with x.device:``, so arrays on another device than
the current one are computed (and their outputs allocated) where they live.

CuPy is imported by :func:`make_backend`, the factory registered as
``"cupy"``, never when this module is imported, so ``import gpuconv`` (and
building its documentation) works where CuPy is missing.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from .. import kernels
from ..backend import BackendUnavailableError
from . import ArrayBackend, _generic

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


@functools.cache
def _cublas(cupy_module: Any) -> Any:
    """CuPy's cuBLAS binding: the strided-batched GEMM, the current device's handle and
    the constants it takes, all reached through ``cupy.cuda`` (looked up on first use)."""
    from types import SimpleNamespace

    cuda = cupy_module.cuda
    cublas, runtime = cuda.cublas, cuda.runtime
    return SimpleNamespace(
        gemmStridedBatchedEx=cublas.gemmStridedBatchedEx,
        get_handle=cuda.get_cublas_handle,
        types={"e": runtime.CUDA_R_16F, "f": runtime.CUDA_R_32F, "d": runtime.CUDA_R_64F,
               "F": runtime.CUDA_C_32F, "D": runtime.CUDA_C_64F},
        # cuBLAS 11's compute types (not data types): float accumulation for
        # half, float and complex64 (no TF32), double for double and complex128.
        compute={"e": cublas.CUBLAS_COMPUTE_32F, "f": cublas.CUBLAS_COMPUTE_32F,
                 "F": cublas.CUBLAS_COMPUTE_32F, "d": cublas.CUBLAS_COMPUTE_64F,
                 "D": cublas.CUBLAS_COMPUTE_64F},
        GEMM_DEFAULT=cublas.CUBLAS_GEMM_DEFAULT,
    )


# FP32 lanes per SM by compute capability (CUDA C Programming Guide, "Arithmetic
# Instructions"): 64 on V100/A100-class parts, 128 on the consumer Ampere, Ada, Hopper
# and Blackwell parts.
_FP32_LANES = {(6, 0): 64, (7, 0): 64, (7, 5): 64, (8, 0): 64, (8, 6): 128, (8, 7): 128,
               (8, 9): 128, (9, 0): 128, (10, 0): 128, (12, 0): 128}


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
    # The CUDA kernels read and write half, accumulating in float: half the
    # traffic.  For "gemm" im2col copies half exactly and cuBLAS multiplies
    # half with float accumulation (CUBLAS_COMPUTE_32F): one rounding at the
    # end, as in the direct kernels.
    native_float16 = frozenset({"direct", "gemm"})

    def __init__(self, cupy_module: Any,
                 get_function: Callable[..., Any] = kernels.get_function):
        self.xp = cupy_module
        self._get_function = get_function
        # Compile-time kernel variants (see gpuconv.kernels.VARIANTS), for
        # measuring alternatives on a GPU; empty in normal use.
        self.kernel_variants: dict[str, tuple[str, ...]] = {}
        self._device_keys: dict[int, str] = {}
        self._sm_counts: dict[int, int] = {}
        self._device_props: dict[int, dict[str, float]] = {}

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
        """The current device's name (``"NVIDIA H200"``): cost-model constants are per card
        model, so two devices of one model share them."""
        # Asked on every method="auto" call: the device properties are looked up once.
        device_id = self.xp.cuda.Device().id
        key = self._device_keys.get(device_id)
        if key is None:
            props = self.xp.cuda.runtime.getDeviceProperties(device_id)
            name = props["name"]
            key = self._device_keys[device_id] = (
                name.decode() if isinstance(name, bytes) else str(name))
        return key

    def device_properties(self) -> dict[str, float]:
        """What the cost model derives its default constants from, for the current device.

        ``bandwidth``: peak memory bandwidth in bytes/s (double data rate x bus
        width); ``fma_rate``: float32 multiply-adds per second (SMs x FP32
        lanes per SM x clock); ``launch``: host seconds per call.  CUDA 13
        dropped the clock fields from ``cudaDeviceProp``; they are then asked
        for as device attributes.
        """
        device_id = self.xp.cuda.Device().id
        cached = self._device_props.get(device_id)
        if cached is not None:
            return cached
        runtime = self.xp.cuda.runtime
        props = runtime.getDeviceProperties(device_id)

        def field(name: str, attribute: int) -> float:
            value = props.get(name)
            if not value:
                try:
                    value = runtime.deviceGetAttribute(attribute, device_id)
                except Exception:
                    value = 0
            return float(value or 0)

        sms = field("multiProcessorCount", 16)
        clock_khz = field("clockRate", 13)
        mem_khz = field("memoryClockRate", 36)
        bus_bits = field("memoryBusWidth", 37)
        cc = (int(props.get("major", 0)), int(props.get("minor", 0)))
        lanes = _FP32_LANES.get(cc, 64 if cc < (8, 6) and cc != (0, 0) else 128)
        result = {"bandwidth": 2 * mem_khz * 1e3 * bus_bits / 8,
                  "fma_rate": sms * lanes * clock_khz * 1e3,
                  "launch": 40e-6}
        self._device_props[device_id] = result
        return result

    def available_memory(self) -> int | None:
        """Free device memory plus what CuPy's pool holds unused, on the current device."""
        free, _ = self.xp.cuda.runtime.memGetInfo()
        pool = self.xp.get_default_memory_pool()
        return int(free) + int(pool.free_bytes())

    def describe(self) -> dict[str, Any]:
        """CUDA runtime and driver versions and every visible device, for ``gpuconv info``."""
        runtime = self.xp.cuda.runtime
        devices = []
        for device_id in range(runtime.getDeviceCount()):
            props = runtime.getDeviceProperties(device_id)
            name = props.get("name", b"?")
            devices.append({
                "id": device_id,
                "name": name.decode() if isinstance(name, bytes) else str(name),
                "compute_capability": f"{props.get('major', '?')}.{props.get('minor', '?')}",
                "memory_bytes": int(props.get("totalGlobalMem", 0)),
                "multiprocessors": int(props.get("multiProcessorCount", 0)),
            })
        return {"cuda_runtime": runtime.runtimeGetVersion(),
                "cuda_driver": runtime.driverGetVersion(),
                "current_device": self.xp.cuda.Device().id,
                "devices": devices}

    def synchronize(self) -> None:
        """Wait for the work queued on the current stream (for timing)."""
        self.xp.cuda.get_current_stream().synchronize()

    # -- kernels -----------------------------------------------------------
    def _device_of(self, x: Any) -> Any:
        """The context that makes ``x``'s device current (a ``cupy.cuda.Device``)."""
        return x.device

    def _launch(self, filename: str, kernel: str, launch: kernels.Launch, *arrays: Any) -> Any:
        """Launch ``kernel`` on ``arrays`` (its pointer arguments, ``None`` for a null
        pointer; the first one's dtype picks the instantiation); returns the last."""
        fn = self._get_function(filename, kernel, arrays[0].dtype,
                                self.kernel_variants.get(filename, ()))
        # CuPy raises at once if the driver refuses the launch (bad geometry,
        # too many resources); faults inside the kernel surface at the next
        # synchronisation, as with every CUDA library.
        fn(launch.grid, launch.block, arrays + launch.scalars)
        return arrays[-1]

    def _gemm_strided(self, a, a_off, lda, sa, b, b_off, ldb, sb, c, c_off, ldc, sc,
                      M, N, K, batch):
        """``C_i = A_i @ B_i`` for ``i < batch``: row-major (M, K) times (K, N) into
        (M, N), each operand given by its array, element offset, leading dimension
        (row stride) and batch stride, which may be 0 (one matrix for the batch).

        One cuBLAS strided-batched GEMM, the call ``cupy.matmul`` makes when no
        operand is broadcast, with the same data and compute types (float16
        accumulates in float32; no TF32).  ``cupy.matmul`` itself would copy a
        broadcast operand's pointers into device arrays first (several small
        launches per call), and copy a strided output.
        """
        lib = _cublas(self.xp)
        dtype = np.dtype(c.dtype)
        cuda_type = lib.types[dtype.char]
        compute = lib.compute[dtype.char]
        coef = np.float32 if dtype.char == "e" else dtype
        one, zero = np.ones((), coef), np.zeros((), coef)
        it = dtype.itemsize
        # Row-major C = A B is column-major C^T = B^T A^T: B comes first.
        lib.gemmStridedBatchedEx(
            lib.get_handle(), 0, 0, N, M, K, one.ctypes.data,
            b.data.ptr + b_off * it, cuda_type, ldb, sb,
            a.data.ptr + a_off * it, cuda_type, lda, sa, zero.ctypes.data,
            c.data.ptr + c_off * it, cuda_type, ldc, sc, batch, compute, lib.GEMM_DEFAULT)

    def _weights_times_images(self, w, b, b_off, b_image, ldb, c, c_off, c_image, ldc,
                              images, groups, M, N, K):
        """``C[i, g] = W[g] @ B[i, g]`` for ``images`` x ``groups`` products.

        ``w`` is (groups, M, K) contiguous; ``B[i, g]`` (K x N, row stride
        ``ldb``) starts at ``b_off + i * b_image + g * K * ldb`` of ``b``, and
        ``C[i, g]`` (M x N, row stride ``ldc``) at ``c_off + i * c_image + g * M
        * ldc`` of ``c``.  One batched GEMM per group (the weights shared by the
        images, batch stride 0) or per image, whichever takes fewer calls.
        """
        if groups <= images:
            for g in range(groups):
                self._gemm_strided(w, g * M * K, K, 0, b, b_off + g * K * ldb, ldb, b_image,
                                   c, c_off + g * M * ldc, ldc, c_image, M, N, K, images)
        else:
            for i in range(images):
                self._gemm_strided(w, 0, K, M * K, b, b_off + i * b_image, ldb, K * ldb,
                                   c, c_off + i * c_image, ldc, M * ldc, M, N, K, groups)

    def correlate_planes(self, x, w, out_shape, origin, boundary, fillvalue, method,
                         scratch_bytes):
        with self._device_of(x):
            if method == "gemm":
                out = self.xp.empty((x.shape[0], *out_shape), dtype=x.dtype)
                if out.size:
                    B, H, W = x.shape
                    self._conv2d_gemm(x.reshape(B, 1, H, W), w.reshape(1, 1, w.size),
                                      w.shape, (1, 1), tuple(origin), (1, 1), boundary,
                                      fillvalue, out.reshape(B, 1, *out_shape), scratch_bytes)
                return out
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
               scratch_bytes, bias=None):
        with self._device_of(x):
            N, C, H, W = x.shape
            Cout, Cg, kh, kw = w.shape
            Ho = (H + pads[0] + pads[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
            Wo = (W + pads[2] + pads[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
            if method == "gemm":
                out = self.xp.empty((N, Cout, Ho, Wo), dtype=x.dtype)
                G = groups
                wmat = w.reshape(G, Cout // G, Cg * kh * kw)
                if (kh, kw) == (1, 1) and stride == (1, 1) and not any(pads):
                    # The convolution is the matrix product itself: no columns.
                    P = H * W
                    self._weights_times_images(wmat, x, 0, C * P, P, out, 0, Cout * P, P, N, G,
                                               Cout // G, P, Cg)
                else:
                    self._conv2d_gemm(x, wmat, (kh, kw), stride, (pads[0], pads[2]), dilation,
                                      padding_mode, 0, out, scratch_bytes)
                return _generic.add_bias(out, bias)
            if method != "direct":
                return super().conv2d(x, w, stride, pads, dilation, groups, padding_mode,
                                      method, scratch_bytes, bias)
            out = self.xp.empty((N, Cout, max(Ho, 0), max(Wo, 0)), dtype=x.dtype)
            if out.size == 0:
                return out
            plan = kernels.conv2d_launch(x.shape, w.shape, stride, pads, dilation, groups,
                                         padding_mode, (Ho, Wo), x.dtype,
                                         sm_count=self._sm_count(), scratch_bytes=scratch_bytes)
            return _generic.add_bias(self._run_conv(plan, x, w, out), bias)

    def _conv2d_gemm(self, x, wmat, kernel_hw, stride, origin, dilation, mode, fillvalue, out,
                     scratch_bytes):
        """``out`` (N, C_out, Ho, Wo) = ``wmat`` (G, C_out/G, C/G*kh*kw) times the im2col
        columns of ``x``, chunk by chunk, each product written in place into ``out``."""
        xp = self.xp
        N, C, H, W = x.shape
        G, Coutg, K = wmat.shape
        Ho, Wo = out.shape[2:]
        plan = kernels.im2col_plan(x.shape, kernel_hw, stride, origin, dilation, (Ho, Wo),
                                   mode, x.dtype.itemsize, scratch_bytes, fillvalue)
        buffer = xp.empty(plan.cols_elements, dtype=x.dtype)
        Pout, Cout = Ho * Wo, G * Coutg
        for chunk in plan.chunks:
            nb, P = chunk.n1 - chunk.n0, (chunk.r1 - chunk.r0) * Wo
            cols = buffer[:nb * G * K * P]
            self._launch("im2col.cu", "im2col", chunk.launches[0], x[chunk.n0:chunk.n1], cols)
            # Straight into the NCHW output; a band of rows is a strided block of
            # each output plane (leading dimension Ho * Wo).
            self._weights_times_images(wmat, cols, 0, G * K * P, P,
                                       out, (chunk.n0 * Cout * Ho + chunk.r0) * Wo, Cout * Pout,
                                       Pout, nb, G, Coutg, P, K)
        return out

    def conv_transpose2d(self, x, w, stride, padding, dilation, groups, out_hw, method,
                         scratch_bytes, bias=None):
        with self._device_of(x):
            if method == "gemm":
                return self._conv_transpose2d_gemm(x, w, stride, padding, dilation, groups,
                                                   out_hw, scratch_bytes, bias)
            if method != "direct":
                return super().conv_transpose2d(x, w, stride, padding, dilation, groups,
                                                out_hw, method, scratch_bytes, bias)
            N = x.shape[0]
            Cout = w.shape[1] * groups
            out = self.xp.empty((N, Cout, *out_hw), dtype=x.dtype)
            if out.size == 0:
                return out
            plan = kernels.conv_transpose2d_launch(x.shape, w.shape, stride, padding,
                                                   dilation, groups, tuple(out_hw), x.dtype,
                                                   sm_count=self._sm_count(),
                                                   scratch_bytes=scratch_bytes)
            return _generic.add_bias(self._run_conv(plan, x, w, out), bias)

    def _conv_transpose2d_gemm(self, x, w, stride, padding, dilation, groups, out_hw,
                               scratch_bytes, bias):
        """One product of the transposed weights with the input into columns per chunk,
        then one ``col2im`` gather that also adds the bias."""
        xp = self.xp
        if x.dtype == np.float16:
            # The columns are partial sums: kept in float32 they are rounded
            # once, at the end, as in the direct kernel.
            wide = self._conv_transpose2d_gemm(
                x.astype(np.float32), w.astype(np.float32), stride, padding, dilation, groups,
                out_hw, scratch_bytes, None if bias is None else bias.astype(np.float32))
            return wide.astype(np.float16)
        N, Cin, H, W = x.shape
        _, Coutg, kh, kw = w.shape
        G, Cing = groups, Cin // groups
        Cout, K = G * Coutg, Coutg * kh * kw
        Ho, Wo = out_hw
        out = xp.empty((N, Cout, Ho, Wo), dtype=x.dtype)
        # (G, C_out/G*kh*kw, C_in/G): one small copy of the weights.
        wt = xp.ascontiguousarray(w.reshape(G, Cing, K).transpose(0, 2, 1))
        plan = kernels.col2im_plan(x.shape, Cout, (kh, kw), stride, tuple(padding), dilation,
                                   tuple(out_hw), x.dtype.itemsize, scratch_bytes)
        buffer = xp.empty(plan.cols_elements, dtype=x.dtype)
        for chunk in plan.chunks:
            nb, P = chunk.n1 - chunk.n0, (chunk.r1 - chunk.r0) * W
            cols = buffer[:nb * G * K * P]
            # A band of input rows is a strided block of each input plane.
            self._weights_times_images(wt, x, (chunk.n0 * Cin * H + chunk.r0) * W, Cin * H * W,
                                       H * W, cols, 0, G * K * P, P, nb, G, K, P, Cing)
            for launch in chunk.launches:
                self._launch("im2col.cu", "col2im", launch, cols, bias, out[chunk.n0:chunk.n1])
        return out

    def conv2d_weight_grad(self, x, grad_out, kernel_hw, stride, pads, dilation, groups,
                           padding_mode, method, scratch_bytes):
        """The weight gradient from im2col columns: per chunk, the columns (C*kh*kw,
        pixels) times the transposed output gradient (pixels, C_out/G), per group."""
        if method not in ("auto", "gemm") or np.dtype(x.dtype) not in kernels.TYPENAMES:
            return super().conv2d_weight_grad(x, grad_out, kernel_hw, stride, pads, dilation,
                                              groups, padding_mode, method, scratch_bytes)
        xp = self.xp
        with self._device_of(x):
            N, C, H, W = x.shape
            _, O, Ho, Wo = grad_out.shape
            kh, kw = kernel_hw
            G, Cg, Og = groups, C // groups, O // groups
            K = Cg * kh * kw
            # The transposed output gradient of a chunk is scratch too.
            plan = kernels.im2col_plan(x.shape, tuple(kernel_hw), tuple(stride),
                                       (pads[0], pads[2]), tuple(dilation), (Ho, Wo),
                                       padding_mode, x.dtype.itemsize, scratch_bytes, 0,
                                       "tap-major", O)
            buffer = xp.empty(plan.cols_elements, dtype=x.dtype)
            # Chunks' partial products are summed in the accumulator type.
            acc_dtype = np.float32 if x.dtype == np.float16 else x.dtype
            total = None
            dy = grad_out.reshape(N, G, Og, Ho * Wo)
            for chunk in plan.chunks:
                nb, P = chunk.n1 - chunk.n0, (chunk.r1 - chunk.r0) * Wo
                cols = buffer[:nb * G * K * P]
                self._launch("im2col.cu", "im2col", chunk.launches[0], x[chunk.n0:chunk.n1],
                             cols)
                dyt = dy[chunk.n0:chunk.n1, :, :, chunk.r0 * Wo:chunk.r1 * Wo]
                dyt = xp.ascontiguousarray(dyt.transpose(1, 0, 3, 2)).reshape(G, nb * P, Og)
                part = xp.matmul(cols.reshape(G, K, nb * P), dyt)  # (G, K, Og)
                if total is None:
                    total = part.astype(acc_dtype, copy=False)
                else:
                    total += part
            dw = xp.ascontiguousarray(total.transpose(0, 2, 1), dtype=x.dtype)  # (G, Og, K)
            return dw.reshape(O, Cg, kh, kw)

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

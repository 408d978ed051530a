"""The benchmark grids' constants: sizes, layers, methods and targets, for CPU and GPU runs.

A leaf module (it imports nothing from gpuconv): :mod:`gpuconv.bench._grids`
builds its cases from these names when a run starts (so a test can shrink a
grid by patching them), ``benchmarks/gpu_bench.py`` runs the GPU selection,
and :mod:`gpuconv.bench._targets` judges a report against ``TARGETS``.
"""

from __future__ import annotations

__all__ = [
    "PLANE_SIZES", "PLANE_KERNELS", "QUICK_PLANE_SIZES", "QUICK_PLANE_KERNELS",
    "CONV_LAYERS", "QUICK_CONV_LAYERS", "CONV_DTYPES", "QUICK_CONV_DTYPES",
    "BANDWIDTH_SIZES", "QUICK_BANDWIDTH_SIZES", "BANDWIDTH_KERNEL", "QUEUE_DEPTH",
    "BATCHED", "QUICK_BATCHED", "GPUCONV_METHODS", "FFT_METHODS", "AUTO_CANDIDATES",
    "AUTO_EXACT_METHODS",
    "PLANE_GEMM_MAX_KERNEL", "TORCH_DEVICES", "DEVICE_BACKENDS", "GPU_GRIDS",
    "CEILING_COPY_ELEMENTS", "CEILING_MATMUL_N", "QUICK_CEILING_COPY_ELEMENTS",
    "QUICK_CEILING_MATMUL_N", "TARGETS",
]

# -- single-channel planes ("planes": float32, mode="valid") ---------------------------
PLANE_SIZES = (256, 1024, 4096)
PLANE_KERNELS = (3, 7, 15, 31)
QUICK_PLANE_SIZES = (64, 128)
QUICK_PLANE_KERNELS = (3, 7)

# -- conv layers ("conv2d", "train-step": NCHW, stride 1, no padding) -------------------
# (N, C_in, H, W, C_out, k): LeNet-ish, a small CIFAR layer, two ResNet-ish layers.
CONV_LAYERS = (
    (32, 3, 32, 32, 16, 5),
    (32, 64, 28, 28, 64, 3),
    (8, 256, 14, 14, 256, 3),
    (1, 1, 28, 28, 6, 5),
)
QUICK_CONV_LAYERS = ((2, 3, 16, 16, 4, 3), (1, 1, 12, 12, 2, 5))
CONV_DTYPES = ("float32", "float64")
QUICK_CONV_DTYPES = ("float32",)

# -- memory-bound planes ("bandwidth": float32 3x3, mode="same") ------------------------
BANDWIDTH_SIZES = (4096, 8192)
QUICK_BANDWIDTH_SIZES = (256,)
BANDWIDTH_KERNEL = 3
# Calls queued before one synchronisation in the bandwidth grid: a 3x3 pass over 4096²
# takes ~40 µs on a current GPU, about one call's Python overhead, so a blocking call
# would time the host.  Queued calls overlap that overhead with the previous kernel, as
# in a pipeline; the cell is the time per call.
QUEUE_DEPTH = 16

# -- many planes in one call ("batched": float32, mode="same") --------------------------
BATCHED = (64, 512, 5)          # (planes, size, kernel)
QUICK_BATCHED = (4, 64, 5)

# -- methods --------------------------------------------------------------------------
GPUCONV_METHODS = ("direct", "gemm", "auto")
FFT_METHODS = ("fft", "overlap-add")
# The conv2d grid's extra column: Winograd, on its 3x3 layers.
CONV_EXTRA_METHODS = ("winograd",)
# The methods method="auto" may pick, per grid, and its precision policy
# (gpuconv._choose): an exact method (direct, gemm) always; an inexact one (FFT,
# Winograd) only where it is at least its margin (gpuconv._choose.MARGINS) faster than
# the best exact one.  Overlap-add is no conv2d candidate for output planes under 256²,
# which every layer of CONV_LAYERS is.  The auto_regret target compares auto with the
# fastest method this policy allows, judged on the measured times.
AUTO_CANDIDATES = {
    "planes": ("direct", "gemm", "fft", "overlap-add"),
    "bandwidth": ("direct", "gemm", "fft", "overlap-add"),
    "batched": ("direct", "gemm", "fft", "overlap-add"),
    "conv2d": ("direct", "gemm", "fft", "winograd"),
}
AUTO_EXACT_METHODS = ("direct", "gemm")
# Largest plane kernel the gemm column is timed with, per backend (absent: every size).
# On the GPU the scratch-bounded im2col of a 31x31 kernel over 4096² is some 10^5
# strided launches (~20 s of host time a call); where it is not timed, auto's regret is
# judged against the other methods.
PLANE_GEMM_MAX_KERNEL = {"cupy": 7}

# -- anchors and devices -----------------------------------------------------------------
# Where the torch anchor runs for each gpuconv backend (CUDA: cuDNN, TF32 off).
TORCH_DEVICES = {"numpy": "cpu", "cupy": "cuda"}
# Backends whose arrays live on a device: the GPU-only grids and anchors apply there.
DEVICE_BACKENDS = ("cupy",)
# The GPU run, in order: grids with one target per case first, so that a run stopped
# by its time budget still answers them.
GPU_GRIDS = ("bandwidth", "batched", "conv2d", "planes")

# -- ceilings: the card's measured copy bandwidth and float32 matrix-product rate ------
CEILING_COPY_ELEMENTS = 1 << 28     # float32: 1 GiB copied (2 GiB of traffic)
CEILING_MATMUL_N = 8192
QUICK_CEILING_COPY_ELEMENTS = 1 << 16
QUICK_CEILING_MATMUL_N = 64

# -- targets of the CuPy backend -----------------------------------------------------
# name -> (goal, how the value compares with it, what it is computed from)
TARGETS = {
    "bandwidth": (0.75, ">=", "GB/s of `direct` (input read once, output written once) "
                              "/ measured copy GB/s, float32 3x3 at 4096² and 8192²"),
    "vs_cupyx": (3.0, ">=", "`cupyx.signal` time / `auto` time, every planes cell"),
    "vs_cudnn": (1.25, "<=", "`auto` time / `torch` (cuDNN, TF32 off) time, every "
                             "float32 conv2d layer"),
    "batched_vs_loop": (10.0, ">=", "`cupyx.signal loop` time / `auto` time, "
                                    "the batched case"),
    "auto_regret": (1.15, "<=", "`auto` time / fastest measured method auto's precision "
                                "policy allows (AUTO_CANDIDATES, gpuconv._choose.MARGINS), every "
                                "cell of every grid"),
}

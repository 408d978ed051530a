"""gpuconv's CUDA kernels: the ``.cu`` sources, their launch geometry, and the
per-device cache of compiled modules.

The sources are read with :mod:`importlib.resources`; ``_common.cuh`` (element
types and their arithmetic) is prepended to each, so a translation unit needs
no include path.  Every kernel is a template over the element type and is
looked up by its name expression, ``f"{kernel}<{typename}>"``.

Everything here except :func:`get_function` is plain Python: the tests compile
the same translation units with NVRTC for real GPU targets and run them in a
host-side emulator, both without a device.  :func:`get_function` imports CuPy
and compiles once per device with ``cupy.RawModule``.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

__all__ = [
    "KERNELS",
    "TYPENAMES",
    "BOUNDARY_CODES",
    "PADDING_CODES",
    "COMPILE_OPTIONS",
    "VARIANTS",
    "Launch",
    "source",
    "name_expressions",
    "typename",
    "planes_launch",
    "conv2d_launch",
    "conv_transpose2d_launch",
    "get_function",
]

# File -> the kernel templates it defines.
KERNELS: dict[str, tuple[str, ...]] = {
    "correlate_planes.cu": ("correlate_planes",),
    "conv2d.cu": ("conv2d_nchw", "conv_transpose2d_nchw"),
}

# Working dtype -> the template argument (see _common.cuh).
TYPENAMES: dict[np.dtype, str] = {
    np.dtype(np.float16): "gc_half",
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
    np.dtype(np.complex64): "gc_complex64",
    np.dtype(np.complex128): "gc_complex128",
}

BOUNDARY_CODES = {"fill": 0, "wrap": 1, "symm": 2}
PADDING_CODES = {"zeros": 0, "reflect": 1, "replicate": 2, "circular": 3}

# Language options only: CuPy adds the target architecture for the device.
COMPILE_OPTIONS: tuple[str, ...] = ("-std=c++17",)

# Compile-time variants kept for measurement on a GPU (``-D`` names a kernel
# file understands); the default build defines none of them.
VARIANTS: dict[str, tuple[str, ...]] = {
    "correlate_planes.cu": ("GC_UNSTAGED_LOADS",),
    "conv2d.cu": (),
}

# Mirrors of the .cu #defines (a test checks they agree).
PLANES_BLOCK = (32, 8, 1)      # (GC_TW, GC_BY)
PLANES_TILE = (32, 32)         # (GC_TH, GC_TW) outputs per block
CONV_THREADS = 128             # GC_CONV_THREADS
CONV_CHANNELS_PER_THREAD = 8   # GC_COB

# CUDA's grid limits (x, y, z).
GRID_LIMITS = (2**31 - 1, 65535, 65535)
_INT32_MAX = 2**31 - 1


def source(filename: str) -> str:
    """The complete translation unit for ``filename``: ``_common.cuh`` + the file."""
    if filename not in KERNELS:
        raise ValueError(f"unknown kernel file {filename!r}; known: {sorted(KERNELS)}")
    return _read("_common.cuh") + "\n#line 1 \"" + filename + "\"\n" + _read(filename)


@functools.cache
def _read(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def typename(dtype: Any) -> str:
    """The template argument for a working dtype."""
    dtype = np.dtype(dtype)
    try:
        return TYPENAMES[dtype]
    except KeyError:
        allowed = ", ".join(str(d) for d in TYPENAMES)
        raise TypeError(f"no CUDA kernel for dtype {dtype}; allowed: {allowed}") from None


def name_expressions(filename: str) -> list[str]:
    """Every template instantiation of ``filename``, as NVRTC name expressions.

    Examples
    --------
    >>> from gpuconv import kernels
    >>> kernels.name_expressions("correlate_planes.cu")[:2]
    ['correlate_planes<gc_half>', 'correlate_planes<float>']
    """
    return [f"{kernel}<{tn}>" for kernel in KERNELS[filename] for tn in TYPENAMES.values()]


@dataclass(frozen=True)
class Launch:
    """Grid, block and argument values of one kernel launch.

    ``args`` are Python ints and floats in the kernel's parameter order after
    the three pointers (input, weights, output); the CuPy backend turns them
    into ``int32``/``float64`` scalars, the test emulator into C ints/doubles.
    """

    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple[int | float, ...]


def _grid(x: int, y: int, z: int, limits: tuple[int, int, int]) -> tuple[int, int, int]:
    # The kernels loop over y and z with a stride of gridDim, so these two may
    # be clipped to the limit; x may not.
    if x > limits[0]:
        raise ValueError(f"output too wide for one launch: {x} blocks along x, limit {limits[0]}")
    return (max(x, 1), max(1, min(y, limits[1])), max(1, min(z, limits[2])))


def _check_int32(what: str, *values: int) -> None:
    if max(values) > _INT32_MAX:
        raise ValueError(f"{what} {max(values)} exceeds the kernels' 32-bit index range; "
                         "split the input or use method='gemm'")


def planes_launch(x_shape: tuple[int, int, int], w_shape: tuple[int, int],
                  out_shape: tuple[int, int], origin: tuple[int, int], boundary: str,
                  fillvalue: Any, grid_limits: tuple[int, int, int] = GRID_LIMITS) -> Launch:
    """Launch of ``correlate_planes`` for planes ``x_shape = (B, H, W)``.

    Examples
    --------
    >>> from gpuconv import kernels
    >>> launch = kernels.planes_launch((100000, 64, 100), (3, 3), (64, 100), (1, 1), "symm", 0)
    >>> launch.grid, launch.block   # planes beyond gridDim.z are a loop in the kernel
    ((4, 2, 65535), (32, 8, 1))
    """
    B, H, W = x_shape
    kh, kw = w_shape
    oh, ow = out_shape
    top, left = origin
    _check_int32("plane size", H * W, oh * ow, kh * kw)
    th, tw = PLANES_TILE
    grid = _grid(-(-ow // tw), -(-oh // th), B, grid_limits)
    fill = complex(fillvalue)
    args = (B, H, W, kh, kw, oh, ow, top, left, BOUNDARY_CODES[boundary], fill.real, fill.imag)
    return Launch(grid, PLANES_BLOCK, args)


def _conv_grid(N: int, Cout: int, groups: int, Ho: int, Wo: int,
               grid_limits: tuple[int, int, int]) -> tuple[int, int, int]:
    cblocks = -(-(Cout // groups) // CONV_CHANNELS_PER_THREAD)
    return _grid(-(-(Ho * Wo) // CONV_THREADS), groups * cblocks, N, grid_limits)


def conv2d_launch(x_shape: tuple[int, int, int, int], w_shape: tuple[int, int, int, int],
                  stride: tuple[int, int], pads: tuple[int, int, int, int],
                  dilation: tuple[int, int], groups: int, padding_mode: str,
                  out_hw: tuple[int, int],
                  grid_limits: tuple[int, int, int] = GRID_LIMITS) -> Launch:
    """Launch of ``conv2d_nchw``; ``pads`` is (top, bottom, left, right)."""
    N, C, H, W = x_shape
    Cout, _, kh, kw = w_shape
    Ho, Wo = out_hw
    _check_int32("plane size", H * W, Ho * Wo)
    grid = _conv_grid(N, Cout, groups, Ho, Wo, grid_limits)
    args = (N, C, H, W, Cout, kh, kw, Ho, Wo, stride[0], stride[1], pads[0], pads[2],
            dilation[0], dilation[1], groups, PADDING_CODES[padding_mode])
    return Launch(grid, (CONV_THREADS, 1, 1), args)


def conv_transpose2d_launch(x_shape: tuple[int, int, int, int],
                            w_shape: tuple[int, int, int, int], stride: tuple[int, int],
                            padding: tuple[int, int], dilation: tuple[int, int], groups: int,
                            out_hw: tuple[int, int],
                            grid_limits: tuple[int, int, int] = GRID_LIMITS) -> Launch:
    """Launch of ``conv_transpose2d_nchw``; weights are (C_in, C_out/groups, kh, kw)."""
    N, C, H, W = x_shape
    _, Coutg, kh, kw = w_shape
    Cout = Coutg * groups
    Ho, Wo = out_hw
    _check_int32("plane size", H * W, (Ho + padding[0]) * (Wo + padding[1]))
    grid = _conv_grid(N, Cout, groups, Ho, Wo, grid_limits)
    args = (N, C, H, W, Cout, kh, kw, Ho, Wo, stride[0], stride[1], padding[0], padding[1],
            dilation[0], dilation[1], groups)
    return Launch(grid, (CONV_THREADS, 1, 1), args)


_modules: dict[tuple[str, int, tuple[str, ...]], Any] = {}
_modules_lock = threading.Lock()


def get_function(filename: str, kernel: str, dtype: Any, defines: tuple[str, ...] = ()) -> Any:
    """The compiled ``kernel<typename(dtype)>`` of ``filename`` on the current device.

    Compiles the whole file (every instantiation) once per device and set of
    ``defines`` (names from :data:`VARIANTS`) and keeps it.
    """
    import cupy

    unknown = set(defines) - set(VARIANTS[filename])
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)} of {filename}; "
                         f"allowed: {list(VARIANTS[filename])}")
    device = cupy.cuda.Device().id
    key = (filename, device, tuple(sorted(defines)))
    with _modules_lock:
        module = _modules.get(key)
        if module is None:
            options = COMPILE_OPTIONS + tuple(f"-D{d}" for d in key[2])
            module = cupy.RawModule(code=source(filename), options=options,
                                    name_expressions=name_expressions(filename))
            _modules[key] = module
    return module.get_function(f"{kernel}<{typename(dtype)}>")

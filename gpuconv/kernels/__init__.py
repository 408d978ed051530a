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
    "ConvPlan",
    "source",
    "name_expressions",
    "typename",
    "planes_launch",
    "conv2d_launch",
    "conv_transpose2d_launch",
    "im2col_launch",
    "col2im_launch",
    "ColumnChunk",
    "ColumnPlan",
    "im2col_plan",
    "col2im_plan",
    "get_function",
]

# File -> the kernel templates it defines.
KERNELS: dict[str, tuple[str, ...]] = {
    "correlate_planes.cu": ("correlate_planes",),
    "conv2d.cu": ("conv2d_igemm", "conv2d_igemm_padded", "conv_transpose2d_igemm",
                  "conv2d_splitk_reduce"),
    "im2col.cu": ("im2col", "col2im"),
}

# Working dtype -> the template argument (see _common.cuh).
TYPENAMES: dict[np.dtype, str] = {
    np.dtype(np.float16): "gc_half",
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
    np.dtype(np.complex64): "gc_complex64",
    np.dtype(np.complex128): "gc_complex128",
}

# How an axis is extended past its edges (gc_source_index in _common.cuh):
# SciPy's boundaries and PyTorch's padding modes share one set of codes.
BOUNDARY_CODES = {"fill": 0, "wrap": 3, "symm": 4}
PADDING_CODES = {"zeros": 0, "reflect": 1, "replicate": 2, "circular": 3}
EXTEND_CODES = {**PADDING_CODES, **BOUNDARY_CODES}

# Language options only: CuPy adds the target architecture for the device.
COMPILE_OPTIONS: tuple[str, ...] = ("-std=c++17",)

# Compile-time variants kept for measurement on a GPU (``-D`` names a kernel
# file understands); the default build defines none of them.
VARIANTS: dict[str, tuple[str, ...]] = {
    "correlate_planes.cu": ("GC_UNSTAGED_LOADS",),
    "conv2d.cu": (),
    "im2col.cu": (),
}

# Mirrors of the .cu #defines (a test checks they agree).
PLANES_BLOCK = (32, 8, 1)      # (GC_TW, GC_BY)
PLANES_TILE = (32, 32)         # (GC_TH, GC_TW) outputs per block
COL_THREADS = 128              # GC_COL_THREADS

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

    ``args`` are the kernel's scalar parameters, in order, after its array
    pointers: a Python ``int`` for a C ``int``, a Python ``float`` for a
    ``double`` and a ``numpy.int64`` for a ``long long``.  :attr:`scalars` is
    the same tuple as the NumPy scalars CuPy passes by value, converted once
    per launch geometry (the geometry functions are cached, so a repeated call
    shape reuses both).
    """

    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple[int | float | np.int64, ...]

    @functools.cached_property
    def scalars(self) -> tuple[np.generic, ...]:
        return tuple(a if isinstance(a, np.generic)
                     else np.int32(a) if isinstance(a, int) else np.float64(a)
                     for a in self.args)


def _grid(x: int, y: int, z: int, limits: tuple[int, int, int]) -> tuple[int, int, int]:
    # The kernels loop over y and z with a stride of gridDim, so these two may
    # be clipped to the limit; x may not.
    if x > limits[0]:
        raise ValueError(f"output too wide for one launch: {x} blocks along x, limit {limits[0]}")
    return (max(x, 1), max(1, min(y, limits[1])), max(1, min(z, limits[2])))


def _check_int32(what: str, *values: int) -> None:
    """Refuse what a kernel's ``int`` coordinates cannot hold.

    Offsets into buffers are 64-bit in every kernel; what stays ``int`` is a
    coordinate along one axis (with the kernel's reach and the block tile
    added) and the pixel index within one plane or band.
    """
    if max(values) > _INT32_MAX:
        raise ValueError(f"{what} {max(values)} exceeds the kernels' 32-bit index range; "
                         "split the input or use method='fft'")


@functools.lru_cache(maxsize=1024)
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
    th, tw = PLANES_TILE
    # Coordinates reach up to two tiles and the kernel past the output's edge.
    _check_int32("plane extent", H, W, oh + kh + 2 * th + abs(top),
                 ow + kw + 2 * tw + abs(left))
    grid = _grid(-(-ow // tw), -(-oh // th), B, grid_limits)
    fill = complex(fillvalue)
    args = (B, H, W, kh, kw, oh, ow, top, left, BOUNDARY_CODES[boundary], fill.real, fill.imag)
    return Launch(grid, PLANES_BLOCK, args)


# Mirrors of conv2d.cu's #defines (a test checks they agree).
CONV_TILE = (64, 64)           # (GC_IG_BM, GC_IG_BN): output pixels x channels per block
CONV_THREADS = 256             # GC_IG_THREADS
CONV_TABLE = 256               # GC_IG_TAB: taps decoded per chunk of the reduction
# Reduction slice staged in shared memory per dtype (gc_ig_cfg<T>::BK).
CONV_SLICE: dict[np.dtype, int] = {
    np.dtype(np.float16): 16,
    np.dtype(np.float32): 16,
    np.dtype(np.float64): 8,
    np.dtype(np.complex64): 8,
    np.dtype(np.complex128): 8,
}
# Blocks of the conv kernels resident per SM (float: ~120 registers x 256
# threads).  A launch of fewer than half a wave of such blocks splits its
# reduction so the wave fills without spilling into a second one, into splits
# of at least SPLIT_K_MIN_SLICES slices each.
SPLIT_K_BLOCKS_PER_SM = 2
SPLIT_K_MIN_SLICES = 4
# Streaming multiprocessors assumed when the caller does not say (H100/H200 SXM).
DEFAULT_SM_COUNT = 132
# Far-away coordinate of the kernel's null tap: every in-plane coordinate is smaller.
_FAR = 2**29


@dataclass(frozen=True)
class ConvPlan:
    """The launches of one implicit-GEMM convolution.

    ``launch`` runs ``kernel``; with ``splits > 1`` it writes ``splits``
    partial results of the accumulator type into a workspace of
    ``workspace_items`` elements of the input dtype, and ``reduce`` (a launch
    of ``conv2d_splitk_reduce``, arguments: workspace instead of the weights)
    adds them into the output in a fixed order.

    For a cost model: ``tile_macs`` is the multiply-adds the blocks issue
    (whole 64 x 64 tiles and reduction slices, so a 6-channel layer costs as
    much as a 64-channel one), ``wave_macs`` the same rounded up to whole
    waves of ``SPLIT_K_BLOCKS_PER_SM`` blocks per SM (a second, nearly empty
    wave takes as long as a full one).
    """

    kernel: str
    launch: Launch
    splits: int = 1
    reduce: Launch | None = None
    workspace_items: int = 0
    tile_macs: int = 0
    wave_macs: int = 0

    @property
    def launches(self) -> int:
        return 1 if self.reduce is None else 2


def _accumulator_itemsize(dtype: np.dtype) -> int:
    return 4 if dtype == np.float16 else dtype.itemsize


def _split_count(blocks: int, K: int, slice_k: int, out_items: int, dtype: np.dtype,
                 sm_count: int, splits: int | None, scratch_bytes: int | None,
                 z_limit: int) -> int:
    slices = -(-K // slice_k) if K else 0
    if splits is None:
        wave = SPLIT_K_BLOCKS_PER_SM * sm_count
        splits = min(wave // max(blocks, 1), slices // SPLIT_K_MIN_SLICES)
        if splits < 2:
            return 1
        if scratch_bytes is not None:
            splits = min(splits, scratch_bytes // max(out_items * _accumulator_itemsize(dtype), 1))
    elif splits < 1:
        raise ValueError(f"splits must be a positive integer, got {splits}")
    splits = max(1, min(splits, max(slices, 1), z_limit))
    # No split without work: each gets ceil(slices / splits) slices.
    per = -(-max(slices, 1) // splits)
    return -(-max(slices, 1) // per)


def _table_chunk(what: str, rows: tuple[int, int], cols: tuple[int, int], H: int, W: int,
                 taps: int) -> int:
    """Taps the kernel decodes per chunk, so that its 32-bit offsets cannot overflow.

    Within a chunk the kernel addresses channel ``c`` (relative to the
    chunk's first channel) at ``c * H * W + row * W + col`` in 32 bits, for
    every row in ``rows`` and column in ``cols`` it may form (out-of-plane
    ones included); 64-bit math happens once per chunk.
    """
    lo_r, hi_r = rows
    lo_c, hi_c = cols
    extent = max(abs(lo_r), abs(hi_r) + 1) * W + max(abs(lo_c), abs(hi_c) + 1)
    spare = (_INT32_MAX - extent) // max(H * W, 1)  # whole channels beyond the first
    if max(abs(lo_r), abs(hi_r), abs(lo_c), abs(hi_c)) >= _FAR or spare < 1:
        raise ValueError(f"{what} spans too many elements for the kernels' 32-bit in-plane "
                         "offsets; split the input or use method='gemm'")
    # A chunk of n consecutive taps touches at most ceil(n / taps) + 1 channels.
    return max(1, min(CONV_TABLE, spare * max(taps, 1)))


def _conv_plan(kernel: str, args_head: tuple[int, ...], chunk: int, N: int, Cout: int, Ho: int,
               Wo: int, Kmax: int, M: int, y_blocks: int, dtype: Any, sm_count: int,
               splits: int | None, scratch_bytes: int | None,
               grid_limits: tuple[int, int, int]) -> ConvPlan:
    dtype = np.dtype(dtype)
    typename(dtype)
    x_blocks = -(-M // CONV_TILE[0])
    slice_k = CONV_SLICE[dtype]
    out_items = N * Cout * Ho * Wo
    s = _split_count(x_blocks * y_blocks, Kmax, slice_k, out_items, dtype, sm_count, splits,
                     scratch_bytes, grid_limits[2])
    grid = _grid(x_blocks, y_blocks, 1, grid_limits)
    launch = Launch((grid[0], grid[1], s), (CONV_THREADS, 1, 1), args_head + (s, chunk))
    block_macs = CONV_TILE[0] * CONV_TILE[1] * -(-(-(-Kmax // slice_k)) // s) * slice_k
    blocks = x_blocks * y_blocks * s
    wave = SPLIT_K_BLOCKS_PER_SM * sm_count
    work = dict(tile_macs=blocks * block_macs, wave_macs=-(-blocks // wave) * wave * block_macs)
    if s == 1:
        return ConvPlan(kernel, launch, **work)
    workspace_bytes = s * out_items * _accumulator_itemsize(dtype)
    reduce_blocks = max(1, min(-(-out_items // CONV_THREADS), 65535))
    _check_int32("images x channels", N * Cout)
    reduce = Launch((reduce_blocks, 1, 1), (CONV_THREADS, 1, 1), (s, N * Cout, Ho * Wo))
    return ConvPlan(kernel, launch, s, reduce, -(-workspace_bytes // dtype.itemsize), **work)


@functools.lru_cache(maxsize=1024)
def conv2d_launch(x_shape: tuple[int, int, int, int], w_shape: tuple[int, int, int, int],
                  stride: tuple[int, int], pads: tuple[int, int, int, int],
                  dilation: tuple[int, int], groups: int, padding_mode: str,
                  out_hw: tuple[int, int], dtype: Any = np.float32, *,
                  sm_count: int = DEFAULT_SM_COUNT, splits: int | None = None,
                  scratch_bytes: int | None = None,
                  grid_limits: tuple[int, int, int] = GRID_LIMITS) -> ConvPlan:
    """Launches of the implicit-GEMM ``conv2d``; ``pads`` is (top, bottom, left, right).

    ``splits`` forces the number of reduction splits; by default the
    reduction is split when the grid fills less than half a wave
    (``SPLIT_K_BLOCKS_PER_SM * sm_count`` blocks), into as many splits as
    fit in one wave, keeping the workspace under ``scratch_bytes``.

    Examples
    --------
    >>> from gpuconv import kernels
    >>> plan = kernels.conv2d_launch((32, 64, 28, 28), (64, 64, 3, 3), (1, 1), (1, 1, 1, 1),
    ...                              (1, 1), 1, "zeros", (28, 28))
    >>> plan.kernel, plan.launch.grid, plan.splits   # 25088 pixels: 392 tiles of 64
    ('conv2d_igemm', (392, 1, 1), 1)
    >>> plan = kernels.conv2d_launch((8, 256, 14, 14), (256, 256, 3, 3), (1, 1), (1, 1, 1, 1),
    ...                              (1, 1), 1, "zeros", (14, 14))
    >>> plan.launch.grid, plan.splits   # 100 blocks for 132 SMs: the reduction is split
    ((25, 4, 2), 2)
    """
    N, C, H, W = x_shape
    Cout, Cg, kh, kw = w_shape
    Ho, Wo = out_hw
    sh, sw = stride
    dh, dw = dilation
    _check_int32("plane size", H * W, Ho * Wo)
    _check_int32("weight count", Cout * Cg * kh * kw)
    chunk = _table_chunk("the padded input",
                         (min(-pads[0], 0), max(H - 1, (Ho - 1) * sh - pads[0] + (kh - 1) * dh)),
                         (min(-pads[2], 0), max(W - 1, (Wo - 1) * sw - pads[2] + (kw - 1) * dw)),
                         H, W, kh * kw)
    # The kernel folds a padded coordinate back into the plane once (numpy.pad
    # and PyTorch allow no wider reflect / circular padding either).
    widest = {"reflect": (H - 1, W - 1), "circular": (H, W)}.get(padding_mode)
    if widest and (max(pads[:2]) > widest[0] or max(pads[2:]) > widest[1]):
        raise ValueError(f"padding_mode={padding_mode!r} needs pads (top, bottom, left, right) "
                         f"of at most {widest[0]}, {widest[0]}, {widest[1]}, {widest[1]} for a "
                         f"{H}x{W} input; got {tuple(pads)}")
    kernel = "conv2d_igemm" if padding_mode == "zeros" else "conv2d_igemm_padded"
    head = (N, C, H, W, Cout, kh, kw, Ho, Wo, sh, sw, pads[0], pads[2], dh, dw, groups,
            PADDING_CODES[padding_mode])
    y_blocks = groups * -(-(Cout // groups) // CONV_TILE[1])
    return _conv_plan(kernel, head, chunk, N, Cout, Ho, Wo, Cg * kh * kw, N * Ho * Wo, y_blocks,
                      dtype, sm_count, splits, scratch_bytes, grid_limits)


def _phase_taps(k: int, d: int, s: int, shift: int) -> int:
    """Taps u < k with u * d = shift (mod s): the sub-kernel of one output phase."""
    return sum(1 for u in range(k) if (shift - u * d) % s == 0)


@functools.lru_cache(maxsize=1024)
def conv_transpose2d_launch(x_shape: tuple[int, int, int, int],
                            w_shape: tuple[int, int, int, int], stride: tuple[int, int],
                            padding: tuple[int, int], dilation: tuple[int, int], groups: int,
                            out_hw: tuple[int, int], dtype: Any = np.float32, *,
                            sm_count: int = DEFAULT_SM_COUNT, splits: int | None = None,
                            scratch_bytes: int | None = None,
                            grid_limits: tuple[int, int, int] = GRID_LIMITS) -> ConvPlan:
    """Launches of the implicit-GEMM ``conv_transpose2d``; weights are (C_in, C_out/groups, kh, kw).

    One sub-problem per output phase ``(oi mod sh, oj mod sw)``, each a stride-1
    correlation with the taps that reach that phase; ``blockIdx.y`` walks
    (group, channel tile, phase).

    Examples
    --------
    >>> from gpuconv import kernels
    >>> plan = kernels.conv_transpose2d_launch((4, 16, 7, 7), (16, 8, 4, 4), (2, 2), (1, 1),
    ...                                        (1, 1), 1, (14, 14))
    >>> plan.launch.grid   # 4 images x 7 x 7 pixels per phase, 4 phases
    (4, 4, 1)
    """
    N, C, H, W = x_shape
    _, Coutg, kh, kw = w_shape
    Cout = Coutg * groups
    Ho, Wo = out_hw
    sh, sw = stride
    dh, dw = dilation
    _check_int32("plane size", H * W, Ho * Wo)
    _check_int32("weight count", C * Coutg * kh * kw)
    Hq, Wq = -(-Ho // sh), -(-Wo // sw)
    # Input rows read: q + (a + pad - u * dh) // sh for q < Hq, phase a < sh, tap u < kh.
    row_taps = [_phase_taps(kh, dh, sh, a + padding[0]) for a in range(sh)]
    col_taps = [_phase_taps(kw, dw, sw, b + padding[1]) for b in range(sw)]
    fewest = min([t for t in row_taps if t] or [1]) * min([t for t in col_taps if t] or [1])
    chunk = _table_chunk("the transposed convolution's input",
                         (min(0, (padding[0] - (kh - 1) * dh) // sh - 1),
                          max(H - 1, Hq + (sh + padding[0]) // sh + 1)),
                         (min(0, (padding[1] - (kw - 1) * dw) // sw - 1),
                          max(W - 1, Wq + (sw + padding[1]) // sw + 1)), H, W, fewest)
    taps = max(row_taps) * max(col_taps)
    head = (N, C, H, W, Cout, kh, kw, Ho, Wo, sh, sw, padding[0], padding[1], dh, dw, groups)
    y_blocks = groups * -(-Coutg // CONV_TILE[1]) * sh * sw
    return _conv_plan("conv_transpose2d_igemm", head, chunk, N, Cout, Ho, Wo, (C // groups) * taps,
                      N * Hq * Wq, y_blocks, dtype, sm_count, splits, scratch_bytes,
                      grid_limits)


def _col_grid(pixels: int, channels: int, images: int,
              grid_limits: tuple[int, int, int]) -> tuple[int, int, int]:
    return _grid(-(-pixels // COL_THREADS), channels, images, grid_limits)


@functools.lru_cache(maxsize=1024)
def im2col_launch(x_shape: tuple[int, int, int, int], kernel_hw: tuple[int, int],
                  stride: tuple[int, int], origin: tuple[int, int],
                  dilation: tuple[int, int], rows: tuple[int, int], out_w: int, mode: str,
                  fillvalue: Any = 0, layout: str = "image-major",
                  grid_limits: tuple[int, int, int] = GRID_LIMITS) -> Launch:
    """Launch of ``im2col`` for images ``x_shape = (n, C, H, W)`` and output rows ``rows``.

    ``origin`` is the (top, left) padding; ``mode`` a key of
    :data:`PADDING_CODES` or :data:`BOUNDARY_CODES` (``fillvalue`` is the
    constant).  ``layout`` ``'image-major'`` writes (n, C*kh*kw, P) columns,
    ``'tap-major'`` (C*kh*kw, n, P), where P = (rows[1] - rows[0]) * out_w.

    Examples
    --------
    >>> from gpuconv import kernels
    >>> launch = kernels.im2col_launch((2, 64, 56, 56), (3, 3), (1, 1), (1, 1), (1, 1),
    ...                                (0, 56), 56, "zeros")
    >>> launch.grid, launch.block   # pixels, channels, images
    ((25, 64, 2), (128, 1, 1))
    """
    n, C, H, W = x_shape
    kh, kw = kernel_hw
    r0, r1 = rows
    P = (r1 - r0) * out_w
    _check_int32("band of output pixels", P)
    _check_int32("input extent", H, W, (r1 - 1) * stride[0] + (kh - 1) * dilation[0]
                 + abs(origin[0]), (out_w - 1) * stride[1] + (kw - 1) * dilation[1]
                 + abs(origin[1]))
    if layout == "image-major":
        image_stride, tap_stride = C * kh * kw * P, P
    elif layout == "tap-major":
        image_stride, tap_stride = P, n * P
    else:
        raise ValueError(f"layout must be 'image-major' or 'tap-major'; got {layout!r}")
    fill = complex(fillvalue)
    args = (n, C, H, W, kh, kw, out_w, r0, r1 - r0, stride[0], stride[1], origin[0],
            origin[1], dilation[0], dilation[1], EXTEND_CODES[mode], fill.real, fill.imag,
            np.int64(image_stride), np.int64(tap_stride))
    return Launch(_col_grid(P, C, n, grid_limits), (COL_THREADS, 1, 1), args)


@functools.lru_cache(maxsize=1024)
def col2im_launch(n: int, channels: int, in_w: int, kernel_hw: tuple[int, int],
                  stride: tuple[int, int], padding: tuple[int, int],
                  dilation: tuple[int, int], out_hw: tuple[int, int],
                  out_rows: tuple[int, int], in_rows: tuple[int, int], accumulate: bool,
                  grid_limits: tuple[int, int, int] = GRID_LIMITS) -> Launch:
    """Launch of ``col2im``: output rows ``out_rows`` gather from input rows ``in_rows``."""
    kh, kw = kernel_hw
    Ho, Wo = out_hw
    o0, o1 = out_rows
    i0, i1 = in_rows
    P = (o1 - o0) * Wo
    _check_int32("band of output pixels", P)
    _check_int32("output extent", Ho + padding[0] + (kh - 1) * dilation[0],
                 Wo + padding[1] + (kw - 1) * dilation[1], i1 * stride[0], in_w * stride[1])
    args = (n, channels, in_w, kh, kw, Ho, Wo, o0, o1 - o0, i0, i1 - i0, stride[0],
            stride[1], padding[0], padding[1], dilation[0], dilation[1], int(accumulate))
    return Launch(_col_grid(P, channels, n, grid_limits), (COL_THREADS, 1, 1), args)


@dataclass(frozen=True)
class ColumnChunk:
    """Images ``[n0, n1)`` and rows ``[r0, r1)`` of one column buffer, and its launches.

    For :func:`im2col_plan` the rows are output rows and ``launches`` is the
    one ``im2col``; for :func:`col2im_plan` they are input rows and
    ``launches`` the ``col2im`` gather of that band.
    """

    n0: int
    n1: int
    r0: int
    r1: int
    launches: tuple[Launch, ...]


@dataclass(frozen=True)
class ColumnPlan:
    """Chunks covering every image and row, and the column buffer they share."""

    chunks: tuple[ColumnChunk, ...]
    cols_elements: int


def _bands(N: int, rows: int, per_row: int, budget: int,
           max_rows: int) -> list[tuple[int, int, int, int]]:
    """(n0, n1, r0, r1): whole images while ``budget`` bytes allow, else row bands of one."""
    per_image = per_row * rows
    if per_image <= budget:
        images = _even_split(N, max(1, budget // max(per_image, 1)))
        return [(n, min(N, n + images), 0, rows) for n in range(0, N, images)]
    band = _even_split(rows, max(1, min(max_rows, budget // max(per_row, 1))))
    return [(n, n + 1, r, min(rows, r + band)) for n in range(N) for r in range(0, rows, band)]


def _even_split(total: int, most: int) -> int:
    """Chunk length at most ``most`` that splits ``total`` into equal chunks (but the last)."""
    count = -(-total // most)
    return -(-total // count)


@functools.lru_cache(maxsize=256)
def im2col_plan(x_shape: tuple[int, int, int, int], kernel_hw: tuple[int, int],
                stride: tuple[int, int], origin: tuple[int, int],
                dilation: tuple[int, int], out_hw: tuple[int, int], mode: str,
                itemsize: int, scratch_bytes: int, fillvalue: Any = 0,
                layout: str = "image-major", extra_per_pixel: int = 0) -> ColumnPlan:
    """Chunks of ``im2col`` columns, each at most ``scratch_bytes``.

    Whole images while one image's columns (plus ``extra_per_pixel`` elements
    per output pixel of other scratch the caller needs) fit, else bands of
    output rows of one image, at least one row each.

    Examples
    --------
    >>> from gpuconv import kernels
    >>> plan = kernels.im2col_plan((8, 64, 56, 56), (3, 3), (1, 1), (1, 1), (1, 1),
    ...                            (56, 56), "zeros", 4, 2**24)
    >>> [(c.n0, c.n1) for c in plan.chunks], plan.cols_elements   # 7 MiB per image
    ([(0, 2), (2, 4), (4, 6), (6, 8)], 3612672)
    >>> plan = kernels.im2col_plan((1, 64, 56, 56), (3, 3), (1, 1), (1, 1), (1, 1),
    ...                            (56, 56), "zeros", 4, 2**21)
    >>> [(c.r0, c.r1) for c in plan.chunks]                       # rows of one image
    [(0, 14), (14, 28), (28, 42), (42, 56)]
    """
    N, C, H, W = x_shape
    kh, kw = kernel_hw
    Ho, Wo = out_hw
    per_row = (C * kh * kw + extra_per_pixel) * Wo * itemsize
    chunks, biggest = [], 0
    for n0, n1, r0, r1 in _bands(N, Ho, per_row, scratch_bytes, _INT32_MAX // max(Wo, 1)):
        launch = im2col_launch((n1 - n0, C, H, W), kernel_hw, stride, origin, dilation,
                               (r0, r1), Wo, mode, fillvalue, layout)
        chunks.append(ColumnChunk(n0, n1, r0, r1, (launch,)))
        biggest = max(biggest, (n1 - n0) * C * kh * kw * (r1 - r0) * Wo)
    return ColumnPlan(tuple(chunks), biggest)


@functools.lru_cache(maxsize=256)
def col2im_plan(x_shape: tuple[int, int, int, int], out_channels: int,
                kernel_hw: tuple[int, int], stride: tuple[int, int],
                padding: tuple[int, int], dilation: tuple[int, int],
                out_hw: tuple[int, int], itemsize: int, scratch_bytes: int) -> ColumnPlan:
    """Chunks of a transposed convolution's columns (C_out*kh*kw, input pixels).

    Whole images while one image's columns fit in ``scratch_bytes``, else
    bands of input rows of one image; a band's gather covers the output rows
    it reaches, the first band's every row (it writes the bias, or zero, where
    no input reaches).
    """
    N, _, H, W = x_shape
    kh, kw = kernel_hw
    Ho, Wo = out_hw
    per_row = out_channels * kh * kw * W * itemsize
    chunks, biggest = [], 0
    for n0, n1, i0, i1 in _bands(N, H, per_row, scratch_bytes, _INT32_MAX // max(W, 1)):
        if i0 == 0:
            o0, o1 = 0, Ho
        else:
            o0 = max(0, i0 * stride[0] - padding[0])
            o1 = min(Ho, (i1 - 1) * stride[0] + (kh - 1) * dilation[0] - padding[0] + 1)
        launches = ()
        if o1 > o0:
            launches = (col2im_launch(n1 - n0, out_channels, W, kernel_hw, stride, padding,
                                      dilation, out_hw, (o0, o1), (i0, i1), i0 > 0),)
        chunks.append(ColumnChunk(n0, n1, i0, i1, launches))
        biggest = max(biggest, (n1 - n0) * out_channels * kh * kw * (i1 - i0) * W)
    return ColumnPlan(tuple(chunks), biggest)


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

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
    "get_function",
]

# File -> the kernel templates it defines.
KERNELS: dict[str, tuple[str, ...]] = {
    "correlate_planes.cu": ("correlate_planes",),
    "conv2d.cu": ("conv2d_igemm", "conv2d_igemm_padded", "conv_transpose2d_igemm",
                  "conv2d_splitk_reduce"),
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
               Wo: int, Kmax: int, M: int, y_blocks: int, dtype: Any, sm_count: int, splits: int | None, scratch_bytes: int | None,
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

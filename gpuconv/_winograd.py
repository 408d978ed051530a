"""Winograd minimal filtering: the ``"winograd"`` method for 3x3 kernels at stride 1.

Written once against ``backend.xp`` (NumPy, CuPy): every step is a matrix
product (``xp.matmul``, so BLAS on the CPU and cuBLAS on a GPU) or a copy.

The algorithm
-------------
``F(m x m, 3 x 3)`` computes an ``m x m`` tile of a 3x3 correlation from an
``alpha x alpha`` input tile (``alpha = m + 2``) with ``alpha**2``
multiplications instead of ``9 m**2``:

    Y = A^T [ (G g G^T) * (B^T d B) ] A          (``*`` elementwise)

With many channels the elementwise products become ``alpha**2`` matrix
products, one per transform position ``(a, b)`` (and group), each
contracting the input channels over every tile of a chunk at once:

    M[a, b] (C_out, tiles) = U[a, b] (C_out, C_in) @ V[a, b] (C_in, tiles)

``U`` (the weight transform) is computed once per call in float64 (or
complex128) and rounded once.  The input transform is two passes of small
matrix products that read the padded NCHW input in place: along the width,
one product per tile column (the rows of every image and channel form one
strided matrix), then along the height, one per tile row.  The output
transform is two products over the whole chunk, and one copy writes the
tiles into the NCHW output, cropping ragged edges.  Images, or bands of tile
rows of one image, are processed in chunks whose buffers stay under the
scratch bound (and, on the CPU, near the cache size); a backend may run
several chunks at once.

The weight gradient is the same algorithm transposed
(:func:`weight_grad`): ``dU[a, b] = sum_tiles (A dY A^T)[a, b] (B^T d B)[a, b]``,
one ``(C_out x tiles) @ (tiles x C_in)`` product per position, then
``dw = G^T dU G``.

Tiles
-----
``F(2x2, 3x3)`` (points ``0, 1, -1, inf``) does 16 products per 4 outputs
(2.25x fewer than direct); ``F(4x4, 3x3)`` does 36 per 16 (4x fewer).  The
usual ``F(4x4, 3x3)`` points ``0, +-1, +-2, inf`` have a float32 error about
30 times direct summation's; the points ``0, +-3/2, +-2/3, inf`` used here
(the best of every set of two symmetric pairs from
``{1, 2, 3, 4, 5, 1/2, 1/3, 3/2, ...}``, measured) bring that to 5-6x in the
mean square.  All fractions are kept in ``G``, which is applied in float64:
``B^T`` and ``A^T`` hold small integers, which floats represent exactly.
:func:`choose_tile` takes ``F(4x4, 3x3)`` where it needs fewer products and
the channel sums have at least 16 terms, else ``F(2x2, 3x3)``.

Both point sets are closed under ``t -> 1/t`` (with ``0 <-> inf``), so the
transform of the spatially flipped kernel is a permutation of the transform
positions: the input gradient (a transposed convolution) reuses the forward
weight transform (:meth:`WeightTransform.adjoint`).

Accuracy
--------
With ``eps`` the unit roundoff of the working dtype, every output obeys

    |y_wino - y_exact| <= gamma_n * |A^T| (sum_c |G||g_c||G^T| * |B^T||d_c||B|) |A|
                       <= gamma_n * K_m * sum_c max|d_c| * ||g_c||_1

(:func:`error_bound`), where ``d_c`` is the ``alpha x alpha`` input tile of
channel ``c``, ``g_c`` its 3x3 kernel, ``gamma_n = n eps / (1 - n eps)`` with
``n = C_in/groups + 4 alpha + 10`` roundings (the channel sum, four
transform passes, the weight transform; twice that for complex data), and
``K_m`` the transforms' growth (:func:`growth`: 16 for ``F(2x2, 3x3)``, 181
for ``F(4x4, 3x3)``).  Direct summation's bound is
``gamma_{9 C_in/groups} * sum |x||w|`` over the window.  The bounds are
worst cases; measured on random normal data (max ``|error| / sum |x||w|``
over the window against direct summation's, float32 and float64 alike),
``F(2x2, 3x3)`` is 1.2-4x direct's (1.5-2x in the mean square) and
``F(4x4, 3x3)`` 6-13x from 16 channels per group (5-6.5x in the mean
square; up to 26x and 9x with 1-3 channels, hence :func:`choose_tile`'s rule).

The transforms are dense matrix products, so an input NaN or Inf reaches
every output of the (at most 2 x 2) tiles whose input window holds it:
``m`` to ``2m`` outputs along each axis instead of direct summation's
3, as NaN (``0 * Inf`` and ``Inf - Inf`` are NaN).  Outputs that are exactly
zero with direct summation (a zero-sum kernel on a constant patch) come back
as rounding noise.
"""

from __future__ import annotations

import contextlib
import contextvars
import queue
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Iterator

import numpy as np

from .backends._generic import extend_planes

__all__ = [
    "TILES",
    "Tile",
    "WeightTransform",
    "check_winograd",
    "choose_tile",
    "cost_features",
    "transform_weight",
    "conv2d",
    "weight_grad",
    "weight_grad_error_bound",
    "conv_transpose2d",
    "correlate_planes",
    "error_bound",
    "growth",
    "magnitude",
    "reuse_weight_transforms",
    "rounding_steps",
]


@dataclass(frozen=True)
class Tile:
    """The transforms of ``F(m, 3)``: ``y = AT @ ((G @ g) * (BT @ d))`` for a correlation.

    ``flip[k]`` is the transform position of the reversed kernel:
    ``G @ g[::-1] == (G @ g)[flip]``.
    """

    m: int
    points: str
    AT: tuple[tuple[int, ...], ...]
    G: tuple[tuple[Fraction, ...], ...]
    BT: tuple[tuple[int, ...], ...]
    flip: tuple[int, ...]

    @property
    def alpha(self) -> int:
        return self.m + 2


def _fr(*values: str) -> tuple[Fraction, ...]:
    return tuple(Fraction(v) for v in values)


# Toom-Cook at the given points (the last one at infinity): A^T evaluates the
# output polynomial, G the kernel's, B^T is the transposed interpolation.  The
# columns of A^T and rows of B^T are scaled to integers, with the inverse
# scale moved into G.
_F2 = Tile(
    m=2, points="0, 1, -1, inf",
    AT=((1, 1, 1, 0),
        (0, 1, -1, 1)),
    G=(_fr("1", "0", "0"),
       _fr("1/2", "1/2", "1/2"),
       _fr("1/2", "-1/2", "1/2"),
       _fr("0", "0", "1")),
    BT=((1, 0, -1, 0),
        (0, 1, 1, 0),
        (0, -1, 1, 0),
        (0, -1, 0, 1)),
    flip=(3, 1, 2, 0),
)
_F4 = Tile(
    m=4, points="0, 3/2, -3/2, 2/3, -2/3, inf",
    AT=((1, 8, 8, 27, 27, 0),
        (0, 12, -12, 18, -18, 0),
        (0, 18, 18, 12, 12, 0),
        (0, 27, -27, 8, -8, 1)),
    G=(_fr("1/36", "0", "0"),
       _fr("1/1170", "1/780", "1/520"),
       _fr("1/1170", "-1/780", "1/520"),
       _fr("1/520", "1/780", "1/1170"),
       _fr("1/520", "-1/780", "1/1170"),
       _fr("0", "0", "1/36")),
    BT=((36, 0, -97, 0, 36, 0),
        (0, -12, -8, 27, 18, 0),
        (0, 12, -8, -27, 18, 0),
        (0, 18, 27, -8, -12, 0),
        (0, -18, 27, 8, -12, 0),
        (0, 36, 0, -97, 0, 36)),
    flip=(5, 3, 4, 1, 2, 0),
)
TILES: dict[int, Tile] = {2: _F2, 4: _F4}


# -- validation and the tile choice --------------------------------------------------
def check_winograd(kernel_hw: tuple[int, int], stride: tuple[int, int] | None = None,
                   dilation: tuple[int, int] | None = None, *, argname: str = "weight") -> None:
    """Raise ``ValueError`` unless ``method="winograd"`` can compute this geometry.

    Parameters
    ----------
    kernel_hw : (int, int)
        The kernel's spatial size.
    stride, dilation : (int, int), optional
        Of a convolution layer (``None`` for SciPy-style correlation, which has neither).
    argname : str, keyword-only
        The kernel's argument name, for the message.

    Examples
    --------
    >>> from gpuconv._winograd import check_winograd
    >>> check_winograd((3, 3), (1, 1), (1, 1))
    >>> check_winograd((3, 3), (2, 2), (1, 1))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: method='winograd' needs a 3x3 kernel with stride 1 and dilation 1; ...
    >>> check_winograd((5, 5), argname="in2")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: method='winograd' needs a 3x3 kernel; got in2 of shape (5, 5): ...
    """
    kernel_hw = tuple(int(k) for k in kernel_hw)
    if stride is None and dilation is None:
        if kernel_hw != (3, 3):
            raise ValueError(f"method='winograd' needs a 3x3 kernel; got {argname} of shape "
                             f"{kernel_hw}: use method='direct' or 'fft' instead")
        return
    stride = tuple(stride or (1, 1))
    dilation = tuple(dilation or (1, 1))
    if kernel_hw != (3, 3) or stride != (1, 1) or dilation != (1, 1):
        raise ValueError(
            "method='winograd' needs a 3x3 kernel with stride 1 and dilation 1; got "
            f"{argname} of spatial size {kernel_hw}, stride {stride}, dilation {dilation}: "
            "use method='direct', 'gemm' or 'fft' instead"
        )


# F(4x4, 3x3) only for at least this many input channels per group: with
# fewer, direct summation's error is small (few terms) and F(4x4, 3x3)'s
# transform rounding dominates (measured float32 max error up to 20x
# direct's for 1-3 channels, 6-10x from 16 channels on).
_F4_MIN_CHANNELS = 16


def _products(m: int, out_hw: tuple[int, int]) -> int:
    a = m + 2
    return a * a * -(-out_hw[0] // m) * -(-out_hw[1] // m)


def choose_tile(out_hw: tuple[int, int], channels: int) -> int:
    """``m`` of the tile ``F(m x m, 3 x 3)`` for an output of size ``out_hw``.

    ``F(4x4, 3x3)`` where it needs fewer products than ``F(2x2, 3x3)`` for the
    whole (tile-rounded) output and the product sums run over at least 16
    input channels per group (``channels``), where its float32 error stays
    within about 10x direct summation's; otherwise ``F(2x2, 3x3)``.

    Examples
    --------
    >>> from gpuconv._winograd import choose_tile
    >>> choose_tile((28, 28), 64), choose_tile((7, 7), 64), choose_tile((2, 2), 64)
    (4, 4, 2)
    >>> choose_tile((28, 28), 3)
    2
    """
    if channels < _F4_MIN_CHANNELS or _products(2, out_hw) <= _products(4, out_hw):
        return 2
    return 4


# -- the weight transform --------------------------------------------------------------
@dataclass(frozen=True)
class WeightTransform:
    """``U = G g G^T`` of every kernel, laid out for the batched products.

    ``U`` has shape ``(alpha*alpha, groups, C_out/groups, C_in/groups)``: for
    each transform position and group, the matrix that multiplies the input
    tiles' ``(C_in/groups, tiles)`` matrix.
    """

    m: int
    U: Any

    @property
    def groups(self) -> int:
        return int(self.U.shape[1])

    def adjoint(self, xp: Any) -> WeightTransform:
        """The transform of the transposed convolution's kernel (flipped, channels swapped).

        A permutation of the transform positions, because the tile's points
        are closed under inversion (see the module docstring).
        """
        flip = TILES[self.m].flip
        a = len(flip)
        perm = xp.asarray([flip[i] * a + flip[j] for i in range(a) for j in range(a)])
        return WeightTransform(self.m, xp.ascontiguousarray(
            xp.swapaxes(xp.take(self.U, perm, axis=0), -1, -2)))


def _wide(dtype: Any) -> Any:
    return np.complex128 if np.dtype(dtype).kind == "c" else np.float64


def _compute_transform(xp: Any, w: Any, groups: int, m: int) -> WeightTransform:
    tile = TILES[m]
    a = tile.alpha
    Cout, Cg = w.shape[:2]
    G = np.array(tile.G, dtype=np.float64)
    # U[(a, b), k] = sum_{u, v} (G kron G)[(a, b), (u, v)] w[k, (u, v)]: one product,
    # whose rows k = (group, out, in) are already in U's layout.
    GG = xp.asarray(np.kron(G, G))
    u = xp.matmul(GG, w.reshape(Cout * Cg, 9).astype(_wide(w.dtype)).T)
    U = u.astype(w.dtype).reshape(a * a, groups, Cout // groups, Cg)
    return WeightTransform(m, U)


# Weight transforms reused between the calls of one training step (see
# reuse_weight_transforms); None outside such a block.
_REUSE: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "gpuconv_winograd_reuse", default=None)


@contextlib.contextmanager
def reuse_weight_transforms(store: dict) -> Iterator[dict]:
    """Within the block, transforms of the same weight array are computed once, in ``store``.

    A layer passes the same ``store`` to the block around its forward pass
    (after clearing it, since an optimizer updates weights in place) and to
    the block around its backward pass, so that the input gradient reuses
    the forward's transform.  Entries are keyed by the weight array's
    identity and hold a reference to it, so the key cannot be recycled.
    """
    token = _REUSE.set(store)
    try:
        yield store
    finally:
        _REUSE.reset(token)


def transform_weight(xp: Any, w: Any, groups: int, m: int) -> WeightTransform:
    """The weight transform of ``w`` (C_out, C_in/groups, 3, 3) for ``F(m x m, 3 x 3)``.

    Computed in float64 (complex128) and rounded once to ``w``'s dtype.
    """
    store = _REUSE.get()
    if store is None:
        return _compute_transform(xp, w, groups, m)
    key = (id(w), groups, m)
    hit = store.get(key)
    if hit is not None and hit[0] is w:
        return hit[1]
    wt = _compute_transform(xp, w, groups, m)
    store[key] = (w, wt)
    return wt


# -- the engine --------------------------------------------------------------------------
# Tiles per chunk below which the batched products lose speed (each chunk
# re-reads the weight transform).
_MIN_TILES = 512


def _serial(fn: Callable[[Any], None], tasks: list[Any]) -> None:
    for t in tasks:
        fn(t)


def _chunk_plan(N: int, nth: int, per_tile_row: int, budget: int, scratch_bytes: int,
                min_rows: int, workers: int = 1) -> list[tuple[int, int, int, int]]:
    """(n0, n1, t0, t1): whole images while the budget allows, else bands of tile rows.

    ``budget`` is the working-set target, raised to ``min_rows`` tile rows
    per chunk (so that the products get enough tiles to run at full speed)
    while ``scratch_bytes`` allows, and lowered so that ``workers`` chunks
    can run at once; at least one tile row.
    """
    rows = max(budget // max(per_tile_row, 1),
               min(min_rows, scratch_bytes // max(per_tile_row, 1)), 1)
    if workers > 1:
        rows = min(rows, max(nth * -(-N // workers), 1) if N >= workers else -(-nth // workers))
    if rows >= nth:
        images = max(1, min(N, rows // nth))
        # Equal chunks: a short last chunk would run its products at a worse size.
        count = -(-N // images)
        images = -(-N // count)
        return [(n, min(N, n + images), 0, nth) for n in range(0, N, images)]
    return [(n, n + 1, t, min(nth, t + rows)) for n in range(N) for t in range(0, nth, rows)]


class _Buffers:
    """One worker's scratch: the input chunk copy and the two arenas the stages alternate."""

    def __init__(self, xp: Any, dtype: Any, sizes: tuple[int, int, int],
                 scratch: Any = None) -> None:
        def empty(n: int) -> Any:
            return xp.empty(n, dtype=dtype) if scratch is None else scratch.take(n, dtype)

        self.copy = empty(sizes[0]) if sizes[0] else None
        self.arena1 = empty(sizes[1])
        self.arena2 = empty(sizes[2])

    def release(self, scratch: Any) -> None:
        if scratch is not None:
            for buf in (self.copy, self.arena1, self.arena2):
                scratch.give(buf)


def _engine(xp: Any, xpad: Any, wt: WeightTransform, out_hw: tuple[int, int],
            scratch_bytes: int, chunk_bytes: int | None = None, workers: int = 1,
            run_tasks: Callable[[Callable[[Any], None], list[Any]], None] | None = None,
            scratch: Any = None) -> Any:
    """The valid 3x3 correlation of ``xpad`` (N, C, Hp, Wp) with transformed weights ``wt``.

    Layouts, for a chunk of ``n`` images and ``th`` tile rows (``tw`` tile
    columns): the width pass writes ``T1 (b, n, s, c, row)``; the height pass
    ``V (a, b, t, n, s, c)``; the products ``M (a, b, g, o, t, n, s)``; the
    output passes ``S (i, b, g, o, t, n, s)`` and ``Y (i, g, o, t, n, s, j)``,
    whose rows ``(s, j)`` are whole output rows, copied to NCHW in one pass.
    Every matrix product reads strided views in place.

    With ``workers > 1``, ``run_tasks`` runs whole chunks concurrently (each
    with its own buffers, the scratch bound shared among them); otherwise it
    runs only the final copies of each chunk.
    """
    N, C, Hp, Wp = xpad.shape
    A2, G, Og, _ = wt.U.shape
    tile = TILES[wt.m]
    m, a = tile.m, tile.alpha
    Ho, Wo = out_hw
    Cout = G * Og
    nth, ntw = -(-Ho // m), -(-Wo // m)
    Wq = ntw * m + 2
    dtype = xpad.dtype
    it = dtype.itemsize
    BT = xp.asarray(np.array(tile.BT, dtype=dtype))
    AT = xp.asarray(np.array(tile.AT, dtype=dtype))
    U = wt.U

    # Buffers per tile row of one image (in elements): the input chunk copy
    # (needed for ragged sizes and bands of tile rows), and two arenas that
    # the stages alternate between: arena1 holds the width pass, then the
    # products M, then the output rows Y; arena2 holds the input transform V,
    # then the half-transformed outputs S.
    row_in = C * m * Wq
    row_t1 = a * ntw * C * m
    row_v = a * a * ntw * C
    row_m = a * a * ntw * Cout
    row_s = m * a * ntw * Cout
    row_y = m * m * ntw * Cout
    per_row = (2 * row_in + max(2 * row_t1, row_m, row_y) + max(row_v, row_s)) * it
    workers = max(1, min(workers, N * nth))
    budget = scratch_bytes if chunk_bytes is None else min(scratch_bytes, chunk_bytes)
    chunks = _chunk_plan(N, nth, per_row, budget // workers, scratch_bytes // workers,
                         -(-_MIN_TILES // ntw), workers)
    workers = min(workers, len(chunks))
    big_n = max(n1 - n0 for n0, n1, _, _ in chunks)
    big_t = max(t1 - t0 for _, _, t0, t1 in chunks)
    tiles_max = big_n * big_t * ntw
    need_copy = Wq != Wp or nth * m + 2 != Hp or big_t < nth
    sizes = (big_n * C * (big_t * m + 2) * Wq if need_copy else 0,
             max(a * ntw * big_n * C * (big_t * m + 2), A2 * tiles_max * Cout,
                 m * m * tiles_max * Cout),
             max(A2 * tiles_max * C, m * a * tiles_max * Cout))
    free: queue.SimpleQueue = queue.SimpleQueue()
    buffers_made = [_Buffers(xp, dtype, sizes, scratch) for _ in range(workers)]
    for buffers in buffers_made:
        free.put(buffers)

    out = xp.empty((N, Cout, Ho, Wo), dtype=dtype)
    out5 = out.reshape(N, G, Og, Ho, Wo)
    copies = run_tasks if (run_tasks and workers == 1) else _serial

    def chunk(bounds: tuple[int, int, int, int]) -> None:
        n0, n1 = bounds[:2]
        buffers = free.get()
        try:
            Y, r0, th = _transform_chunk(xp, xpad, bounds, buffers, BT, AT, U, m, ntw,
                                         need_copy)
            stop = min(Ho, r0 + th * m)

            def scatter(i: int) -> None:
                rows_i = len(range(r0 + i, stop, m))
                if rows_i:
                    # (g, o, t, n, (s, j)) -> (n, g, o, t, (s, j)): whole output rows.
                    src = xp.transpose(Y[i, :, :, :rows_i, :, :Wo], (3, 0, 1, 2, 4))
                    out5[n0:n1, :, :, r0 + i:stop:m, :] = src

            copies(scatter, list(range(m)))
        finally:
            # Y lives in these buffers: they are free once it is copied out.
            free.put(buffers)

    _run_chunks(chunk, chunks, workers, run_tasks,
                lambda: [buffers.release(scratch) for buffers in buffers_made])
    return out


def _run_chunks(chunk: Callable[[Any], None], chunks: list[Any], workers: int,
                run_tasks: Callable[[Callable[[Any], None], list[Any]], None] | None,
                release: Callable[[], Any]) -> None:
    """Every chunk, concurrently where ``workers > 1``; then ``release`` the buffers."""
    try:
        if workers > 1 and run_tasks is not None:
            run_tasks(chunk, chunks)
        else:
            for bounds in chunks:
                chunk(bounds)
    finally:
        release()


def _load(xp: Any, src: Any, n0: int, n1: int, r0: int, rows: int, cols: int,
          buffer: Any | None) -> Any:
    """Images ``n0:n1``, rows ``r0:r0 + rows`` and columns ``:cols`` of ``src`` as a
    C-contiguous array, zero-extended past its edges; a view when that is one already."""
    H, W = src.shape[2:]
    if buffer is None:
        return src[n0:n1]
    n, C = n1 - n0, src.shape[1]
    xs = buffer[:n * C * rows * cols].reshape(n, C, rows, cols)
    part = src[n0:n1, :, r0:min(H, r0 + rows), :min(W, cols)]
    xs[:, :, :part.shape[2], :part.shape[3]] = part
    if part.shape[2] < rows:
        xs[:, :, part.shape[2]:] = 0
    if part.shape[3] < cols:
        xs[:, :, :, part.shape[3]:] = 0
    return xs


def _two_pass(xp: Any, xs: Any, mat: Any, m: int, ntw: int, th: int, t1_buffer: Any,
              out_buffer: Any) -> Any:
    """``mat`` (a x k) applied along the width, then the height, of every tile of ``xs``.

    ``xs`` (n, c, th*m + k - m, ntw*m + k - m) holds tiles of k x k samples that start
    every m; the result ``V (a, a, tiles, c)`` with tiles in (t, n, s) order, in
    ``out_buffer``.  Both passes are small matrix products on strided views:
    ``T1[b, n, s, (c, row)] = sum_j mat[b, j] x[n, c, row, s*m + j]``, then
    ``V[a, b, t, (n, s, c)] = sum_i mat[a, i] T1[b, n, s, c, t*m + i]``.
    """
    a, k = mat.shape
    n, c, hq = xs.shape[:3]
    T1 = t1_buffer[:a * n * ntw * c * hq].reshape(a, n, ntw, c * hq)
    for s in range(ntw):
        win = xp.swapaxes(xs[..., s * m:s * m + k].reshape(n, c * hq, k), 1, 2)
        xp.matmul(mat, win, out=xp.swapaxes(T1[:, :, s], 0, 1))
    V = out_buffer[:a * a * th * n * ntw * c].reshape(a, a, th, n * ntw * c)
    T1r = T1.reshape(a, n * ntw * c, hq)
    for t in range(th):
        xp.matmul(mat, xp.swapaxes(T1r[:, :, t * m:t * m + k], 1, 2),
                  out=xp.swapaxes(V[:, :, t], 0, 1))
    return V.reshape(a * a, th * n * ntw, c)


def _transform_chunk(xp: Any, xpad: Any, bounds: tuple[int, int, int, int],
                     buffers: _Buffers, BT: Any, AT: Any, U: Any, m: int, ntw: int,
                     need_copy: bool) -> tuple[Any, int, int]:
    """Input transform, products and output transform of one chunk: ``(Y, first row, th)``."""
    n0, n1, t0, t1 = bounds
    A2, G, Og, Cg = U.shape
    a = m + 2
    Cout = G * Og
    n, th = n1 - n0, t1 - t0
    r0 = t0 * m
    xs = _load(xp, xpad, n0, n1, r0, th * m + 2, ntw * m + 2,
               buffers.copy if need_copy else None)
    tiles = th * n * ntw
    arena1, arena2 = buffers.arena1, buffers.arena2
    V = _two_pass(xp, xs, BT, m, ntw, th, arena1, arena2)
    # The products, per transform position and group: (Og, Cg) @ (Cg, tiles).
    Vg = xp.transpose(V.reshape(A2, tiles, G, Cg), (0, 2, 3, 1))
    M = arena1[:A2 * tiles * Cout].reshape(A2, G, Og, tiles)
    xp.matmul(U, Vg, out=M)
    # Output transform: S = A^T M over a, then Y = S A over b, with j last.
    S = arena2[:m * a * tiles * Cout].reshape(m, a * tiles * Cout)
    xp.matmul(AT, M.reshape(a, a * tiles * Cout), out=S)
    Y = arena1[:m * tiles * Cout * m].reshape(m, tiles * Cout, m)
    xp.matmul(xp.swapaxes(S.reshape(m, a, tiles * Cout), 1, 2), AT.T, out=Y)
    return Y.reshape(m, G, Og, th, n, ntw * m), r0, th


def weight_grad(xp: Any, xpad: Any, grad_out: Any, groups: int, scratch_bytes: int, *,
                tile: int | None = None, chunk_bytes: int | None = None, workers: int = 1,
                run_tasks: Callable[[Callable[[Any], None], list[Any]], None] | None = None,
                scratch: Any = None) -> Any:
    """The weight gradient of a 3x3, stride-1 ``conv2d`` on the padded input ``xpad``.

    ``dw[o, c] = sum_n corr(xpad[n, c], grad_out[n, o])``, through the transpose of
    Winograd's algorithm: ``dU = sum_tiles (A dY A^T) * (B^T d B)`` as one
    ``(C_out/groups x tiles) @ (tiles x C_in/groups)`` product per transform position
    and group, then ``dw = G^T dU G`` (in float64).

    Parameters
    ----------
    xp : module
    xpad : array, shape (N, C, Hp, Wp)
        The forward input, padded, C-contiguous.
    grad_out : array, shape (N, C_out, Hp - 2, Wp - 2)
        C-contiguous, of ``xpad``'s dtype.
    groups : int
    scratch_bytes : int
    tile, chunk_bytes, workers, run_tasks
        As in :func:`conv2d`.

    Returns
    -------
    array, shape (C_out, C / groups, 3, 3)
    """
    N, C, Hp, Wp = xpad.shape
    Cout = grad_out.shape[1]
    Ho, Wo = Hp - 2, Wp - 2
    G, Cg, Og = groups, C // groups, Cout // groups
    m = tile or choose_tile((Ho, Wo), 1 << 30)
    t = TILES[m]
    a, A2 = t.alpha, t.alpha ** 2
    nth, ntw = -(-Ho // m), -(-Wo // m)
    dtype = xpad.dtype
    BT = xp.asarray(np.array(t.BT, dtype=dtype))
    A = xp.asarray(np.array(t.AT, dtype=dtype).T)
    # Per tile row of one image: both chunk copies, the width pass of either, the
    # input transform and the output gradient's.
    row = (2 * C * m * (ntw * m + 2) + 2 * Cout * m * ntw * m
           + 2 * a * ntw * max(C, Cout) * m + A2 * ntw * (C + Cout)) * dtype.itemsize
    workers = max(1, min(workers, N * nth))
    budget = scratch_bytes if chunk_bytes is None else min(scratch_bytes, chunk_bytes)
    chunks = _chunk_plan(N, nth, row, budget // workers, scratch_bytes // workers,
                         -(-_MIN_TILES // ntw), workers)
    workers = min(workers, len(chunks))
    big_n = max(n1 - n0 for n0, n1, _, _ in chunks)
    big_t = max(t1 - t0 for _, _, t0, t1 in chunks)
    tiles_max = big_n * big_t * ntw
    copy_x = Wp != ntw * m + 2 or Hp != nth * m + 2 or big_t < nth
    copy_dy = Wo != ntw * m or Ho != nth * m or big_t < nth

    def empty(n: int) -> Any:
        return xp.empty(n, dtype) if scratch is None else scratch.take(n, dtype)

    class Worker:
        def __init__(self) -> None:
            self.x = empty(big_n * C * (big_t * m + 2) * (ntw * m + 2)) if copy_x else None
            self.dy = empty(big_n * Cout * big_t * m * ntw * m) if copy_dy else None
            self.t1 = empty(a * big_n * ntw * max(C * (big_t * m + 2), Cout * big_t * m))
            self.v = empty(A2 * tiles_max * C)
            self.d = empty(A2 * tiles_max * Cout)
            self.dU = xp.zeros((A2, G, Og, Cg), dtype)

        def release(self) -> None:
            if scratch is not None:
                for buf in (self.x, self.dy, self.t1, self.v, self.d):
                    scratch.give(buf)

    free: queue.SimpleQueue = queue.SimpleQueue()
    pool = [Worker() for _ in range(workers)]
    for wk in pool:
        free.put(wk)

    def chunk(bounds: tuple[int, int, int, int]) -> None:
        n0, n1, t0, t1 = bounds
        wk = free.get()
        try:
            th = t1 - t0
            tiles = th * (n1 - n0) * ntw
            xs = _load(xp, xpad, n0, n1, t0 * m, th * m + 2, ntw * m + 2, wk.x)
            V = _two_pass(xp, xs, BT, m, ntw, th, wk.t1, wk.v)
            ds = _load(xp, grad_out, n0, n1, t0 * m, th * m, ntw * m, wk.dy)
            D = _two_pass(xp, ds, A, m, ntw, th, wk.t1, wk.d)
            # dU[ab, g] += (Og, tiles) @ (tiles, Cg)
            Dg = xp.transpose(D.reshape(A2, tiles, G, Og), (0, 2, 3, 1))
            Vg = xp.swapaxes(V.reshape(A2, tiles, G, Cg), 1, 2)
            wk.dU += xp.matmul(Dg, Vg)
        finally:
            free.put(wk)

    _run_chunks(chunk, chunks, workers, run_tasks, lambda: [wk.release() for wk in pool])
    dU = pool[0].dU.astype(_wide(dtype))
    for wk in pool[1:]:
        dU += wk.dU
    GG = xp.asarray(np.kron(np.array(t.G, dtype=np.float64), np.array(t.G, dtype=np.float64)))
    dw = xp.matmul(GG.T, dU.reshape(A2, Cout * Cg))       # (9, (g, o, c))
    return xp.ascontiguousarray(dw.T.astype(dtype)).reshape(Cout, Cg, 3, 3)


# -- cost ---------------------------------------------------------------------------------
def cost_features(x_shape: tuple[int, ...], w_shape: tuple[int, ...], groups: int,
                  out_hw: tuple[int, int], transposed: bool = False) -> dict[str, float]:
    """Operation counts of one ``conv2d`` (or stride-1 ``conv_transpose2d``) by Winograd.

    ``macs``: the batched products; ``transform``: elements the input and output
    transforms write (each a small product of ``alpha`` terms); ``copies``:
    elements copied (the output, and the input when tiles overhang it);
    ``weight_macs``: the weight transform; ``calls``: matrix-product calls
    (Python and launch overhead).  For a cost model like
    ``sum_k c_k * feature_k``, fitted per machine.

    Examples
    --------
    >>> from gpuconv._winograd import cost_features
    >>> f = cost_features((32, 64, 30, 30), (64, 64, 3, 3), 1, (28, 28))
    >>> f["macs"] / (32 * 64 * 64 * 9 * 28 * 28)   # 4x fewer than direct
    0.25
    """
    N, C = x_shape[:2]
    if transposed:
        Cin, Coutg = w_shape[:2]
        Cg, Cout = Cin // groups, Coutg * groups
    else:
        Cout, Cg = w_shape[:2]
    m = choose_tile(out_hw, Cg)
    a = m + 2
    nth, ntw = -(-out_hw[0] // m), -(-out_hw[1] // m)
    tiles = N * nth * ntw
    t1 = a * N * ntw * C * (nth * m + 2)
    ragged = out_hw[0] % m or out_hw[1] % m
    chunks = max(1, -(-tiles // _MIN_TILES))
    return {
        "macs": float(a * a * tiles * Cg * Cout),
        "transform": float(t1 + a * a * tiles * C + a * a * tiles * Cout
                           + (m * a + m * m) * tiles * Cout),
        "copies": float(N * Cout * out_hw[0] * out_hw[1]
                        + (N * C * (nth * m + 2) * (ntw * m + 2) if ragged else 0)),
        "weight_macs": float(a * a * 9 * Cout * Cg),
        "calls": float(chunks * (ntw + nth + 3 + m)),
    }


# -- the ops -------------------------------------------------------------------------------
def conv2d(xp: Any, xpad: Any, w: Any, groups: int, out_hw: tuple[int, int],
           scratch_bytes: int, *, tile: int | None = None, chunk_bytes: int | None = None,
           workers: int = 1,
           run_tasks: Callable[[Callable[[Any], None], list[Any]], None] | None = None,
           scratch: Any = None) -> Any:
    """``conv2d`` with a 3x3 kernel, stride 1 and dilation 1, on an already padded input.

    Parameters
    ----------
    xp : module
        The array namespace.
    xpad : array, shape (N, C, Hp, Wp)
        The padded input, C-contiguous.
    w : array, shape (C_out, C / groups, 3, 3)
    groups : int
    out_hw : (int, int)
        ``(Hp - 2, Wp - 2)``.
    scratch_bytes : int
        Bound on the temporary buffers (which hold at least one tile row of
        one image); the weight transform is ``(m + 2)**2 / 9`` times the
        weight's size.
    tile : {2, 4}, optional
        ``m`` of ``F(m x m, 3 x 3)``; by default :func:`choose_tile`'s.
    chunk_bytes : int, optional
        A smaller working-set target (a cache size) for the chunks.
    workers : int, optional
        Chunks to compute concurrently through ``run_tasks`` (default 1).
    run_tasks : callable, optional
        ``run_tasks(fn, tasks)`` runs ``fn`` on every task, possibly
        concurrently.  With ``workers > 1`` the tasks are whole chunks, whose
        matrix products must then not start threads of their own; otherwise
        they are copies.
    scratch : object, optional
        ``scratch.take(n, dtype)`` and ``scratch.give(array)``: where the
        arenas come from and go back to (a backend's caching allocator);
        by default ``xp.empty``.

    Returns
    -------
    array, shape (N, C_out, Hp - 2, Wp - 2)
    """
    m = tile or choose_tile(out_hw, w.shape[1])
    wt = transform_weight(xp, w, groups, m)
    return _engine(xp, xpad, wt, out_hw, scratch_bytes, chunk_bytes, workers, run_tasks,
                   scratch)


def conv_transpose2d(xp: Any, x: Any, w: Any, padding: tuple[int, int], groups: int,
                     out_hw: tuple[int, int], scratch_bytes: int, *,
                     tile: int | None = None, chunk_bytes: int | None = None,
                     workers: int = 1,
                     run_tasks: Callable[[Callable[[Any], None], list[Any]], None] | None = None,
                     scratch: Any = None) -> Any:
    """Stride-1 ``conv_transpose2d`` with a 3x3 kernel: a full correlation with the flipped,
    channel-swapped kernel, whose transform is the adjoint of ``w``'s.

    ``w`` has shape ``(C_in, C_out / groups, 3, 3)``; the result ``(N, C_out, Ho, Wo)``
    with ``Ho = H + 2 - 2 * padding[0]`` (plus any output padding in ``out_hw``).
    """
    Ho, Wo = out_hw
    H, W = x.shape[-2:]
    top, left = 2 - padding[0], 2 - padding[1]
    xe = extend_planes(xp, x, top, Ho + 2 - H - top, left, Wo + 2 - W - left, "fill", 0)
    xe = xp.ascontiguousarray(xe)
    # The products sum over this op's input channels: w's first axis, per group.
    m = tile or choose_tile(out_hw, w.shape[0] // groups)
    wt = transform_weight(xp, w, groups, m).adjoint(xp)
    return _engine(xp, xe, wt, out_hw, scratch_bytes, chunk_bytes, workers, run_tasks,
                   scratch)


def correlate_planes(xp: Any, ext: Any, w: Any, out_shape: tuple[int, int],
                     scratch_bytes: int, **kwargs: Any) -> Any:
    """Correlation of boundary-extended planes ``ext`` (B, oh + 2, ow + 2) with a 3x3 ``w``."""
    out = conv2d(xp, xp.ascontiguousarray(ext[:, None]), w[None, None], 1, out_shape,
                 scratch_bytes, **kwargs)
    return out[:, 0]


# -- accuracy ------------------------------------------------------------------------------
def rounding_steps(m: int, channels: int, complex_: bool = False) -> int:
    """``n`` of the error bound's ``gamma_n``: the longest chain of roundings to one output.

    ``channels + 4 * alpha + 10``: the channel sum, four transform passes of
    ``alpha`` terms each and the weight transform; doubled for complex data.
    """
    n = channels + 4 * (m + 2) + 10
    return 2 * n if complex_ else n


def growth(m: int) -> float:
    """``K_m``: the transforms' worst-case growth (see the module docstring).

    Examples
    --------
    >>> from gpuconv._winograd import growth
    >>> growth(2), round(growth(4), 1)
    (16.0, 180.8)
    """
    tile = TILES[m]
    AT = np.abs(np.array(tile.AT, dtype=float))
    gmax = np.abs(np.array(tile.G, dtype=float)).max(axis=1)
    rsum = np.abs(np.array(tile.BT, dtype=float)).sum(axis=1)
    return float(((AT * gmax * rsum).sum(axis=1) ** 2).max())


def magnitude(xpad: Any, w: Any, groups: int, m: int) -> np.ndarray:
    """``|A^T| (sum_c |G||g_c||G^T| * |B^T||d_c||B|) |A|`` per output, in float64 NumPy.

    The quantity the rounding errors of ``F(m x m, 3 x 3)`` scale with, as
    ``sum |x||w|`` over the window is for direct summation.

    Parameters
    ----------
    xpad : array_like, shape (N, C, Hp, Wp)
    w : array_like, shape (C_out, C / groups, 3, 3)
    groups : int
    m : {2, 4}

    Returns
    -------
    numpy.ndarray, shape (N, C_out, Hp - 2, Wp - 2)
    """
    tile = TILES[m]
    a = tile.alpha
    AT, G, BT = (np.abs(np.array(M, dtype=float)) for M in (tile.AT, tile.G, tile.BT))
    x = np.abs(np.asarray(xpad)).astype(np.float64)
    w = np.abs(np.asarray(w)).astype(np.float64)
    N, C, Hp, Wp = x.shape
    Cout, Cg = w.shape[:2]
    Ho, Wo = Hp - 2, Wp - 2
    nth, ntw = -(-Ho // m), -(-Wo // m)
    xe = np.zeros((N, C, nth * m + 2, ntw * m + 2))
    xe[:, :, :Hp, :Wp] = x
    s = xe.strides
    tiles = np.lib.stride_tricks.as_strided(
        xe, (N, groups, Cg, nth, ntw, a, a),
        (s[0], Cg * s[1], s[1], m * s[2], m * s[3], s[2], s[3]))
    d = np.einsum("kp,ngctspq,lq->ngctskl", BT, tiles, BT)
    g = np.einsum("ku,gocuv,lv->gockl", G, w.reshape(groups, Cout // groups, Cg, 3, 3), G)
    msum = np.einsum("gockl,ngctskl->ngotskl", g, d)
    y = np.einsum("ik,ngotskl,jl->ngotisj", AT, msum, AT)
    return y.reshape(N, Cout, nth * m, ntw * m)[:, :, :Ho, :Wo]


def error_bound(xpad: Any, w: Any, groups: int, m: int, dtype: Any) -> np.ndarray:
    """Per-output bound on the rounding error of ``F(m x m, 3 x 3)``.

    ``gamma_n * magnitude(xpad, w, groups, m)`` with ``gamma_n = n eps / (1 - n eps)``,
    ``eps`` the unit roundoff of ``dtype`` and ``n`` from :func:`rounding_steps`
    (see the module docstring).

    Parameters
    ----------
    xpad : array_like, shape (N, C, Hp, Wp)
        The padded input.
    w : array_like, shape (C_out, C / groups, 3, 3)
    groups : int
    m : {2, 4}
        The tile.
    dtype : dtype
        The working dtype (float16 counts as float32, which it computes in).

    Returns
    -------
    numpy.ndarray, shape (N, C_out, Hp - 2, Wp - 2)

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv._winograd import error_bound
    >>> b = error_bound(np.ones((1, 2, 6, 6)), np.ones((1, 2, 3, 3)), 1, 4, np.float32)
    >>> b.shape, bool(0 < b.max() < 1e-3 * 18)   # the outputs are 18
    ((1, 1, 4, 4), True)
    """
    dtype = np.dtype(dtype)
    if dtype == np.float16:
        dtype = np.dtype(np.float32)
    eps = float(np.finfo(dtype).eps) / 2
    n = rounding_steps(m, np.shape(w)[1], dtype.kind == "c")
    return n * eps / (1 - n * eps) * magnitude(xpad, w, groups, m)


def weight_grad_error_bound(xpad: Any, grad_out: Any, groups: int, m: int,
                            dtype: Any) -> np.ndarray:
    """Per-element bound on the rounding error of :func:`weight_grad` (float64 NumPy).

    ``gamma_n * |G^T| (sum_tiles |A||dY||A^T| * |B^T||d||B|) |G|`` with
    ``n = 2 * tiles + 4 * alpha + 10`` (the sum over every tile of the batch,
    chunk by chunk, and the transforms); twice that for complex data.

    Returns
    -------
    numpy.ndarray, shape (C_out, C / groups, 3, 3)
    """
    tile = TILES[m]
    a = tile.alpha
    AT, G, BT = (np.abs(np.array(M, dtype=float)) for M in (tile.AT, tile.G, tile.BT))
    x = np.abs(np.asarray(xpad)).astype(np.float64)
    dy = np.abs(np.asarray(grad_out)).astype(np.float64)
    N, C, Hp, Wp = x.shape
    Cout = dy.shape[1]
    Ho, Wo = Hp - 2, Wp - 2
    nth, ntw = -(-Ho // m), -(-Wo // m)
    xe = np.zeros((N, C, nth * m + 2, ntw * m + 2))
    xe[:, :, :Hp, :Wp] = x
    de = np.zeros((N, Cout, nth * m, ntw * m))
    de[:, :, :Ho, :Wo] = dy
    s = xe.strides
    xt = np.lib.stride_tricks.as_strided(xe, (N, C, nth, ntw, a, a),
                                         (s[0], s[1], m * s[2], m * s[3], s[2], s[3]))
    dt = de.reshape(N, Cout, nth, m, ntw, m).transpose(0, 1, 2, 4, 3, 5)
    v = np.einsum("kp,nctspq,lq->nctskl", BT, xt, BT)
    d = np.einsum("ik,notsij,jl->notskl", AT, dt, AT)
    Cg, Og = C // groups, Cout // groups
    du = np.einsum("ngotskl,ngctskl->gockl", d.reshape(N, groups, Og, nth, ntw, a, a),
                   v.reshape(N, groups, Cg, nth, ntw, a, a))
    mag = np.einsum("ku,gockl,lv->gocuv", G, du, G).reshape(Cout, Cg, 3, 3)
    dtype = np.dtype(dtype)
    if dtype == np.float16:
        dtype = np.dtype(np.float32)
    eps = float(np.finfo(dtype).eps) / 2
    n = 2 * N * nth * ntw + 4 * a + 10
    if dtype.kind == "c":
        n *= 2
    return n * eps / (1 - n * eps) * mag


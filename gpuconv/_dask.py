"""Dask arrays through gpuconv's public ops: lazy, chunk by chunk, with exact halos.

The public front doors send a call here when one of its arrays is a dask array
(found without importing dask, so only a caller that already imported dask can
get here).  The result is a lazy dask array whose chunks are computed by the
in-memory gpuconv op, on the backend of the chunks (NumPy, or CuPy under
dask-cuda).  ``method="auto"`` is decided once, when the graph is built, for
the shape of an interior chunk, and that method computes every chunk: the
result does not depend on where the chunks are cut.  (As in memory, a chunk
holding NaN or Inf falls back from an FFT method to the exact one.)

Validation happens once, by the in-memory front door itself: it is called on
empty stand-ins with the dask arrays' shapes and dtypes (a zero-length batch),
so a dask call raises exactly the errors an in-memory call raises, and the
stand-in's result gives the output dtype.

Every op here is a ``"valid"`` windowed sum over an extended input.  Along each
spatial axis, with kernel extent ``e = dilation * (k - 1) + 1`` and stride ``s``:

1. the input is extended lazily by the boundary or padding rule (slices of the
   input and constant blocks, concatenated: any width, no full copy);
2. it is rechunked so that every chunk starts at a multiple of ``s`` (the
   first input sample of its first output).  The cut points follow the input's
   own chunk boundaries, so the rechunk mostly merges the padding into the
   neighbouring chunk instead of splitting chunks; a chunk shorter than the
   halo is merged into its neighbour;
3. each chunk borrows ``max(e - s, 0)`` samples from the next chunk (a one-sided
   :func:`dask.array.overlap.overlap`) and goes through the in-memory op in
   ``"valid"`` mode with the same stride and dilation.

A chunk therefore reads exactly the samples the in-memory call reads for its
outputs and sums them in the same order: with the same method the result is the
in-memory result bit for bit.  Channels are the reduction axis of ``conv2d``;
they are gathered into one chunk (a tree sum over channel chunks would change
the summation order, and a convolution's channel count is small next to its
pixels).  The task graph has a fixed number of tasks per chunk, whatever the
image or kernel size.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import dask.array as da
import numpy as np

from . import _choose
from . import conv as conv_front
from . import correlate as correlate_front
from ._config import get_scratch_limit, scratch_limit
from ._dispatch import has_dask
from ._frontdoor import as_backend_array
from ._geometry import conv_output_hw, plane_geometry, resolve_padding, source_index
from ._validation import (check_fillvalue, compute_dtype, pair, parse_boundary, parse_method,
                          parse_mode, parse_padding_mode)
from .backend import get_backend, resolve_backend, set_backend

__all__ = ["correlate2d", "conv2d", "conv_transpose2d", "extend_axis", "anchor_chunks"]

# conv2d's padding modes as the extension rules below.
_PADDING_RULE = {"zeros": "fill", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


# -- operands and validation -------------------------------------------------
def _as_dask(backend: Any, argname: str, value: Any) -> Any:
    """A dask array with known chunk sizes; an in-memory operand becomes one chunk."""
    if value is None:
        return None
    if has_dask(value):
        if any(np.isnan(size) for chunks in value.chunks for size in chunks):
            raise ValueError(
                f"{argname} is a dask array with unknown chunk sizes {value.chunks}; call "
                f"{argname}.compute_chunk_sizes() first"
            )
        return value
    arr = as_backend_array(backend, argname, value)
    return da.from_array(arr, chunks=arr.shape or (), asarray=False)


def _stand_in(backend: Any, x: Any, shape: tuple[int, ...] | None = None) -> Any:
    """An in-memory array with ``x``'s dtype and ``shape`` (default: ``x``'s).

    The in-memory front door validates it, so a dask call raises what an
    in-memory call raises.  Images stand in with an empty batch (no memory);
    kernels as zeros of their (small) shape.
    """
    if x is None:
        return None
    return backend.xp.zeros(tuple(x.shape) if shape is None else shape, dtype=x.dtype)


def _single_block(x: Any, dtype: np.dtype) -> Any:
    return x.astype(dtype).rechunk(x.shape or ())


def _chunk_settings() -> dict[str, Any]:
    # Workers run tasks outside this context: the backend choice and the scratch
    # limit in force now are handed to every chunk explicitly.
    return {"backend": get_backend(), "scratch": get_scratch_limit()}


# -- lazy extension along one axis -------------------------------------------
def extend_axis(x: Any, axis: int, before: int, after: int, rule: str,
                fillvalue: Any = 0) -> Any:
    """``x`` lazily extended (positive amounts) or cropped (negative) along ``axis``.

    The extension is a concatenation of slices of ``x`` (reversed where mirrored)
    and constant blocks of ``x``'s chunk type, one piece per run of consecutive
    source samples, so any width works, including more than the axis length.
    """
    n = x.shape[axis]
    if before == 0 and after == 0:
        return x
    src = source_index(np.arange(-before, n + after), n, rule)
    index = [slice(None)] * x.ndim
    pieces = []
    start = 0
    while start < len(src):
        first = int(src[start])
        end = start + 1
        if first < 0:
            while end < len(src) and src[end] < 0:
                end += 1
            chunks = list(x.chunks)
            chunks[axis] = (end - start,)
            shape = tuple(sum(c) for c in chunks)
            pieces.append(da.full_like(x, fillvalue, shape=shape, chunks=tuple(chunks)))
        else:
            step = int(src[end] - first) if end < len(src) and src[end] >= 0 else 0
            if abs(step) == 1:
                while end < len(src) and src[end] >= 0 and src[end] == src[end - 1] + step:
                    end += 1
            last = int(src[end - 1])
            if step == -1:
                index[axis] = slice(first, last - 1 if last > 0 else None, -1)
            else:
                index[axis] = slice(first, last + 1)
            pieces.append(x[tuple(index)])
        start = end
    return pieces[0] if len(pieces) == 1 else da.concatenate(pieces, axis=axis)


# -- stride-aligned chunks with one-sided halos -------------------------------
def anchor_chunks(chunks: tuple[int, ...], extent: int, stride: int,
                  ) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """Input chunks, output chunks and halo for a valid windowed op along one axis.

    ``chunks`` are the extended input's chunks.  Output chunk ``i`` covers
    outputs ``[o_i, o_{i+1})``; its input chunk starts at ``o_i * stride`` and,
    with the ``halo = max(extent - stride, 0)`` samples borrowed from the next
    chunk, holds exactly the samples its outputs read.  Cuts follow the given
    chunk boundaries (rounded down to the stride); chunks too short to lend a
    full halo are merged into the previous one.

    Examples
    --------
    >>> from gpuconv._dask import anchor_chunks
    >>> anchor_chunks((1, 4, 4, 3, 1), extent=3, stride=1)   # 'same' padding of 1
    ((5, 4, 4), (5, 4, 2), 2)
    >>> anchor_chunks((5, 5, 5), extent=3, stride=2)
    ((4, 6, 5), (2, 3, 2), 1)
    """
    length = sum(chunks)
    n_out = (length - extent) // stride + 1
    halo = max(extent - stride, 0)
    min_out = max(1, -(-halo // stride))
    cuts = sorted({int(b) // stride for b in np.cumsum(chunks[:-1])} & set(range(1, n_out)))
    out: list[int] = []
    prev = 0
    for cut in cuts:
        if cut - prev >= min_out:
            out.append(cut - prev)
            prev = cut
    out.append(n_out - prev)
    # The last input chunk runs to the end: it holds its outputs' windows and
    # at least ``extent >= halo`` samples, so it can always lend a halo.
    inp = [c * stride for c in out[:-1]] + [length - prev * stride]
    return tuple(inp), tuple(out), halo


def _with_halos(x: Any, extents: tuple[int, int], strides: tuple[int, int],
                ) -> tuple[Any, tuple[tuple[int, ...], tuple[int, ...]]]:
    """``x`` (..., H, W) rechunked to stride-aligned chunks, each with its halo."""
    chunks = list(x.chunks)
    depth: dict[int, Any] = {axis: 0 for axis in range(x.ndim)}
    out_chunks = []
    for i, axis in enumerate((x.ndim - 2, x.ndim - 1)):
        inp, out, halo = anchor_chunks(x.chunks[axis], extents[i], strides[i])
        chunks[axis] = inp
        out_chunks.append(out)
        depth[axis] = (0, halo)
    x = x.rechunk(tuple(chunks))
    if any(isinstance(d, tuple) and d[1] for d in depth.values()):
        x = da.overlap.overlap(x, depth=depth, boundary={a: "none" for a in depth},
                               allow_rechunk=False)
    return x, (out_chunks[0], out_chunks[1])


# -- per-chunk calls (run on the workers) -------------------------------------
def _correlate_chunk(x: Any, w: Any, *, convolution: bool, method: str, fallback: bool,
                     backend: str, scratch: int) -> Any:
    with set_backend(backend), scratch_limit(scratch):
        call = correlate_front._plan(x, w, "valid", "fill", 0, convolution=convolution)
        return call.run(correlate_front.resolve_method(call, method, fallback))


def _conv2d_chunk(x: Any, w: Any, b: Any, *, stride: tuple[int, int],
                  dilation: tuple[int, int], groups: int, method: str, fallback: bool,
                  backend: str, scratch: int) -> Any:
    with set_backend(backend), scratch_limit(scratch):
        call = conv_front._plan_conv2d(x, w, b, stride, 0, dilation, groups, "zeros")
        return call.run(conv_front.resolve_method(call, method, fallback))


def _conv_transpose2d_chunk(x: Any, w: Any, b: Any, *, kwargs: dict[str, Any], method: str,
                            fallback: bool, backend: str, scratch: int) -> Any:
    with set_backend(backend), scratch_limit(scratch):
        call = conv_front._plan_conv_transpose2d(x, w, b, **kwargs)
        return call.run(conv_front.resolve_method(call, method, fallback))


def _once(method: Any, choose: Any) -> dict[str, Any]:
    """The method every chunk runs: ``auto`` decided here, once, for an interior chunk.

    An FFT method chosen by ``auto`` keeps ``auto``'s fallback to an exact
    method for chunks holding NaN or Inf; one asked for by name does not.
    """
    method = parse_method(method)
    if method != "auto":
        return {"method": method, "fallback": False}
    chosen = choose().method
    return {"method": chosen, "fallback": chosen in _choose.NEEDS_FINITE}


def _largest(chunks: tuple[int, ...]) -> int:
    return max(chunks) if chunks else 0


def _out_meta(backend: Any, ndim: int, dtype: np.dtype) -> Any:
    # The backend's own array type (what its ops return), known without computing.
    return backend.asarray(backend.xp.empty((0,) * ndim, dtype=dtype))


# -- the ops -------------------------------------------------------------------
def correlate2d(in1: Any, in2: Any, mode: Any, boundary: Any, fillvalue: Any, method: Any,
                *, convolution: bool, swap: bool = True,
                names: tuple[str, str] = ("in1", "in2")) -> Any:
    """Dask version of :func:`gpuconv.correlate2d` / :func:`gpuconv.convolve2d`."""
    front = correlate_front
    name1, name2 = names
    backend = resolve_backend(**{name1: in1, name2: in2})
    x = _as_dask(backend, name1, in1)
    k = _as_dask(backend, name2, in2)
    exact = x.dtype.kind in "biu" and k.dtype.kind in "biu"
    if x.ndim < 2:
        raise ValueError(f"{name1} must have at least 2 dimensions (..., H, W); "
                         f"got shape {x.shape}")
    probe = front._correlate2d(_stand_in(backend, x, (0,) + x.shape), _stand_in(backend, k),
                               mode, boundary, fillvalue, method, convolution=convolution,
                               swap=swap, names=names)
    mode, boundary = parse_mode(mode), parse_boundary(boundary)
    _, work = compute_dtype({name1: x.dtype, name2: k.dtype})
    (H, W), (kh, kw) = x.shape[-2:], k.shape
    (oh, ow), (top, left), swapped = plane_geometry(mode, convolution, (H, W), (kh, kw), swap,
                                                    names)
    nd = x.ndim
    x = x.astype(work)
    w = _single_block(k, work)
    if swapped:
        # SciPy's swapped 'valid' (kernel larger than the planes): the output is
        # small and every plane is needed whole, so each plane is one chunk.
        x = x.rechunk({nd - 2: -1, nd - 1: -1})
        out_chunks: tuple[tuple[int, ...], tuple[int, ...]] = ((oh,), (ow,))
    else:
        if mode == "valid":
            boundary, fillvalue = "fill", 0
        else:
            fillvalue = check_fillvalue(fillvalue, work)
        x = extend_axis(x, nd - 2, top, oh + kh - 1 - H - top, boundary, fillvalue)
        x = extend_axis(x, nd - 1, left, ow + kw - 1 - W - left, boundary, fillvalue)
        x, out_chunks = _with_halos(x, (kh, kw), (1, 1))
    batch = int(np.prod([_largest(c) for c in x.chunks[:-2]]))
    interior = (_largest(x.chunks[-2]), _largest(x.chunks[-1]))
    fn = partial(_correlate_chunk, convolution=convolution, **_chunk_settings(),
                 **_once(method, lambda: _choose.choose_planes_method(
                     backend, (batch,) + interior, (kh, kw),
                     (interior[0] - kh + 1, interior[1] - kw + 1), work, "fill", exact)))
    ind = tuple(range(nd))
    out = da.blockwise(fn, ind, x, ind, w, (nd, nd + 1), dtype=work, concatenate=True,
                       adjust_chunks={nd - 2: out_chunks[0], nd - 1: out_chunks[1]},
                       meta=_out_meta(backend, nd, work))
    return out.astype(probe.dtype)


def _prepare_nchw(backend: Any, input: Any, weight: Any, bias: Any,
                  ) -> tuple[Any, Any, Any, bool]:
    x = _as_dask(backend, "input", input)
    w = _as_dask(backend, "weight", weight)
    b = _as_dask(backend, "bias", bias)
    if x.ndim not in (3, 4):
        raise ValueError(
            f"input must be 4-D (N, C, H, W) or 3-D (C, H, W); got shape {x.shape}"
        )
    unbatched = x.ndim == 3
    return (x[None] if unbatched else x), w, b, unbatched


def _work_dtype(x: Any, w: Any, b: Any) -> np.dtype:
    dtypes = {"input": x.dtype, "weight": w.dtype}
    if b is not None:
        dtypes["bias"] = b.dtype
    return compute_dtype(dtypes)[1]


def conv2d(input: Any, weight: Any, bias: Any, stride: Any, padding: Any, dilation: Any,
           groups: Any, *, padding_mode: Any, method: Any) -> Any:
    """Dask version of :func:`gpuconv.conv2d`."""
    front = conv_front
    backend = resolve_backend(input=input, weight=weight, bias=bias)
    x, w, b, unbatched = _prepare_nchw(backend, input, weight, bias)
    exact = x.dtype.kind in "biu" and w.dtype.kind in "biu"
    # A 4-D stand-in with an empty batch: same checks, same messages.
    probe = front.conv2d(_stand_in(backend, x, (0,) + x.shape[1:]), _stand_in(backend, w),
                         _stand_in(backend, b), stride, padding, dilation, groups,
                         padding_mode=padding_mode, method=method)
    stride = pair("stride", stride, minimum=1)
    dilation = pair("dilation", dilation, minimum=1)
    kh, kw = w.shape[2:]
    top, bottom, left, right = resolve_padding(padding, x.shape[2:], (kh, kw), stride,
                                               dilation)
    work = _work_dtype(x, w, b)
    rule = _PADDING_RULE[parse_padding_mode(padding_mode)]
    # Channels are the reduction: one chunk, summed in the in-memory order.
    x = x.astype(work).rechunk({1: -1})
    x = extend_axis(x, 2, top, bottom, rule, 0)
    x = extend_axis(x, 3, left, right, rule, 0)
    extents = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    x, out_chunks = _with_halos(x, extents, stride)
    interior = (_largest(x.chunks[0]), x.shape[1], _largest(x.chunks[2]), _largest(x.chunks[3]))
    out_hw = conv_output_hw(interior[2:], (0, 0, 0, 0), (kh, kw), stride, dilation)
    fn = partial(_conv2d_chunk, stride=stride, dilation=dilation, groups=int(groups),
                 **_chunk_settings(),
                 **_once(method, lambda: _choose.choose_conv2d_method(
                     backend, interior, tuple(w.shape), out_hw, stride, int(groups), work,
                     exact, dilation)))
    args = [x, ("n", "c", "h", "w"), _single_block(w, work), ("o", "i", "k", "l")]
    args += [_single_block(b, work), ("o",)] if b is not None else [None, None]
    out = da.blockwise(fn, ("n", "o", "h", "w"), *args, dtype=work, concatenate=True,
                       adjust_chunks={"h": out_chunks[0], "w": out_chunks[1]},
                       meta=_out_meta(backend, 4, work))
    out = out.astype(probe.dtype)
    return out[0] if unbatched else out


def conv_transpose2d(input: Any, weight: Any, bias: Any, stride: Any, padding: Any,
                     output_padding: Any, groups: Any, dilation: Any, *, method: Any) -> Any:
    """Dask version of :func:`gpuconv.conv_transpose2d`, chunked over the batch.

    Each chunk holds whole images with all their channels: a transposed
    convolution scatters every input sample over a window, so spatial chunks
    would need halos on the output side; the batch is what is large in practice.
    """
    backend = resolve_backend(input=input, weight=weight, bias=bias)
    x, w, b, unbatched = _prepare_nchw(backend, input, weight, bias)
    exact = x.dtype.kind in "biu" and w.dtype.kind in "biu"
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding,
                  groups=groups, dilation=dilation)
    probe = conv_front.conv_transpose2d(_stand_in(backend, x, (0,) + x.shape[1:]),
                                        _stand_in(backend, w), _stand_in(backend, b),
                                        method=method, **kwargs)
    work = _work_dtype(x, w, b)
    _, Cout, Ho, Wo = probe.shape
    x = x.astype(work).rechunk({1: -1, 2: -1, 3: -1})
    s, d = pair("stride", stride, minimum=1), pair("dilation", dilation, minimum=1)
    cost_x, cost_w, cost_out = conv_front.transpose_as_conv(
        (_largest(x.chunks[0]),) + tuple(x.shape[1:]), tuple(w.shape), s, d, int(groups),
        (Ho, Wo))
    fn = partial(_conv_transpose2d_chunk, kwargs=kwargs, **_chunk_settings(),
                 **_once(method, lambda: _choose.choose_conv2d_method(
                     backend, cost_x, cost_w, cost_out, s, int(groups), work, exact, d,
                     op="conv_transpose2d")))
    args = [x, ("n", "c", "h", "w"), _single_block(w, work), ("c", "g", "k", "l")]
    new_axes = {"Y": Ho, "X": Wo}
    if b is None:
        args += [None, None]
        new_axes["o"] = Cout
    else:
        args += [_single_block(b, work), ("o",)]
    out = da.blockwise(fn, ("n", "o", "Y", "X"), *args, dtype=work, concatenate=True,
                       new_axes=new_axes, meta=_out_meta(backend, 4, work))
    out = out.astype(probe.dtype)
    return out[0] if unbatched else out

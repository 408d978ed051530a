"""Convolution algorithms written once against an array namespace ``xp``.

Any backend whose ``xp`` follows NumPy's API can run these; a backend with
faster native kernels overrides the corresponding method instead.  Inputs are
already validated, contiguous and of the working dtype.

Geometry used throughout: ``correlate_planes`` computes, for every plane ``b``,

    out[b, i, j] = sum_{u, v} ext[b, i - top + u, j - left + v] * w[u, v]

where ``ext`` is the plane extended beyond its edges by the boundary rule.
Every SciPy mode of correlation and convolution is this with some
``(out_shape, origin)`` and a (flipped, conjugated) ``w``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "extend_planes",
    "pad_nchw",
    "correlate_planes_direct",
    "correlate_planes_gemm",
    "conv2d_direct",
    "conv2d_gemm",
    "conv_transpose2d_direct",
    "conv_transpose2d_gemm",
    "conv2d_weight_grad_rowpitched",
    "rowpitched_layout",
    "rowpitched_products",
    "add_bias",
    "rows_per_chunk",
]

_NUMPY_PAD_MODE = {"fill": "constant", "wrap": "wrap", "symm": "symmetric"}
_TORCH_TO_NUMPY_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                       "circular": "wrap"}


def extend_planes(xp: Any, x: Any, top: int, bottom: int, left: int, right: int,
                  boundary: str, fillvalue: Any) -> Any:
    """Extend (positive amounts) or crop (negative amounts) the last two axes."""
    H, W = x.shape[-2:]
    x = x[..., max(-top, 0):H - max(-bottom, 0), max(-left, 0):W - max(-right, 0)]
    widths = ((0, 0),) * (x.ndim - 2) + ((max(top, 0), max(bottom, 0)),
                                         (max(left, 0), max(right, 0)))
    if not any(a or b for a, b in widths):
        return x
    mode = _NUMPY_PAD_MODE[boundary]
    if mode == "constant":
        return _pad_constant(xp, x, widths[-2:], fillvalue)
    return xp.pad(x, widths, mode=mode)


def _pad_constant(xp: Any, x: Any, widths: tuple[tuple[int, int], ...], value: Any) -> Any:
    """``pad(mode="constant")`` of the last two axes: one fill and one copy (``pad``'s
    generality costs more than the copy on small planes)."""
    (t, b), (l, r) = widths
    H, W = x.shape[-2:]
    out = xp.full(x.shape[:-2] + (H + t + b, W + l + r), value, dtype=x.dtype)
    out[..., t:t + H, l:l + W] = x
    return out


def pad_nchw(xp: Any, x: Any, pads: tuple[int, int, int, int], padding_mode: str) -> Any:
    """Pad (top, bottom, left, right) with a PyTorch padding mode."""
    top, bottom, left, right = pads
    if not (top or bottom or left or right):
        return x
    if padding_mode == "zeros":
        return _pad_constant(xp, x, ((top, bottom), (left, right)), 0)
    widths = ((0, 0), (0, 0), (top, bottom), (left, right))
    return xp.pad(x, widths, mode=_TORCH_TO_NUMPY_PAD[padding_mode])


def _extended_for(xp, x, w_shape, out_shape, origin, boundary, fillvalue):
    H, W = x.shape[-2:]
    kh, kw = w_shape
    oh, ow = out_shape
    top, left = origin
    return extend_planes(xp, x, top, oh + kh - 1 - H - top, left, ow + kw - 1 - W - left,
                         boundary, fillvalue)


def correlate_planes_direct(xp: Any, x: Any, w: Any, out_shape: tuple[int, int],
                            origin: tuple[int, int], boundary: str, fillvalue: Any) -> Any:
    """Shift-and-add over the kernel taps, vectorised over planes and pixels."""
    ext = _extended_for(xp, x, w.shape, out_shape, origin, boundary, fillvalue)
    oh, ow = out_shape
    kh, kw = w.shape
    out = xp.zeros((x.shape[0], oh, ow), dtype=x.dtype)
    for u in range(kh):
        for v in range(kw):
            out += w[u, v] * ext[:, u:u + oh, v:v + ow]
    return out


def rows_per_chunk(bytes_per_row: int, limit: int, total_rows: int) -> int:
    """How many rows of ``bytes_per_row`` fit in ``limit`` (at least one)."""
    return max(1, min(total_rows, limit // max(bytes_per_row, 1)))


def correlate_planes_gemm(xp: Any, x: Any, w: Any, out_shape: tuple[int, int],
                          origin: tuple[int, int], boundary: str, fillvalue: Any,
                          scratch_bytes: int) -> Any:
    """im2col + matrix-vector product, in chunks of output rows."""
    ext = _extended_for(xp, x, w.shape, out_shape, origin, boundary, fillvalue)
    out = conv2d_gemm(xp, ext[:, None], w[None, None], (1, 1), (1, 1), 1, out_shape, scratch_bytes)
    return out[:, 0]


def _tap_slice(start: int, count: int, step: int) -> slice:
    return slice(start, start + step * (count - 1) + 1, step)


def conv2d_direct(xp: Any, xpad: Any, w: Any, stride: tuple[int, int], dilation: tuple[int, int],
                  groups: int, out_hw: tuple[int, int]) -> Any:
    """Accumulate one (C_out x C_in) matrix product per kernel tap: no column buffer.

    With fewer output positions than taps (a kernel nearly as large as the
    input) the loop runs over the positions instead, one product of the
    weights with each window: the same multiply-adds in far fewer steps.
    """
    N, C, _, _ = xpad.shape
    Cout, Cg, kh, kw = w.shape
    G = groups
    Ho, Wo = out_hw
    xg = xpad.reshape(N, G, Cg, *xpad.shape[2:])
    if Ho * Wo < kh * kw:
        wmat = w.reshape(G, Cout // G, Cg * kh * kw)
        out = xp.empty((N, G, Cout // G, Ho, Wo), dtype=xpad.dtype)
        span_h, span_w = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
        for i in range(Ho):
            r0 = i * stride[0]
            for j in range(Wo):
                c0 = j * stride[1]
                win = xg[:, :, :, r0:r0 + span_h:dilation[0], c0:c0 + span_w:dilation[1]]
                win = xp.ascontiguousarray(win).reshape(N, G, Cg * kh * kw, 1)
                out[:, :, :, i, j] = xp.matmul(wmat, win)[..., 0]
        return out.reshape(N, Cout, Ho, Wo)
    wg = w.reshape(G, Cout // G, Cg, kh, kw)
    out = xp.zeros((N, G, Cout // G, Ho * Wo), dtype=xpad.dtype)
    for u in range(kh):
        rows = _tap_slice(u * dilation[0], Ho, stride[0])
        for v in range(kw):
            cols = _tap_slice(v * dilation[1], Wo, stride[1])
            tap = xg[:, :, :, rows, cols].reshape(N, G, Cg, Ho * Wo)
            out += xp.matmul(wg[:, :, :, u, v], tap)
    return out.reshape(N, Cout, Ho, Wo)


def conv2d_gemm(xp: Any, xpad: Any, w: Any, stride: tuple[int, int], dilation: tuple[int, int],
                groups: int, out_hw: tuple[int, int], scratch_bytes: int) -> Any:
    """im2col + one matrix product per chunk; the column buffer stays under ``scratch_bytes``.

    Columns are laid out (C_in*kh*kw, rows*W_out) so that building them copies
    contiguous runs of the input, and chunks are whole output rows of one image.
    """
    N, C, _, _ = xpad.shape
    Cout, Cg, kh, kw = w.shape
    G = groups
    Ho, Wo = out_hw
    itemsize = xpad.dtype.itemsize
    xg = xpad.reshape(N, G, Cg, *xpad.shape[2:])
    wmat = w.reshape(G, Cout // G, Cg * kh * kw)
    out = xp.empty((N, G, Cout // G, Ho, Wo), dtype=xpad.dtype)
    row_bytes = C * kh * kw * Wo * itemsize
    image_bytes = row_bytes * Ho
    if image_bytes <= scratch_bytes:
        images, rows_step = max(1, min(N, scratch_bytes // max(image_bytes, 1))), Ho
    else:
        images, rows_step = 1, rows_per_chunk(row_bytes, scratch_bytes, Ho)
    for n0 in range(0, N, images):
        n1 = min(N, n0 + images)
        for r0 in range(0, Ho, rows_step):
            r1 = min(Ho, r0 + rows_step)
            nr = r1 - r0
            cols = xp.empty((G, Cg, kh, kw, n1 - n0, nr, Wo), dtype=xpad.dtype)
            for u in range(kh):
                rows = _tap_slice(u * dilation[0] + r0 * stride[0], nr, stride[0])
                for v in range(kw):
                    cs = _tap_slice(v * dilation[1], Wo, stride[1])
                    cols[:, :, u, v] = xp.moveaxis(xg[n0:n1, :, :, rows, cs], 0, 2)
            prod = xp.matmul(wmat, cols.reshape(G, Cg * kh * kw, (n1 - n0) * nr * Wo))
            out[n0:n1, :, :, r0:r1] = xp.moveaxis(
                prod.reshape(G, Cout // G, n1 - n0, nr, Wo), 2, 0)
    return out.reshape(N, Cout, Ho, Wo)


def _transpose_canvas(xp, x, w, stride, padding, dilation, out_hw):
    N, Cin, H, W = x.shape
    _, Coutg, kh, kw = w.shape
    full_h = max((H - 1) * stride[0] + dilation[0] * (kh - 1) + 1, padding[0] + out_hw[0])
    full_w = max((W - 1) * stride[1] + dilation[1] * (kw - 1) + 1, padding[1] + out_hw[1])
    return full_h, full_w


def conv_transpose2d_direct(xp: Any, x: Any, w: Any, stride: tuple[int, int],
                            padding: tuple[int, int], dilation: tuple[int, int], groups: int,
                            out_hw: tuple[int, int]) -> Any:
    """Scatter-add one matrix product per kernel tap into a strided view of the output."""
    N, Cin, H, W = x.shape
    _, Coutg, kh, kw = w.shape
    G = groups
    full_h, full_w = _transpose_canvas(xp, x, w, stride, padding, dilation, out_hw)
    canvas = xp.zeros((N, G, Coutg, full_h, full_w), dtype=x.dtype)
    xg = x.reshape(N, G, Cin // G, H * W)
    # (G, Coutg, Cing, kh, kw): the transpose of each group's weight matrix.
    wt = xp.moveaxis(w.reshape(G, Cin // G, Coutg, kh, kw), 1, 2)
    for u in range(kh):
        rows = _tap_slice(u * dilation[0], H, stride[0])
        for v in range(kw):
            cols = _tap_slice(v * dilation[1], W, stride[1])
            canvas[:, :, :, rows, cols] += xp.matmul(wt[:, :, :, u, v], xg).reshape(
                N, G, Coutg, H, W)
    Ho, Wo = out_hw
    out = canvas[:, :, :, padding[0]:padding[0] + Ho, padding[1]:padding[1] + Wo]
    return xp.ascontiguousarray(out.reshape(N, G * Coutg, Ho, Wo))


def conv_transpose2d_gemm(xp: Any, x: Any, w: Any, stride: tuple[int, int],
                          padding: tuple[int, int], dilation: tuple[int, int], groups: int,
                          out_hw: tuple[int, int], scratch_bytes: int) -> Any:
    """One matrix product into columns per chunk of images, then col2im scatter-add."""
    N, Cin, H, W = x.shape
    _, Coutg, kh, kw = w.shape
    G = groups
    Cing = Cin // G
    full_h, full_w = _transpose_canvas(xp, x, w, stride, padding, dilation, out_hw)
    canvas = xp.zeros((N, G, Coutg, full_h, full_w), dtype=x.dtype)
    wt = xp.swapaxes(w.reshape(G, Cing, Coutg * kh * kw), 1, 2)  # (G, Coutg*kh*kw, Cing)
    bytes_per_image = G * Coutg * kh * kw * H * W * x.dtype.itemsize
    images = rows_per_chunk(bytes_per_image, scratch_bytes, N)
    for n0 in range(0, N, images):
        n1 = min(N, n0 + images)
        xs = xp.moveaxis(x[n0:n1].reshape(n1 - n0, G, Cing, H * W), 0, 2)  # (G, Cing, n, HW)
        cols = xp.matmul(wt, xs.reshape(G, Cing, (n1 - n0) * H * W))
        cols = cols.reshape(G, Coutg, kh, kw, n1 - n0, H, W)
        for u in range(kh):
            rows = _tap_slice(u * dilation[0], H, stride[0])
            for v in range(kw):
                cs = _tap_slice(v * dilation[1], W, stride[1])
                canvas[n0:n1, :, :, rows, cs] += xp.moveaxis(cols[:, :, u, v], 2, 0)
    Ho, Wo = out_hw
    out = canvas[:, :, :, padding[0]:padding[0] + Ho, padding[1]:padding[1] + Wo]
    return xp.ascontiguousarray(out.reshape(N, G * Coutg, Ho, Wo))


def conv2d_weight_grad_rowpitched(xp: Any, xpad: Any, grad_out: Any,
                                  kernel_hw: tuple[int, int], stride: tuple[int, int],
                                  dilation: tuple[int, int], groups: int,
                                  scratch_bytes: int) -> Any:
    """The weight gradient of ``conv2d`` as ``kh * kw`` matrix products over row-pitched
    images; ``xpad`` is the padded input cropped to the rows and columns the taps read.

    Lay the padded input out channel-major, ``(C, N*Hp*Wp)``, and scatter the
    output gradient onto a zero canvas of the same pitch at the pixels its
    taps start from, ``(O, N*Hp*Wp)``.  Tap ``(u, v)`` then reads the input
    shifted by ``u*dh*Wp + v*dw`` along that flat axis, so
    ``dw[:, :, u, v] = canvas @ x_cm[:, shift:shift + P].T``: one GEMM per tap
    on a strided view, no column buffer.  Positions where a window would
    straddle two rows or images meet zeros on the canvas.  This is the
    correlation ``conv2d`` computes for the swapped arrays, looped over its
    (few) output positions instead of its (many) kernel taps.
    """
    x_cm, canvas = rowpitched_layout(xp, xpad, grad_out, kernel_hw, stride, dilation, groups)
    out = rowpitched_products(xp, x_cm, canvas, kernel_hw, dilation, xpad.shape[3], 0,
                              canvas.shape[2], scratch_bytes)
    return out.reshape(grad_out.shape[1], xpad.shape[1] // groups, *kernel_hw)


def conv2d_weight_grad_taps(xp: Any, xpad: Any, grad_out: Any, kernel_hw: tuple[int, int],
                            stride: tuple[int, int], dilation: tuple[int, int], groups: int,
                            scratch_bytes: int) -> Any:
    """The weight gradient of ``conv2d`` as one matrix product per tap, at any stride.

    ``dw[:, :, u, v] = dY @ X_uv.T``, where ``dY`` is the output gradient
    ``(O/G, N*Ho*Wo)`` per group and ``X_uv`` the strided view of the padded
    input that tap ``(u, v)`` reads, ``(C/G, N*Ho*Wo)``, copied one chunk of
    images at a time: exactly the multiply-adds of the gradient.  (The
    row-pitched products cost the same at any stride, and ``conv2d`` of the
    swapped arrays has a kernel as large as the output gradient; both lose to
    this past small strides.)
    """
    N, C, _, _ = xpad.shape
    _, O, Ho, Wo = grad_out.shape
    kh, kw = kernel_hw
    G, Cg, Og = groups, C // groups, O // groups
    P = Ho * Wo
    per_image = (C + O) * P * xpad.dtype.itemsize
    images = max(1, min(N, scratch_bytes // max(per_image, 1)))
    xg = xpad.reshape(N, G, Cg, *xpad.shape[2:])
    out = xp.zeros((G, Og, Cg, kh, kw), dtype=xpad.dtype)
    for n0 in range(0, N, images):
        n1 = min(N, n0 + images)
        nb = n1 - n0
        # (G, O/G, nb*P): the chunk's output gradient, reduction axis last.
        dy = xp.ascontiguousarray(
            grad_out[n0:n1].reshape(nb, G, Og, P).transpose(1, 2, 0, 3)).reshape(G, Og, nb * P)
        for u in range(kh):
            rows = _tap_slice(u * dilation[0], Ho, stride[0])
            for v in range(kw):
                cols = _tap_slice(v * dilation[1], Wo, stride[1])
                tap = xp.ascontiguousarray(
                    xg[n0:n1, :, :, rows, cols].transpose(1, 2, 0, 3, 4)).reshape(G, Cg, nb * P)
                out[:, :, :, u, v] += xp.matmul(dy, xp.swapaxes(tap, 1, 2))
    return out.reshape(O, Cg, kh, kw)


def rowpitched_layout(xp: Any, xpad: Any, grad_out: Any, kernel_hw: tuple[int, int],
                      stride: tuple[int, int], dilation: tuple[int, int], groups: int,
                      ) -> tuple[Any, Any]:
    """``(x_cm, canvas)`` of :func:`conv2d_weight_grad_rowpitched`: the channel-major input
    ``(G, C/G, N*Hp*Wp)`` and the output gradient on its pitch, ``(G, O/G, P)``, where
    ``P`` is the flat length every tap's shifted view covers."""
    N, C, Hp, Wp = xpad.shape
    _, O, Ho, Wo = grad_out.shape
    kh, kw = kernel_hw
    G, Cg, Og = groups, C // groups, O // groups
    flat = N * Hp * Wp
    x_cm = xp.ascontiguousarray(xpad.transpose(1, 0, 2, 3)).reshape(G, Cg, flat)
    canvas = xp.zeros((O, N, Hp, Wp), dtype=xpad.dtype)
    canvas[:, :, :stride[0] * (Ho - 1) + 1:stride[0], :stride[1] * (Wo - 1) + 1:stride[1]] = \
        grad_out.transpose(1, 0, 2, 3)
    reach = dilation[0] * (kh - 1) * Wp + dilation[1] * (kw - 1)
    return x_cm, canvas.reshape(G, Og, flat)[:, :, :flat - reach]


def rowpitched_products(xp: Any, x_cm: Any, canvas: Any, kernel_hw: tuple[int, int],
                        dilation: tuple[int, int], pitch: int, p0: int, p1: int,
                        scratch_bytes: int) -> Any:
    """The weight gradient's share of flat positions ``[p0, p1)`` of
    :func:`rowpitched_layout`'s arrays, shape ``(G, O/G, C/G, kh, kw)`` (shares add up)."""
    G, Cg, _ = x_cm.shape
    Og = canvas.shape[1]
    kh, kw = kernel_hw
    shifts = [(u, v, u * dilation[0] * pitch + v * dilation[1])
              for u in range(kh) for v in range(kw)]
    part = canvas[:, :, p0:p1]
    n = p1 - p0
    if Cg < Og and Cg * kh * kw * n * x_cm.dtype.itemsize <= scratch_bytes:
        # Few input channels make each tap's product skinny and re-read the
        # whole canvas; stacking the shifted views into one (small) column
        # buffer reads it once (3 -> 16 channels, 5x5: 2.8x faster measured).
        cols = xp.empty((G, Cg, kh, kw, n), dtype=x_cm.dtype)
        for u, v, shift in shifts:
            cols[:, :, u, v] = x_cm[:, :, p0 + shift:p1 + shift]
        out = xp.matmul(part, cols.reshape(G, Cg * kh * kw, n).transpose(0, 2, 1))
        return out.reshape(G, Og, Cg, kh, kw)
    out = xp.empty((G, Og, Cg, kh, kw), dtype=x_cm.dtype)
    for u, v, shift in shifts:
        out[:, :, :, u, v] = xp.matmul(part, x_cm[:, :, p0 + shift:p1 + shift].transpose(0, 2, 1))
    return out


def add_bias(out: Any, bias: Any) -> Any:
    """``out`` (N, C_out, H, W) plus ``bias`` (C_out,) per channel, in place.

    ``None`` adds nothing.
    """
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
    return out

// Column buffers for convolution as a matrix product (cuBLAS does the product).
//
// im2col copies, for a chunk of images and a band of output rows, every
// kernel tap's input pixel into a column buffer
//
//   cols[img, c, u, v, p] = ext[img, c, (r0 + p / Wo) * sh - pad_top + u * dh,
//                                       (p % Wo) * sw - pad_left + v * dw]
//
// where ext is the input extended by the padding mode (gc_source_index's
// codes; the constant is fill_re + i fill_im), so no padded copy of the input
// is ever made.  The element (img, c, u, v, p) lives at
// img * image_stride + ((c * kh + u) * kw + v) * tap_stride + p: with
// tap_stride = rows * Wo and image_stride = C * kh * kw * rows * Wo that is
// (n, C*kh*kw, rows*Wo), the layout whose product with the (G, C_out/G,
// C/G*kh*kw) weight matrix is NCHW output directly; with image_stride =
// rows * Wo and tap_stride = n * rows * Wo it is (C*kh*kw, n*rows*Wo), the
// layout the weight gradient multiplies with.
//
// col2im is the adjoint gather for the transposed convolution: the product of
// the transposed weights with the input gives, per input pixel, every
// output pixel's contribution; each output pixel sums the contributions that
// land on it (a fixed order, no atomics, so results are reproducible) and adds
// its channel's bias.
//
// Both kernels: blockIdx.x walks pixels (GC_COL_THREADS consecutive pixels a
// block, so loads and stores coalesce at stride 1), blockIdx.y channels and
// blockIdx.z images, the last two as grid-stride loops so any size fits the
// grid limits.  Pixel indices within a band are int (the host keeps a band
// under 2^31 pixels); every offset into a buffer is 64-bit.

#define GC_COL_THREADS 128

template <typename T>
__global__ void __launch_bounds__(GC_COL_THREADS)
im2col(const T* __restrict__ x, T* __restrict__ cols,
       int n, int C, int H, int W, int kh, int kw, int Wo, int r0, int rows,
       int sh, int sw, int pad_top, int pad_left, int dh, int dw, int mode,
       double fill_re, double fill_im, long long image_stride, long long tap_stride) {
    typedef gc_traits<T> tr;
    const int P = rows * Wo;
    const int p = blockIdx.x * GC_COL_THREADS + threadIdx.x;
    if (p >= P) return;
    const int oi = p / Wo;
    const int oj = p - oi * Wo;
#ifdef GPUCONV_PLANT_BAND_BUG
    const int top = r0 + oi * sh - pad_top;  // planted for the tests: band start unscaled
#else
    const int top = (r0 + oi) * sh - pad_top;
#endif
    const int left = oj * sw - pad_left;
    const T fill = tr::store(tr::from_parts(fill_re, fill_im));
    const long long taps = (long long)kh * kw;

    for (int img = blockIdx.z; img < n; img += gridDim.z) {
        for (int c = blockIdx.y; c < C; c += gridDim.y) {
            const T* xc = x + ((long long)img * C + c) * H * W;
            T* col = cols + img * image_stride + c * taps * tap_stride + p;
            for (int u = 0; u < kh; ++u) {
                const int ii = gc_source_index(top + u * dh, H, mode);
                const long long row = (long long)ii * W;
                for (int v = 0; v < kw; ++v) {
                    const int jj = gc_source_index(left + v * dw, W, mode);
#ifdef GPUCONV_PLANT_OVERREAD
                    // Planted for the sanitizer test: the last row reads one row past it.
                    *col = (ii < 0 || jj < 0) ? fill : xc[row + jj + (ii == H - 1 ? W : 0)];
#else
                    *col = (ii < 0 || jj < 0) ? fill : xc[row + jj];
#endif
                    col += tap_stride;
                }
            }
        }
    }
}

// out[img, co, o0 + p / Wo, p % Wo] = (accumulate ? itself : bias[co] or 0)
//     + sum over taps (u, v) and input pixels (ii, jj) of input rows
//       [i0, i0 + irows) with ii * sh + u * dh == oi + pad_top and
//       jj * sw + v * dw == oj + pad_left of cols[img, co, u, v, ii - i0, jj]
//
// cols is (n, C_out, kh, kw, irows, W) for input rows [i0, i0 + irows); a
// band of output rows [o0, o0 + orows) is written.  The host calls it once
// over all output rows (accumulate 0) or, when one image's columns exceed the
// scratch bound, once per band of input rows, the first over every output row
// and the others (accumulate 1) over the rows they reach.
template <typename T>
__global__ void __launch_bounds__(GC_COL_THREADS)
col2im(const T* __restrict__ cols, const T* __restrict__ bias, T* __restrict__ out,
       int n, int Cout, int W, int kh, int kw, int Ho, int Wo, int o0, int orows,
       int i0, int irows, int sh, int sw, int pad_top, int pad_left, int dh, int dw,
       int accumulate) {
    typedef gc_traits<T> tr;
    typedef typename tr::acc acc_t;
    const int P = orows * Wo;
    const int p = blockIdx.x * GC_COL_THREADS + threadIdx.x;
    if (p >= P) return;
    const int pi = p / Wo;
    const int oj = p - pi * Wo;
    const int ti0 = o0 + pi + pad_top;  // row of the uncropped output canvas
    const int tj0 = oj + pad_left;
    const long long plane_in = (long long)irows * W;
    const long long taps = (long long)kh * kw;

    for (int img = blockIdx.z; img < n; img += gridDim.z) {
        for (int co = blockIdx.y; co < Cout; co += gridDim.y) {
            const long long oc = (long long)img * Cout + co;
            T* o = out + oc * Ho * Wo + (long long)(o0 + pi) * Wo + oj;
            acc_t acc = accumulate ? tr::load(*o) : (bias ? tr::load(bias[co]) : tr::zero());
            const T* cc = cols + oc * taps * plane_in;
            for (int u = 0; u < kh; ++u) {
                const int ti = ti0 - u * dh;
                if (ti < 0) break;  // ti falls with u
                if (ti % sh) continue;
                const int ii = ti / sh - i0;
                if (ii < 0 || ii >= irows) continue;
                const T* crow = cc + (long long)u * kw * plane_in + (long long)ii * W;
                for (int v = 0; v < kw; ++v) {
                    const int tj = tj0 - v * dw;
                    if (tj < 0) break;
                    if (tj % sw) continue;
                    const int jj = tj / sw;
                    if (jj >= W) continue;
                    acc = tr::add(acc, tr::load(crow[v * plane_in + jj]));
                }
            }
            *o = tr::store(acc);
        }
    }
}

// NCHW convolution layers (PyTorch semantics, no bias): conv2d with stride,
// dilation, groups and padding modes, and its transpose.
//
// One thread computes one output pixel for GC_COB output channels of one
// group, so every input value it loads feeds GC_COB multiply-adds; a block
// is GC_CONV_THREADS consecutive pixels (coalesced loads and stores at
// stride 1).  blockIdx.y walks (group, channel block), blockIdx.z images; both
// are grid-stride loops, so any size fits the grid limits.  Padding is
// resolved while loading (0 zeros, 1 reflect, 2 replicate, 3 circular, with
// numpy.pad semantics), so no padded copy of the input is made.  There is no
// shared memory and no barrier: a thread past the last pixel simply returns.

#define GC_CONV_THREADS 128
#define GC_COB 8

// Input index for padded-coordinate p of an axis of length n, or -1 for a zero.
__device__ __forceinline__ int gc_pad_index(int p, int n, int mode) {
    if (p >= 0 && p < n) return p;
    if (mode == 1) {
        // Mirrored without repeating the edge: period 2n - 2.
        if (n == 1) return 0;
        const int period = 2 * n - 2;
        int m = p % period;
        if (m < 0) m += period;
        return m < n ? m : period - m;
    }
    if (mode == 2) return p < 0 ? 0 : n - 1;
    if (mode == 3) {
        int m = p % n;
        return m < 0 ? m + n : m;
    }
    return -1;
}

template <typename T>
__global__ void __launch_bounds__(GC_CONV_THREADS)
conv2d_nchw(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ out,
            int N, int C, int H, int W, int Cout, int kh, int kw, int Ho, int Wo,
            int sh, int sw, int pad_top, int pad_left, int dh, int dw, int groups,
            int pad_mode) {
    typedef gc_traits<T> tr;
    typedef typename tr::acc acc_t;
    const int Cg = C / groups;
    const int Coutg = Cout / groups;
    const int cblocks = (Coutg + GC_COB - 1) / GC_COB;
    const int P = Ho * Wo;
    const int p = blockIdx.x * GC_CONV_THREADS + threadIdx.x;
    if (p >= P) return;
    const int oi = p / Wo;
    const int oj = p - oi * Wo;
    const int taps = kh * kw;

    for (int n = blockIdx.z; n < N; n += gridDim.z) {
        for (int yb = blockIdx.y; yb < groups * cblocks; yb += gridDim.y) {
            const int g = yb / cblocks;
            const int co0 = (yb - g * cblocks) * GC_COB;
            const int nco = min(GC_COB, Coutg - co0);
            acc_t acc[GC_COB];
#pragma unroll
            for (int k = 0; k < GC_COB; ++k) acc[k] = tr::zero();
            const T* wg = w + (size_t)(g * Coutg + co0) * Cg * taps;
            for (int ci = 0; ci < Cg; ++ci) {
                const T* xc = x + ((size_t)n * C + (size_t)g * Cg + ci) * H * W;
                const T* wc = wg + (size_t)ci * taps;
                for (int u = 0; u < kh; ++u) {
                    const int ii = gc_pad_index(oi * sh - pad_top + u * dh, H, pad_mode);
                    if (ii < 0) continue;
                    for (int v = 0; v < kw; ++v) {
                        const int jj = gc_pad_index(oj * sw - pad_left + v * dw, W, pad_mode);
                        if (jj < 0) continue;
                        const acc_t xv = tr::load(xc[(size_t)ii * W + jj]);
#pragma unroll
                        for (int k = 0; k < GC_COB; ++k) {
                            if (k < nco) {
                                acc[k] = tr::mac(acc[k], xv,
                                                 tr::load(wc[(size_t)k * Cg * taps + u * kw + v]));
                            }
                        }
                    }
                }
            }
            T* o = out + ((size_t)n * Cout + (size_t)g * Coutg + co0) * P + p;
#pragma unroll
            for (int k = 0; k < GC_COB; ++k) {
                if (k < nco) o[(size_t)k * P] = tr::store(acc[k]);
            }
        }
    }
}

// Transposed convolution as a gather: output pixel (oi, oj) of the uncropped
// canvas is oi + pad_top; input (ii, jj) with tap (u, v) lands there when
// ii * sh + u * dh == oi + pad_top.  Weight layout (C_in, C_out/groups, kh, kw).
template <typename T>
__global__ void __launch_bounds__(GC_CONV_THREADS)
conv_transpose2d_nchw(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ out,
                      int N, int C, int H, int W, int Cout, int kh, int kw, int Ho, int Wo,
                      int sh, int sw, int pad_top, int pad_left, int dh, int dw, int groups) {
    typedef gc_traits<T> tr;
    typedef typename tr::acc acc_t;
    const int Cg = C / groups;
    const int Coutg = Cout / groups;
    const int cblocks = (Coutg + GC_COB - 1) / GC_COB;
    const int P = Ho * Wo;
    const int p = blockIdx.x * GC_CONV_THREADS + threadIdx.x;
    if (p >= P) return;
    const int oi = p / Wo + pad_top;
    const int oj = p - (p / Wo) * Wo + pad_left;
    const int taps = kh * kw;

    for (int n = blockIdx.z; n < N; n += gridDim.z) {
        for (int yb = blockIdx.y; yb < groups * cblocks; yb += gridDim.y) {
            const int g = yb / cblocks;
            const int co0 = (yb - g * cblocks) * GC_COB;
            const int nco = min(GC_COB, Coutg - co0);
            acc_t acc[GC_COB];
#pragma unroll
            for (int k = 0; k < GC_COB; ++k) acc[k] = tr::zero();
            for (int u = 0; u < kh; ++u) {
                const int ti = oi - u * dh;
                if (ti < 0 || ti % sh) continue;
                const int ii = ti / sh;
                if (ii >= H) continue;
                for (int v = 0; v < kw; ++v) {
                    const int tj = oj - v * dw;
                    if (tj < 0 || tj % sw) continue;
                    const int jj = tj / sw;
                    if (jj >= W) continue;
                    for (int ci = 0; ci < Cg; ++ci) {
                        const acc_t xv = tr::load(
                            x[(((size_t)n * C + (size_t)g * Cg + ci) * H + ii) * W + jj]);
                        const T* wc = w + (((size_t)(g * Cg + ci) * Coutg + co0) * taps
                                           + u * kw + v);
#pragma unroll
                        for (int k = 0; k < GC_COB; ++k) {
                            if (k < nco) {
                                acc[k] = tr::mac(acc[k], xv, tr::load(wc[(size_t)k * taps]));
                            }
                        }
                    }
                }
            }
            T* o = out + ((size_t)n * Cout + (size_t)g * Coutg + co0) * P + p;
#pragma unroll
            for (int k = 0; k < GC_COB; ++k) {
                if (k < nco) o[(size_t)k * P] = tr::store(acc[k]);
            }
        }
    }
}

// Batched 2-D cross-correlation of planes with one kernel.
//
//   out[b, i, j] = sum_{u, v} ext[b, i - top + u, j - left + v] * w[u, v]
//
// where ext is the plane extended by the boundary rule (gc_source_index's
// codes: 0 fill, 3 wrap, 4 symm, i.e. numpy.pad 'constant'/'wrap'/'symmetric',
// any number of periods away).  Every SciPy mode is one (out_shape, origin) pair; the
// front door has already flipped or conjugated w.
//
// One block computes a GC_TH x GC_TW tile of one plane: blockDim is
// (GC_TW, GC_BY) and each thread owns GC_RPT outputs of one column.  The
// kernel is walked in chunks of at most GC_KC x GC_KC taps; for each chunk the
// block stages the weights and the input tile plus its halo in shared memory,
// resolving the boundary while loading, so no padded copy of the input is
// ever made.  Planes beyond gridDim.z and tile rows beyond gridDim.y are
// covered by grid-stride loops, so any batch and height fits the grid limits.

#define GC_TW 32
#define GC_BY 8
#define GC_RPT 4
#define GC_TH (GC_BY * GC_RPT)
#define GC_KC 16
#define GC_THREADS (GC_TW * GC_BY)
// Rows and columns of the staged tile (halo included) one thread loads.
#define GC_LR ((GC_TH + GC_KC - 1 + GC_BY - 1) / GC_BY)
#define GC_LC ((GC_TW + GC_KC - 1 + GC_TW - 1) / GC_TW)

template <typename T>
__global__ void __launch_bounds__(GC_THREADS)
correlate_planes(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ out,
                 int B, int H, int W, int kh, int kw, int oh, int ow, int top, int left,
                 int boundary, double fill_re, double fill_im) {
    typedef gc_traits<T> tr;
    typedef typename tr::acc acc_t;
    __shared__ acc_t tile[GC_TH + GC_KC - 1][GC_TW + GC_KC - 1];
    __shared__ acc_t wchunk[GC_KC * GC_KC];

    const acc_t fill = tr::from_parts(fill_re, fill_im);
    const int tx = threadIdx.x;
    const int ty = threadIdx.y;
    const int tid = ty * GC_TW + tx;
    // Not (oh + GC_TH - 1) / GC_TH: that overflows for oh near 2^31.
    const int tiles_y = oh / GC_TH + (oh % GC_TH != 0);
    const int j0 = blockIdx.x * GC_TW;

    for (int b = blockIdx.z; b < B; b += gridDim.z) {
        const T* xb = x + (size_t)b * H * W;
        T* ob = out + (size_t)b * oh * ow;
        for (int trow = blockIdx.y; trow < tiles_y; trow += gridDim.y) {
            const int i0 = trow * GC_TH;
            acc_t acc[GC_RPT];
#pragma unroll
            for (int k = 0; k < GC_RPT; ++k) acc[k] = tr::zero();

            for (int cu = 0; cu < kh; cu += GC_KC) {
                const int ch = min(GC_KC, kh - cu);
                for (int cv = 0; cv < kw; cv += GC_KC) {
                    const int cw = min(GC_KC, kw - cv);
                    // The previous chunk (or tile) must be fully read before it is overwritten.
                    __syncthreads();
                    for (int e = tid; e < ch * cw; e += GC_THREADS) {
                        wchunk[e] = tr::load(w[(size_t)(cu + e / cw) * kw + cv + e % cw]);
                    }
#ifdef GPUCONV_PLANT_HALO_BUG
                    const int rows = GC_TH + ch - 2;  // planted for the emulator's self-test
#else
                    const int rows = GC_TH + ch - 1;
#endif
                    const int cols = GC_TW + cw - 1;
#ifdef GC_UNSTAGED_LOADS
                    // Variant kept for measurement: fewer registers (higher
                    // occupancy), but about one global load in flight per thread.
                    for (int r = ty; r < rows; r += GC_BY) {
                        const int gi = gc_source_index(i0 - top + cu + r, H, boundary);
                        for (int c = tx; c < cols; c += GC_TW) {
                            const int gj = gc_source_index(j0 - left + cv + c, W, boundary);
                            tile[r][c] = (gi < 0 || gj < 0)
                                ? fill : tr::load(xb[(size_t)gi * W + gj]);
                        }
                    }
#else
                    // All of a thread's loads are issued before any is stored, so
                    // each thread keeps up to GC_LR * GC_LC global loads in flight.
                    acc_t staged[GC_LR][GC_LC];
#pragma unroll
                    for (int rr = 0; rr < GC_LR; ++rr) {
                        const int r = ty + rr * GC_BY;
                        const int gi = gc_source_index(i0 - top + cu + r, H, boundary);
#pragma unroll
                        for (int cc = 0; cc < GC_LC; ++cc) {
                            const int c = tx + cc * GC_TW;
                            const int gj = gc_source_index(j0 - left + cv + c, W, boundary);
                            staged[rr][cc] = (r < rows && c < cols && gi >= 0 && gj >= 0)
                                ? tr::load(xb[(size_t)gi * W + gj]) : fill;
                        }
                    }
#pragma unroll
                    for (int rr = 0; rr < GC_LR; ++rr) {
                        const int r = ty + rr * GC_BY;
#pragma unroll
                        for (int cc = 0; cc < GC_LC; ++cc) {
                            const int c = tx + cc * GC_TW;
                            if (r < rows && c < cols) tile[r][c] = staged[rr][cc];
                        }
                    }
#endif
#ifndef GPUCONV_PLANT_MISSING_BARRIER
                    __syncthreads();
#endif
                    for (int u = 0; u < ch; ++u) {
                        for (int v = 0; v < cw; ++v) {
                            const acc_t wv = wchunk[u * cw + v];
#pragma unroll
                            for (int k = 0; k < GC_RPT; ++k) {
                                acc[k] = tr::mac(acc[k], tile[ty + k * GC_BY + u][tx + v], wv);
                            }
                        }
                    }
                }
            }
            const int j = j0 + tx;
#pragma unroll
            for (int k = 0; k < GC_RPT; ++k) {
                const int i = i0 + ty + k * GC_BY;
                if (i < oh && j < ow) ob[(size_t)i * ow + j] = tr::store(acc[k]);
            }
        }
    }
}

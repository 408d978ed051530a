// NCHW convolution layers (PyTorch semantics, no bias) as implicit GEMMs:
// conv2d with stride, dilation, groups and padding modes, and its transpose.
//
// Per group, conv2d is the matrix product
//
//   out[m, co] = sum_k A[m, k] * B[k, co],   m = (n, oi, oj),  k = (c, u, v),
//
// with A[m, k] the input value under tap (u, v) of channel c for output pixel
// m (never materialised) and B the weights.  A block computes a GC_IG_BM x
// GC_IG_BN tile of out (pixels x output channels); each of its GC_IG_THREADS
// threads a 4 x 4 register micro-tile.  The reduction walks K in slices of BK
// (16 for float and half, 8 for wider types) staged in shared memory,
// double-buffered: the
// global loads of slice s + 1 are in flight while slice s is multiplied, and
// one barrier per slice suffices.  Per slice a thread issues 2 * BK
// vector shared loads for 16 * BK multiply-adds.
//
// The tap table.  For each chunk of up to GC_IG_TAB values of k the block
// first decodes k -> (c, u, v) once (the only divisions) into a shared table
// of (channel, row offset du, column offset dv, du * W + dv) and of weight
// offsets, so loading a slice needs only adds and compares: a thread loads
// the same output pixel of A at every slice, with base coordinates (ih0, iw0)
// computed once, and element (ih0 + du, iw0 + dv) of channel c.  Zero padding
// is a predicate on that position; reflect / replicate / circular (the
// `_padded` kernel) map it into the plane while loading, never in the
// multiply-add loop.  64-bit address math happens once per chunk (its first
// channel); offsets within a chunk are 32-bit, and the launch code sizes
// chunks so that they fit.  Pixel and output indices are 64-bit.
//
// conv_transpose2d is the same machinery: output pixels of one phase
// (oi mod sh, oj mod sw) receive exactly the taps u with
// u * dh = oi + pad_top (mod sh), from input row (oi + pad_top - u * dh) / sh,
// so each phase is a stride-1 correlation with a sub-kernel and its own tap
// table; blockIdx.y walks (group, channel tile, phase) and no lane computes a
// product that is zero by stride.
//
// Split-K: when the grid is too small for the device, gridDim.z splits the
// reduction; split z writes its partial sums (accumulator type) to slice z
// of a workspace and conv2d_splitk_reduce adds the slices in a fixed order,
// so results do not depend on scheduling.
//
// blockIdx.x walks pixel tiles (N * Ho * Wo pixels, 64-bit), blockIdx.y is a
// grid-stride loop over (group, channel tile[, phase]) so any count fits.

#define GC_IG_BM 64
#define GC_IG_BN 64
#define GC_IG_THREADS 256
#define GC_IG_TAB 256
// Coordinate of the null tap and of pixels past the end: far outside every plane.
#define GC_IG_FAR (-(1 << 29))

// Per element type: the reduction slice BK staged per step, and the blocks
// per SM the register budget is sized for (__launch_bounds__).  Float and
// half: 2 blocks (at most 128 registers; asking for 3 makes ptxas 13 spill).
// Wider types: 1, and BK = 8, which keeps their shared memory under the 48
// KiB of a static allocation and their registers (4 x 4 accumulators of 2 or
// 4 words each, plus the prefetched slice) free of spills.
template <typename T> struct gc_ig_cfg { enum { BK = 16, MIN_BLOCKS = 2 }; };
template <> struct gc_ig_cfg<double> { enum { BK = 8, MIN_BLOCKS = 1 }; };
template <> struct gc_ig_cfg<gc_complex64> { enum { BK = 8, MIN_BLOCKS = 1 }; };
template <> struct gc_ig_cfg<gc_complex128> { enum { BK = 8, MIN_BLOCKS = 1 }; };

// Four accumulators, aligned so that four floats are one 128-bit shared access.
template <typename A>
struct alignas(16) gc_vec4 { A v[4]; };

// One value of k: input channel within the group, tap offsets, du * W + dv.
struct alignas(16) gc_tap { int c, du, dv, off; };

// Padded coordinate p of an axis of length n -> index into the plane, for
// reflect / replicate / circular padding no wider than one period (the
// launch code checks): below 0 it is a * p + lo, at n or above a * p + hi.
struct gc_fold { int a, lo, hi; };

__device__ __forceinline__ gc_fold gc_make_fold(int mode, int n) {
    gc_fold f;
    if (mode == 1) { f.a = -1; f.lo = 0; f.hi = 2 * n - 2; }   // reflect (edge not repeated)
    else if (mode == 2) { f.a = 0; f.lo = 0; f.hi = n - 1; }   // replicate
    else { f.a = 1; f.lo = n; f.hi = -n; }                     // circular
    return f;
}

__device__ __forceinline__ int gc_apply_fold(int p, int n, gc_fold f) {
    const int below = f.a * p + f.lo;
    const int above = f.a * p + f.hi;
    return p < 0 ? below : (p >= n ? above : p);
}

// The pointer itself, opaque to the optimiser: otherwise it keeps base and
// 64-bit offset apart and re-adds them (four instructions) on every load.
template <typename P>
__device__ __forceinline__ P* gc_pointer(P* p) {
#ifndef GPUCONV_EMULATOR
    asm("" : "+l"(p));
    __builtin_assume(__isGlobal(p));
#endif
    return p;
}

// Read-only loads through the non-coherent cache path (what __restrict__ const
// gives a pointer the optimiser can see through; gc_pointer's cannot).
template <typename T> __device__ __forceinline__ T gc_ldg(const T* p) { return *p; }
#ifndef GPUCONV_EMULATOR
template <> __device__ __forceinline__ float gc_ldg(const float* p) { return __ldg(p); }
template <> __device__ __forceinline__ double gc_ldg(const double* p) { return __ldg(p); }
template <> __device__ __forceinline__ gc_half gc_ldg(const gc_half* p) {
    gc_half h;
    h.bits = __ldg((const unsigned short*)p);
    return h;
}
template <> __device__ __forceinline__ gc_complex64 gc_ldg(const gc_complex64* p) {
    const float2 v = __ldg((const float2*)p);
    gc_complex64 z; z.re = v.x; z.im = v.y;
    return z;
}
template <> __device__ __forceinline__ gc_complex128 gc_ldg(const gc_complex128* p) {
    const double2 v = __ldg((const double2*)p);
    gc_complex128 z; z.re = v.x; z.im = v.y;
    return z;
}
#endif

// a + x * w as fused multiply-adds only: four per complex product (the
// traits' expression a + (x.re * w.re - x.im * w.im) costs a multiply and an
// add besides, since the compiler may not reassociate).
template <typename A> __device__ __forceinline__ A gc_ig_mac(A a, A x, A w) { return a + x * w; }
template <typename Z> __device__ __forceinline__ Z gc_ig_cmac(Z a, Z x, Z w) {
    a.re += x.re * w.re;
    a.re -= x.im * w.im;
    a.im += x.re * w.im;
    a.im += x.im * w.re;
    return a;
}
template <> __device__ __forceinline__ gc_complex64 gc_ig_mac(gc_complex64 a, gc_complex64 x,
                                                              gc_complex64 w) {
    return gc_ig_cmac(a, x, w);
}
template <> __device__ __forceinline__ gc_complex128 gc_ig_mac(gc_complex128 a, gc_complex128 x,
                                                               gc_complex128 w) {
    return gc_ig_cmac(a, x, w);
}

__device__ __forceinline__ float gc_acc_add(float a, float b) { return a + b; }
__device__ __forceinline__ double gc_acc_add(double a, double b) { return a + b; }
__device__ __forceinline__ gc_complex64 gc_acc_add(gc_complex64 a, gc_complex64 b) {
    a.re += b.re; a.im += b.im; return a;
}
__device__ __forceinline__ gc_complex128 gc_acc_add(gc_complex128 a, gc_complex128 b) {
    a.re += b.re; a.im += b.im; return a;
}

// One (sub-)problem of a group: how output pixels, taps and weights map to memory.
struct gc_ig_problem {
    int N, C, H, W, Cg;                    // input; this group's channels start at group * Cg
    int Cout, Coutg, Ho, Wo;               // output
    // Output grid of the (sub-)problem per image, Hq x Wq; grid point (qi, qj)
    // reads input base (qi * ish + ih_off, qj * isw + iw_off) and writes
    // output (qi * osh + oi_off, qj * osw + oj_off).
    int Hq, Wq, ish, isw, ih_off, iw_off, osh, osw, oi_off, oj_off;
    // k = (c * nu + iu) * nv + iv is tap u = u0 + iu * lu, v = v0 + iv * lv,
    // at input offset du = (hu0 + hu1 * u) / hdiv (exact), dv likewise.
    int nu, nv, u0, v0, lu, lv, hu0, hu1, hdiv, wv0, wv1, wdiv, kw;
    // Weight (c, co, u, v) of the group at wgroup + c * wc + co * wco + u * kw + v.
    long long wgroup;
    int wc, wco;
    int pad_mode;
};

// One block's tile: output pixels [m0, m0 + BM) x channels [co0, co0 + BN) of
// `group`, reduction slices of split `split` out of `nsplit`, taps decoded
// `chunk` at a time.
template <typename T, bool MAPPED>
__device__ __forceinline__ void gc_ig_tile(const T* __restrict__ x, const T* __restrict__ w,
                                           void* __restrict__ out, const gc_ig_problem& P,
                                           int group, int co0, long long m0, int split,
                                           int nsplit, int chunk) {
    typedef gc_traits<T> tr;
    typedef typename tr::acc acc_t;
    enum {
        BK = gc_ig_cfg<T>::BK,
        AROWS = GC_IG_THREADS / GC_IG_BM,   // k rows of A one pass of the block loads
        AJ = BK / AROWS,                    // A values per thread per slice
        BCOLS = GC_IG_THREADS / BK,         // channels of B one pass loads
        BJ = GC_IG_BN / BCOLS               // B values per thread per slice
    };
    __shared__ gc_vec4<acc_t> As[2][BK][GC_IG_BM / 4];
    __shared__ gc_vec4<acc_t> Bs[2][BK][GC_IG_BN / 4 + 1];  // +1: fewer bank conflicts on store
    __shared__ gc_tap tab[GC_IG_TAB];
    __shared__ int wtab[GC_IG_TAB];

    const int tid = threadIdx.x;
    const long long HWq = (long long)P.Hq * P.Wq;
    const long long M = (long long)P.N * HWq;
    const int HW = P.H * P.W;
    const int taps = P.nu * P.nv;
    const int K = P.Cg * taps;

    // This split's range of k, in whole slices.
    const int slices = (K + BK - 1) / BK;
    const int per_split = (slices + nsplit - 1) / nsplit;
    const int kb = min(K, split * per_split * BK);
    const int ke = min(K, kb + per_split * BK);

    // The pixel this thread loads into A at every slice (k rows ak + AROWS * j).
    const int am = tid % GC_IG_BM;
    const int ak = tid / GC_IG_BM;
    const bool mvalid = m0 + am < M;
    int ih0 = GC_IG_FAR, iw0 = GC_IG_FAR, pix = 0;
    const T* xb = x;
    if (mvalid) {
        const long long m = m0 + am;
        const long long n = m / HWq;
        const int p = (int)(m - n * HWq);
        const int qi = p / P.Wq;
        const int qj = p - qi * P.Wq;
        ih0 = qi * P.ish + P.ih_off;
        iw0 = qj * P.isw + P.iw_off;
        pix = ih0 * P.W + iw0;
        xb = x + ((long long)n * P.C + (long long)group * P.Cg) * HW;
    }
    gc_fold fh, fw;
    if (MAPPED) {
        fh = gc_make_fold(P.pad_mode, P.H);
        fw = gc_make_fold(P.pad_mode, P.W);
    }

    // The output channels this thread loads into B (slice row bk): co0 + bn + BCOLS * j.
    const int bk = tid % BK;
    const int bn = tid / BK;
    bool cvalid[BJ];
#pragma unroll
    for (int j = 0; j < BJ; ++j) cvalid[j] = co0 + bn + BCOLS * j < P.Coutg;
    const T* wb = gc_pointer(w + P.wgroup + (long long)(co0 + bn) * P.wco);
    // Unsigned: wraps harmlessly for channels past the end (never loaded).
    const unsigned wstep = BCOLS * (unsigned)P.wco;

    // The micro-tile: pixels m0 + 4 * tx + i, channels co0 + 4 * ty + j.
    const int tx = tid % (GC_IG_BM / 4);
    const int ty = tid / (GC_IG_BM / 4);
    acc_t acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = tr::zero();

    acc_t ra[AJ], rb[BJ];
    for (int kc = kb; kc < ke; kc += chunk) {
        const int klen = min(chunk, ke - kc);
        const int ns = (klen + BK - 1) / BK;
        // Offsets within the chunk are 32-bit from its first channel (the
        // launch code sizes chunks so that they fit, out-of-plane taps included).
        const int cbase = kc / taps;
        const T* xc = gc_pointer(xb + (long long)cbase * HW);
        __syncthreads();  // the previous chunk's table and tiles are no longer read
        for (int e = tid; e < ns * BK; e += GC_IG_THREADS) {
            gc_tap t;
            int wo = -1;
            t.c = -1; t.du = GC_IG_FAR; t.dv = GC_IG_FAR; t.off = 0;
            if (e < klen) {
                const int k = kc + e;
                const int c = k / taps;
                const int r = k - c * taps;
                const int iu = r / P.nv;
                const int iv = r - iu * P.nv;
                const int u = P.u0 + iu * P.lu;
                const int v = P.v0 + iv * P.lv;
                t.c = c - cbase;
                t.du = (P.hu0 + P.hu1 * u) / P.hdiv;
                t.dv = (P.wv0 + P.wv1 * v) / P.wdiv;
                t.off = t.c * HW + (MAPPED ? 0 : t.du * P.W + t.dv);
                wo = c * P.wc + u * P.kw + v;
            }
            tab[e] = t;
            wtab[e] = wo;
        }
        __syncthreads();

        // Global -> registers for slice s of the chunk.
        auto load = [&](int s) {
#pragma unroll
            for (int j = 0; j < AJ; ++j) {
                const gc_tap t = tab[s * BK + ak + AROWS * j];
                acc_t a = tr::zero();
                if (MAPPED) {
                    if (mvalid && t.c >= 0) {
                        const int ih = gc_apply_fold(ih0 + t.du, P.H, fh);
                        const int iw = gc_apply_fold(iw0 + t.dv, P.W, fw);
                        a = tr::load(gc_ldg(xc + (unsigned)(t.off + ih * P.W + iw)));
                    }
                } else if ((unsigned)(ih0 + t.du) < (unsigned)P.H &&
                           (unsigned)(iw0 + t.dv) < (unsigned)P.W) {
                    // Unsigned: in the plane the offset is >= 0, and a
                    // zero-extended index is one wide multiply-add.
                    a = tr::load(gc_ldg(xc + (unsigned)(pix + t.off)));
                }
                ra[j] = a;
            }
            const int wo = wtab[s * BK + bk];
#pragma unroll
            for (int j = 0; j < BJ; ++j) {
                rb[j] = (cvalid[j] && wo >= 0) ? tr::load(gc_ldg(wb + ((unsigned)wo + wstep * j)))
                                               : tr::zero();
            }
        };
        // Registers -> shared buffer `buf`.
        auto store = [&](int buf) {
#pragma unroll
            for (int j = 0; j < AJ; ++j) As[buf][ak + AROWS * j][am / 4].v[am % 4] = ra[j];
#pragma unroll
            for (int j = 0; j < BJ; ++j) {
                const int n = bn + BCOLS * j;
                Bs[buf][bk][n / 4].v[n % 4] = rb[j];
            }
        };

        load(0);
        store(0);
        __syncthreads();
        for (int s = 0; s < ns; ++s) {
            const int buf = s & 1;
            if (s + 1 < ns) load(s + 1);
#pragma unroll
            for (int kk = 0; kk < BK; ++kk) {
                const gc_vec4<acc_t> a = As[buf][kk][tx];
                const gc_vec4<acc_t> b = Bs[buf][kk][ty];
#pragma unroll
                for (int i = 0; i < 4; ++i)
#pragma unroll
                    for (int j = 0; j < 4; ++j) acc[i][j] = gc_ig_mac(acc[i][j], a.v[i], b.v[j]);
            }
            if (s + 1 < ns) store(buf ^ 1);
            __syncthreads();
        }
    }

    // Epilogue: out (or this split's workspace slice) at the micro-tile's pixels.
    long long m = m0 + 4 * tx;
    if (m >= M) return;
    long long n = m / HWq;
    int p = (int)(m - n * HWq);
    int qi = p / P.Wq;
    int qj = p - qi * P.Wq;
    const long long total = (long long)P.N * P.Cout * P.Ho * P.Wo;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        if (m + i >= M) break;
        const long long oi = (long long)qi * P.osh + P.oi_off;
        const long long oj = (long long)qj * P.osw + P.oj_off;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int co = co0 + 4 * ty + j;
            if (co >= P.Coutg) break;
            const long long idx =
                ((n * P.Cout + (long long)group * P.Coutg + co) * P.Ho + oi) * P.Wo + oj;
            if (nsplit == 1) {
                ((T*)out)[idx] = tr::store(acc[i][j]);
            } else {
                ((acc_t*)out)[split * total + idx] = acc[i][j];
            }
        }
        if (++qj == P.Wq) {
            qj = 0;
            if (++qi == P.Hq) { qi = 0; ++n; }
        }
    }
}

template <typename T, bool MAPPED>
__device__ __forceinline__ void gc_conv2d(const T* __restrict__ x, const T* __restrict__ w,
                                          void* __restrict__ out, int N, int C, int H, int W,
                                          int Cout, int kh, int kw, int Ho, int Wo, int sh,
                                          int sw, int pad_top, int pad_left, int dh, int dw,
                                          int groups, int pad_mode, int nsplit, int chunk) {
    gc_ig_problem P;
    P.N = N; P.C = C; P.H = H; P.W = W; P.Cg = C / groups;
    P.Cout = Cout; P.Coutg = Cout / groups; P.Ho = Ho; P.Wo = Wo;
    P.Hq = Ho; P.Wq = Wo; P.ish = sh; P.isw = sw; P.ih_off = -pad_top; P.iw_off = -pad_left;
    P.osh = 1; P.osw = 1; P.oi_off = 0; P.oj_off = 0;
    P.nu = kh; P.nv = kw; P.u0 = 0; P.v0 = 0; P.lu = 1; P.lv = 1;
    P.hu0 = 0; P.hu1 = dh; P.hdiv = 1; P.wv0 = 0; P.wv1 = dw; P.wdiv = 1; P.kw = kw;
    P.wc = kh * kw;
    P.wco = P.Cg * kh * kw;
    P.pad_mode = pad_mode;
    const int ctiles = (P.Coutg + GC_IG_BN - 1) / GC_IG_BN;
    for (int yb = blockIdx.y; yb < groups * ctiles; yb += gridDim.y) {
        const int group = yb / ctiles;
        P.wgroup = (long long)group * P.Coutg * P.wco;
        gc_ig_tile<T, MAPPED>(x, w, out, P, group, (yb - group * ctiles) * GC_IG_BN,
                              (long long)blockIdx.x * GC_IG_BM, blockIdx.z, nsplit, chunk);
    }
}

// conv2d with zero padding.
template <typename T>
__global__ void __launch_bounds__(GC_IG_THREADS, gc_ig_cfg<T>::MIN_BLOCKS)
conv2d_igemm(const T* __restrict__ x, const T* __restrict__ w, void* __restrict__ out,
             int N, int C, int H, int W, int Cout, int kh, int kw, int Ho, int Wo,
             int sh, int sw, int pad_top, int pad_left, int dh, int dw, int groups,
             int pad_mode, int nsplit, int chunk) {
    gc_conv2d<T, false>(x, w, out, N, C, H, W, Cout, kh, kw, Ho, Wo, sh, sw, pad_top, pad_left,
                        dh, dw, groups, pad_mode, nsplit, chunk);
}

// conv2d with reflect (1), replicate (2) or circular (3) padding.
template <typename T>
__global__ void __launch_bounds__(GC_IG_THREADS, gc_ig_cfg<T>::MIN_BLOCKS)
conv2d_igemm_padded(const T* __restrict__ x, const T* __restrict__ w, void* __restrict__ out,
                    int N, int C, int H, int W, int Cout, int kh, int kw, int Ho, int Wo,
                    int sh, int sw, int pad_top, int pad_left, int dh, int dw, int groups,
                    int pad_mode, int nsplit, int chunk) {
    gc_conv2d<T, true>(x, w, out, N, C, H, W, Cout, kh, kw, Ho, Wo, sh, sw, pad_top, pad_left,
                       dh, dw, groups, pad_mode, nsplit, chunk);
}

// First tap u >= 0 with u * d = r (mod s), or -1; the others follow every s / gcd(s, d).
__device__ __forceinline__ int gc_first_tap(int r, int d, int s, int k, int* step) {
    int a = s, b = d % s;
    while (b) { const int t = a % b; a = b; b = t; }
    *step = s / a;
    for (int u = 0; u < min(k, *step); ++u) {
        if ((r - u * d) % s == 0) return u;
    }
    return -1;
}

// Transposed convolution, weights (C_in, C_out / groups, kh, kw); one
// sub-problem per output phase (oi mod sh, oj mod sw).
template <typename T>
__global__ void __launch_bounds__(GC_IG_THREADS, gc_ig_cfg<T>::MIN_BLOCKS)
conv_transpose2d_igemm(const T* __restrict__ x, const T* __restrict__ w, void* __restrict__ out,
                       int N, int C, int H, int W, int Cout, int kh, int kw, int Ho, int Wo,
                       int sh, int sw, int pad_top, int pad_left, int dh, int dw, int groups,
                       int nsplit, int chunk) {
    gc_ig_problem P;
    P.N = N; P.C = C; P.H = H; P.W = W; P.Cg = C / groups;
    P.Cout = Cout; P.Coutg = Cout / groups; P.Ho = Ho; P.Wo = Wo;
    P.ish = 1; P.isw = 1; P.ih_off = 0; P.iw_off = 0; P.osh = sh; P.osw = sw;
    P.hu1 = -dh; P.hdiv = sh; P.wv1 = -dw; P.wdiv = sw; P.kw = kw;
    P.wc = P.Coutg * kh * kw;
    P.wco = kh * kw;
    P.pad_mode = 0;
    const int ctiles = (P.Coutg + GC_IG_BN - 1) / GC_IG_BN;
    const int phases = sh * sw;
    const long long m0 = (long long)blockIdx.x * GC_IG_BM;
    for (int yb = blockIdx.y; yb < groups * ctiles * phases; yb += gridDim.y) {
        const int phase = yb % phases;
        const int rest = yb / phases;
        const int group = rest / ctiles;
        const int a = phase / sw;
        const int b = phase - a * sw;
        P.Hq = a < Ho ? (Ho - a + sh - 1) / sh : 0;
        P.Wq = b < Wo ? (Wo - b + sw - 1) / sw : 0;
        if (m0 >= (long long)N * P.Hq * P.Wq) continue;  // the whole block: no barrier skipped
        P.oi_off = a; P.oj_off = b;
        P.hu0 = a + pad_top; P.wv0 = b + pad_left;
        P.u0 = gc_first_tap(P.hu0, dh, sh, kh, &P.lu);
        P.v0 = gc_first_tap(P.wv0, dw, sw, kw, &P.lv);
        P.nu = P.u0 < 0 ? 0 : (kh - 1 - P.u0) / P.lu + 1;
        P.nv = P.v0 < 0 ? 0 : (kw - 1 - P.v0) / P.lv + 1;
        P.wgroup = (long long)group * P.Cg * P.wc;
        gc_ig_tile<T, false>(x, w, out, P, group, (rest - group * ctiles) * GC_IG_BN, m0,
                             blockIdx.z, nsplit, chunk);
    }
}

// out = the sum of the nsplit partial results in the workspace, in order.
template <typename T>
__global__ void __launch_bounds__(GC_IG_THREADS)
conv2d_splitk_reduce(const T* __restrict__ x_unused, const T* __restrict__ partial,
                     T* __restrict__ out, int nsplit, int planes, int plane) {
    typedef gc_traits<T> tr;
    typedef typename tr::acc acc_t;
    (void)x_unused;
    const acc_t* parts = (const acc_t*)partial;
    const long long total = (long long)planes * plane;
    const long long step = (long long)gridDim.x * GC_IG_THREADS;
    for (long long i = (long long)blockIdx.x * GC_IG_THREADS + threadIdx.x; i < total;
         i += step) {
        acc_t s = parts[i];
        for (int z = 1; z < nsplit; ++z) s = gc_acc_add(s, parts[z * total + i]);
        out[i] = tr::store(s);
    }
}

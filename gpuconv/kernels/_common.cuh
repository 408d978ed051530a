// Element types and arithmetic shared by every gpuconv kernel.
//
// The loader prepends this file to each .cu source, so a translation unit
// needs no include path: NVRTC alone (no CUDA toolkit headers) compiles it,
// and the test emulator compiles the same text with a host C++ compiler.
//
// float16 is stored as raw IEEE binary16 bits and converted with PTX cvt
// instructions rather than through cuda_fp16.h, which NVRTC does not ship.
// Complex numbers are interleaved (re, im) pairs, the layout of NumPy/CuPy
// complex64 and complex128, aligned to their full size as CUDA's cuComplex
// types are: one 8- or 16-byte load per element instead of two (CuPy's
// allocations and every element offset are multiples of the size).

struct gc_half { unsigned short bits; };
struct __align__(8) gc_complex64 { float re, im; };
struct __align__(16) gc_complex128 { double re, im; };

#ifndef GPUCONV_EMULATOR
__device__ __forceinline__ float gc_half_to_float(unsigned short b) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(b));
    return f;
}
__device__ __forceinline__ unsigned short gc_float_to_half(float f) {
    unsigned short b;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(b) : "f"(f));
    return b;
}
#endif

// Index into an axis of length n for position p of the axis extended by
// `mode` (numpy.pad's names: 0 constant, 1 reflect, 2 edge, 3 wrap,
// 4 symmetric), any number of periods away; -1 where the constant applies.
// No intermediate exceeds |p| or n (no 2 * n), so every int p and n work.
// The one comparison of the common case (p inside) comes first.
__device__ __forceinline__ int gc_source_index(int p, int n, int mode) {
    if ((unsigned)p < (unsigned)n) return p;
    if (mode == 1) {
        // Mirrored about 0 and n - 1 without repeating the edge: period 2(n - 1).
        if (n == 1) return 0;
        const int q = p < 0 ? -p : p;
        const int m = n - 1;
        const int k = q / m;
        const int r = q - k * m;
        return (k & 1) ? m - r : r;
    }
    if (mode == 2) return p < 0 ? 0 : n - 1;
    if (mode == 3) {
        const int r = p % n;
        return r < 0 ? r + n : r;
    }
    if (mode == 4) {
        // Mirrored with the edge repeated: position -1 holds element 0.
        const int q = p < 0 ? -1 - p : p;
        const int k = q / n;
        const int r = q - k * n;
        return (k & 1) ? n - 1 - r : r;
    }
    return -1;
}

// gc_traits<T>: the accumulator type of T (float for half) and the few
// operations a kernel needs: load (T -> acc), store (acc -> T), a
// multiply-accumulate, a sum, and the fill value built from a (re, im) pair
// of doubles so that launch code passes the same arguments for every type.
template <typename T> struct gc_traits;

template <> struct gc_traits<float> {
    typedef float acc;
    static __device__ __forceinline__ acc zero() { return 0.0f; }
    static __device__ __forceinline__ acc load(float v) { return v; }
    static __device__ __forceinline__ float store(acc a) { return a; }
    static __device__ __forceinline__ acc from_parts(double re, double) { return (float)re; }
    static __device__ __forceinline__ acc mac(acc a, acc x, acc w) { return a + x * w; }
    static __device__ __forceinline__ acc add(acc a, acc b) { return a + b; }
};

template <> struct gc_traits<double> {
    typedef double acc;
    static __device__ __forceinline__ acc zero() { return 0.0; }
    static __device__ __forceinline__ acc load(double v) { return v; }
    static __device__ __forceinline__ double store(acc a) { return a; }
    static __device__ __forceinline__ acc from_parts(double re, double) { return re; }
    static __device__ __forceinline__ acc mac(acc a, acc x, acc w) { return a + x * w; }
    static __device__ __forceinline__ acc add(acc a, acc b) { return a + b; }
};

template <> struct gc_traits<gc_half> {
    typedef float acc;
    static __device__ __forceinline__ acc zero() { return 0.0f; }
    static __device__ __forceinline__ acc load(gc_half v) { return gc_half_to_float(v.bits); }
    static __device__ __forceinline__ gc_half store(acc a) {
        gc_half h;
        h.bits = gc_float_to_half(a);
        return h;
    }
    // The fill value is rounded to half first, as the NumPy backend pads a
    // float16 array (the front door computes float16 in float32, but the
    // value itself is exactly representable either way).
    static __device__ __forceinline__ acc from_parts(double re, double) { return (float)re; }
    static __device__ __forceinline__ acc mac(acc a, acc x, acc w) { return a + x * w; }
    static __device__ __forceinline__ acc add(acc a, acc b) { return a + b; }
};

template <> struct gc_traits<gc_complex64> {
    typedef gc_complex64 acc;
    static __device__ __forceinline__ acc zero() { acc z; z.re = 0.0f; z.im = 0.0f; return z; }
    static __device__ __forceinline__ acc load(gc_complex64 v) { return v; }
    static __device__ __forceinline__ gc_complex64 store(acc a) { return a; }
    static __device__ __forceinline__ acc from_parts(double re, double im) {
        acc z; z.re = (float)re; z.im = (float)im; return z;
    }
    static __device__ __forceinline__ acc mac(acc a, acc x, acc w) {
        a.re += x.re * w.re - x.im * w.im;
        a.im += x.re * w.im + x.im * w.re;
        return a;
    }
    static __device__ __forceinline__ acc add(acc a, acc b) {
        a.re += b.re;
        a.im += b.im;
        return a;
    }
};

template <> struct gc_traits<gc_complex128> {
    typedef gc_complex128 acc;
    static __device__ __forceinline__ acc zero() { acc z; z.re = 0.0; z.im = 0.0; return z; }
    static __device__ __forceinline__ acc load(gc_complex128 v) { return v; }
    static __device__ __forceinline__ gc_complex128 store(acc a) { return a; }
    static __device__ __forceinline__ acc from_parts(double re, double im) {
        acc z; z.re = re; z.im = im; return z;
    }
    static __device__ __forceinline__ acc mac(acc a, acc x, acc w) {
        a.re += x.re * w.re - x.im * w.im;
        a.im += x.re * w.im + x.im * w.re;
        return a;
    }
    static __device__ __forceinline__ acc add(acc a, acc b) {
        a.re += b.re;
        a.im += b.im;
        return a;
    }
};

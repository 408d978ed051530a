"""A short run of every gpuconv CUDA kernel, for compute-sanitizer.

    compute-sanitizer --tool memcheck python benchmarks/gpu_kernel_run.py --quick
    python benchmarks/gpu_kernel_run.py              # every dtype, mode and boundary
    python benchmarks/gpu_kernel_run.py --compile    # compile times, fills CuPy's cache

CuPy's memory pool is switched off, so every array is its own cudaMalloc and
the sanitizer sees an access one element past any buffer.  Each result is
compared with the NumPy backend on fresh random inputs; exit status 1 on a
mismatch.  Sizes straddle the 32 x 32 tile and the 16 x 16 weight chunk.
``--quick`` (what the GPU check runs under each sanitizer tool) keeps every
mode and boundary for float32 and the ``full`` mode for float64 and float16:
every kernel template's code paths, a fraction of the launches.
"""

from __future__ import annotations

import sys

import numpy as np


def main(quick: bool) -> int:
    import cupy

    import gpuconv

    cupy.cuda.set_allocator(None)
    cupy.cuda.set_pinned_memory_allocator(None)
    rng = np.random.default_rng(1)
    dtypes = ["float32", "float64", "float16"] if quick else [
        "float32", "float64", "complex64", "complex128", "float16"]
    planes = [((2, 33, 31), (3, 3)), ((1, 1, 40), (1, 4)), ((1, 40, 1), (5, 1)),
              ((1, 20, 35), (17, 18))]
    failures = launches = 0

    def check(what, got, want, dtype):
        nonlocal failures, launches
        launches += 1
        got = cupy.asnumpy(got)
        tol = {"float16": 1e-2, "float32": 1e-4, "complex64": 1e-4}.get(dtype, 1e-10)
        scale = max(float(np.max(np.abs(want), initial=0)), 1e-30)
        if got.shape != want.shape or not np.allclose(got, want, rtol=tol, atol=tol * scale):
            failures += 1
            print(f"MISMATCH {what}", flush=True)

    for dtype in dtypes:
        kind_c = np.dtype(dtype).kind == "c"
        for xs, ks in planes:
            x = rng.standard_normal(xs) + (1j * rng.standard_normal(xs) if kind_c else 0)
            k = rng.standard_normal(ks) + (1j * rng.standard_normal(ks) if kind_c else 0)
            x, k = x.astype(dtype), k.astype(dtype)
            every_mode = not quick or dtype == "float32"
            for mode in ("full", "same", "valid") if every_mode else ("full",):
                if mode == "valid" and (ks[0] > xs[1] or ks[1] > xs[2]):
                    continue
                for boundary in ("fill", "wrap", "symm"):
                    got = gpuconv.correlate2d(cupy.asarray(x), cupy.asarray(k), mode=mode,
                                              boundary=boundary, method="direct")
                    with gpuconv.set_backend("numpy"):
                        want = gpuconv.correlate2d(x, k, mode=mode, boundary=boundary,
                                                   method="direct")
                    check(f"correlate2d {dtype} {xs} {ks} {mode} {boundary}", got, want, dtype)
        x = rng.standard_normal((2, 4, 9, 11)).astype(dtype)
        w = rng.standard_normal((10, 2, 3, 3)).astype(dtype)
        for padding_mode in ("zeros", "reflect", "replicate", "circular"):
            kw = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2,
                      padding_mode=padding_mode, method="direct")
            got = gpuconv.conv2d(cupy.asarray(x), cupy.asarray(w), **kw)
            with gpuconv.set_backend("numpy"):
                want = gpuconv.conv2d(x, w, **kw)
            check(f"conv2d {dtype} {padding_mode}", got, want, dtype)
        wt = rng.standard_normal((4, 5, 3, 2)).astype(dtype)
        kw = dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2,
                  dilation=(1, 2), method="direct")
        got = gpuconv.conv_transpose2d(cupy.asarray(x), cupy.asarray(wt), **kw)
        with gpuconv.set_backend("numpy"):
            want = gpuconv.conv_transpose2d(x, wt, **kw)
        check(f"conv_transpose2d {dtype}", got, want, dtype)
    cupy.cuda.Device().synchronize()
    print(f"{launches} checked calls, {failures} mismatches", flush=True)
    return 1 if failures else 0


def compile_all() -> int:
    """Compile every kernel file for this device, printing the time each took.

    CuPy keeps the binaries in its on-disk kernel cache, so later processes
    (the test suite, the sanitizer runs) load instead of compiling.
    """
    import time

    import cupy

    from gpuconv import kernels

    dev = cupy.cuda.Device()
    name = cupy.cuda.runtime.getDeviceProperties(dev.id)["name"].decode()
    print(f"device {dev.id}: {name}, compute capability {dev.compute_capability}")
    for filename, names in kernels.KERNELS.items():
        t0 = time.perf_counter()
        for kernel in names:
            for dtype in kernels.TYPENAMES:
                kernels.get_function(filename, kernel, dtype)
        ms = (time.perf_counter() - t0) * 1e3
        print(f"compiled {filename}: {len(names) * len(kernels.TYPENAMES)} kernels "
              f"in {ms:.0f} ms")
    return 0


if __name__ == "__main__":
    if "--compile" in sys.argv[1:]:
        sys.exit(compile_all())
    sys.exit(main("--quick" in sys.argv[1:]))

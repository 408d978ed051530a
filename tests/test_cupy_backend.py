"""The CuPy backend.

Without a GPU: its registration and the reason it gives, that importing it
imports no CuPy, and its own code (argument conversion, launch geometry, the
choice between native kernels and generic code, dtypes) run end to end on the
CPU through the public functions, on the CuPy stand-in (``tests/cupy_standin``:
arrays with CuPy's conversion rules, CUDA kernels in the host emulator).  The
results must equal the NumPy backend's and be CuPy arrays of the same dtype.

With a GPU (CuPy usable): the same comparisons on the device, plus the cases
only a device shows (CuPy arrays in and out, negative strides, huge batches,
the grid limits).  Where CuPy cannot run, these run on the stand-in too (see
``tests/conftest.py``).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import cupy_standin
import gpuconv
import gpuconv.kernels
from conftest import assert_close, backend_skip_reason, random_array
from gpuconv import backend as registry

kernel_emulator = pytest.importorskip("kernel_emulator")

DTYPES = [np.float32, np.float64, np.complex64, np.complex128, np.float16, np.int64]


# -- without a GPU ------------------------------------------------------------

def test_cupy_is_registered_and_says_why_it_cannot_run():
    with cupy_standin.suspended():  # the real CuPy's answer, not the stand-in's
        status = gpuconv.available_backends()["cupy"]
        try:
            import cupy
        except ImportError:
            assert not status.usable and status.reason.startswith("cupy is not installed")
            return
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            assert not status.usable
            assert status.reason == f"no CUDA device visible: {exc}"
            with pytest.raises(gpuconv.BackendUnavailableError,
                               match="no CUDA device visible"):
                gpuconv.set_backend("cupy")
        else:
            assert status.usable == (count > 0), status


def test_factory_without_cupy(monkeypatch):
    from gpuconv.backends.cupy import make_backend

    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(gpuconv.BackendUnavailableError, match=r"^cupy is not installed$"):
        make_backend()


def test_importing_the_backend_module_imports_no_cupy():
    code = ("import sys, gpuconv, gpuconv.backends.cupy, gpuconv.kernels; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cupy', 'cupyx')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


@pytest.fixture
def emulated():
    """The CuPy backend's code on the CPU: the stand-in's ``cupy``, kernels in the emulator."""
    if not cupy_standin.installed():
        pytest.skip("runs on the CuPy stand-in, and this session runs the real CuPy (the "
                    "gpu tests below check the same on the device) or none (--no-cupy-standin)")
    if kernel_emulator.compiler() is None:
        kernel_emulator.skip_or_fail("no host C++ compiler (g++ or $CXX) to build the "
                                     "kernel emulator")
    import cupy

    with gpuconv.set_backend("cupy"):
        backend = registry.get_backend_object("cupy")
        assert backend.xp is cupy
        yield backend


def on_numpy(fn, *args, **kwargs):
    with gpuconv.set_backend("numpy"):
        return fn(*args, **kwargs)


def result_dtype(dtype):
    dtype = np.dtype(dtype)
    return np.dtype(np.float64) if dtype.kind in "biu" else dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
@pytest.mark.parametrize("op", ["correlate2d", "convolve2d"])
def test_planes_through_the_backend(emulated, rng, dtype, boundary, op):
    fn = getattr(gpuconv, op)
    x = random_array(rng, (2, 3, 33, 20), dtype)
    for kshape in [(3, 4), (18, 2)]:
        k = random_array(rng, kshape, dtype)
        for mode in ("full", "same", "valid"):
            with cupy_standin.activity() as seen:
                got = fn(x, k, mode=mode, boundary=boundary, fillvalue=2, method="direct")
            want = on_numpy(fn, x, k, mode=mode, boundary=boundary, fillvalue=2,
                            method="direct")
            assert seen.total_launches == 1, "the native kernel did not run"
            assert_close(got, want, result_dtype(dtype), xp=emulated.xp)


@pytest.mark.parametrize("method", ["direct", "gemm"])
def test_float16_runs_the_half_kernels_natively(emulated, rng, method):
    # The direct kernels read and write half (accumulating in float): float16 is
    # not widened for them.  The gemm path copies half into its columns and
    # multiplies with float accumulation, except the transposed convolution,
    # whose columns are partial sums kept in float32.  Either way the result is
    # float16 and agrees with the NumPy backend (float32 accumulation).
    x = random_array(rng, (2, 30, 37), np.float16)
    k = random_array(rng, (4, 5), np.float16)
    xc = random_array(rng, (2, 4, 12, 11), np.float16)
    wc = random_array(rng, (6, 2, 3, 3), np.float16)
    calls = [
        (lambda: gpuconv.correlate2d(x, k, "same", "symm", method=method), 1),
        (lambda: gpuconv.convolve2d(x, k, "full", method=method), 1),
        (lambda: gpuconv.conv2d(xc, wc, padding=1, groups=2, method=method), 1),
        (lambda: gpuconv.conv_transpose2d(xc[:, :, :6], wc[:4], stride=2, groups=2,
                                          method=method), int(method == "direct")),
    ]
    for call, half_kernels in calls:
        with cupy_standin.activity() as seen:
            got = call()
        want = on_numpy(call)
        # (A split-K reduction, where the device's size calls for one, is a second launch.)
        half = sum(n for name, n in seen.launches.items()
                   if "<gc_half>" in name and "splitk_reduce" not in name)
        assert half == half_kernels, seen.launches
        assert want.dtype == np.float16
        assert_close(got, want, np.float16, xp=emulated.xp)


@pytest.mark.parametrize("variant", gpuconv.kernels.VARIANTS["correlate_planes.cu"])
def test_kernel_variants_through_the_backend(emulated, rng, variant):
    x = random_array(rng, (3, 40, 35), np.float32)
    k = random_array(rng, (5, 4), np.float32)
    emulated.kernel_variants = {"correlate_planes.cu": (variant,)}
    try:
        with cupy_standin.activity() as seen:
            got = gpuconv.correlate2d(x, k, mode="same", boundary="symm", method="direct")
    finally:
        emulated.kernel_variants = {}
    assert list(seen.launches) == [f"correlate_planes<float>+{variant}"], \
        "the variant's build did not run"
    want = on_numpy(gpuconv.correlate2d, x, k, mode="same", boundary="symm", method="direct")
    assert_close(got, want, np.float32, xp=emulated.xp)


def test_valid_mode_swapped_and_auto_method(emulated, rng):
    x = random_array(rng, (4, 5), np.complex128)
    k = random_array(rng, (9, 7), np.complex128)
    for fn in (gpuconv.correlate2d, gpuconv.convolve2d):
        got = fn(x, k, mode="valid")
        assert_close(got, on_numpy(fn, x, k, mode="valid"), np.complex128, xp=emulated.xp)
    big = random_array(rng, (40, 41), np.float32)
    assert_close(gpuconv.corr2d(big, k.real.astype(np.float32)),
                 on_numpy(gpuconv.corr2d, big, k.real.astype(np.float32)), np.float32,
                 xp=emulated.xp)


CONV = [
    # input shape, weight shape, stride, padding, dilation, groups
    ((2, 4, 11, 9), (6, 2, 3, 3), 1, 1, 1, 2),
    ((1, 3, 10, 13), (9, 3, 2, 3), (2, 1), (1, 2), (2, 1), 1),
    ((3, 9, 7), (10, 3, 1, 1), 1, 0, 1, 1),  # unbatched
    ((2, 4, 8, 8), (4, 1, 3, 3), 1, "same", 1, 4),
]


@pytest.mark.parametrize("method", ["direct", "gemm"])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.float16])
def test_conv2d_through_the_backend(emulated, rng, method, padding_mode, dtype):
    for xs, ws, stride, padding, dilation, groups in CONV:
        x = random_array(rng, xs, dtype)
        w = random_array(rng, ws, dtype)
        b = random_array(rng, (ws[0],), dtype)
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                      padding_mode=padding_mode, method=method)
        # gemm: one im2col launch (default scratch bound: one chunk), none for
        # a 1x1 stride-1 unpadded convolution, which is the matrix product itself;
        # direct: the conv kernel (and a split-K reduction where the device calls for one).
        plain_product = ws[2:] == (1, 1) and stride == 1 and padding == 0
        with cupy_standin.activity() as seen:
            got = gpuconv.conv2d(x, w, b, **kwargs)
        kernels_run = sum(n for name, n in seen.launches.items() if "splitk_reduce" not in name)
        assert kernels_run == (method == "direct" or not plain_product), seen.launches
        want = on_numpy(gpuconv.conv2d, x, w, b, **kwargs)
        assert_close(got, want, dtype, xp=emulated.xp)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128, np.float16])
def test_conv_transpose2d_through_the_backend(emulated, rng, dtype):
    cases = [((2, 4, 5, 6), (4, 3, 3, 3), 2, 1, 1, 1, 1),
             ((1, 6, 7, 4), (6, 2, 2, 3), (1, 3), (1, 0), (0, 2), 3, (2, 1)),
             ((4, 3, 3), (4, 5, 1, 1), 1, 0, 0, 1, 1)]
    for xs, ws, stride, padding, output_padding, groups, dilation in cases:
        x = random_array(rng, xs, dtype)
        w = random_array(rng, ws, dtype)
        kwargs = dict(stride=stride, padding=padding, output_padding=output_padding,
                      groups=groups, dilation=dilation, method="direct")
        with cupy_standin.activity() as seen:
            got = gpuconv.conv_transpose2d(x, w, **kwargs)
        assert seen.total_launches == 1
        want = on_numpy(gpuconv.conv_transpose2d, x, w, **kwargs)
        assert_close(got, want, dtype, xp=emulated.xp)


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_conv_split_k_through_the_backend(emulated, rng, op, dtype):
    # 32 input channels x 9 taps on a grid of one or two blocks: the backend
    # splits the reduction (a workspace, then the fixed-order reduction kernel).
    x = random_array(rng, (2, 32, 5, 6), dtype)
    w = random_array(rng, (12, 32, 3, 3) if op == "conv2d" else (32, 12, 3, 3), dtype)
    kwargs = dict(stride=2, padding=1, method="direct")

    with cupy_standin.activity() as seen:
        got = getattr(gpuconv, op)(x, w, **kwargs)
    assert seen.total_launches == 2, seen.launches
    assert sum(n for name, n in seen.launches.items() if "conv2d_splitk_reduce" in name) == 1
    want = on_numpy(getattr(gpuconv, op), x, w, **kwargs)
    assert_close(got, want, dtype, xp=emulated.xp)


@pytest.mark.parametrize("call", [
    lambda x, k: gpuconv.correlate2d(x, k, mode="middle"),
    lambda x, k: gpuconv.correlate2d(x, k, boundary="reflect"),
    lambda x, k: gpuconv.correlate2d(x, k, method="winograd"),
    lambda x, k: gpuconv.correlate2d(x, k[0]),
    lambda x, k: gpuconv.correlate2d(x, k, fillvalue=1j),
    lambda x, k: gpuconv.correlate2d(x.astype(str), k),
    lambda x, k: gpuconv.conv2d(x[None, None], k[None, None], stride=0),
    lambda x, k: gpuconv.conv2d(x[None, None], k[None, None], groups=2),
])
def test_errors_are_the_numpy_backends(emulated, rng, call):
    x = random_array(rng, (6, 7), np.float64)
    k = random_array(rng, (2, 3), np.float64)
    with pytest.raises(Exception) as got:
        call(x, k)
    with gpuconv.set_backend("numpy"), pytest.raises(Exception) as want:
        call(x, k)
    assert type(got.value) is type(want.value)
    assert str(got.value) == str(want.value)


def test_asarray_moves_numbers_and_leaves_the_rest_to_the_front_door():
    from gpuconv.backends.cupy import CupyBackend

    class DeviceArray:
        def __init__(self, host):
            self.host = host

    stub = type("stub", (), {"ndarray": DeviceArray, "asarray": staticmethod(DeviceArray)})
    backend = CupyBackend(stub)
    on_device = backend.asarray([[1.0, 2.0]])
    assert isinstance(on_device, DeviceArray) and on_device.host.dtype == np.float64
    assert backend.asarray(on_device) is on_device
    text = backend.asarray(np.array(["a"]))
    assert isinstance(text, np.ndarray) and text.dtype.kind == "U"


def test_device_key_and_synchronize(emulated):
    assert emulated.device_key() == "NVIDIA H200"
    with cupy_standin.activity() as seen:
        emulated.synchronize()
    assert seen.syncs == {"stream.synchronize": 1}


# -- with a GPU -----------------------------------------------------------------

@pytest.fixture(scope="module")
def cupy_backend():
    reason = backend_skip_reason("cupy")
    if reason:
        pytest.skip(reason)
    return registry.get_backend_object("cupy")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128,
                                   np.float16])
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_gpu_correlate2d_matches_numpy(cupy_backend, rng, dtype, boundary, mode):
    import cupy

    for xs, ks in [((3, 67, 45), (3, 3)), ((1, 1, 100), (1, 7)), ((2, 100, 1), (5, 1)),
                   ((2, 31, 33), (35, 17)), ((1, 5, 4), (13, 11))]:
        if mode == "valid" and not (xs[1] >= ks[0] and xs[2] >= ks[1]):
            continue
        x = random_array(rng, xs, dtype)
        k = random_array(rng, ks, dtype)
        got = gpuconv.correlate2d(cupy.asarray(x), cupy.asarray(k), mode=mode,
                                  boundary=boundary, fillvalue=0.5)
        want = on_numpy(gpuconv.correlate2d, x, k, mode=mode, boundary=boundary, fillvalue=0.5)
        assert_close(got, want, dtype, xp=cupy)


@pytest.mark.gpu
@pytest.mark.heavy_on_standin("70000 planes are 18 million emulated threads (about a minute); "
                              "test_kernels_emulator checks the grid-limit split on small "
                              "limits")
def test_gpu_negative_strides_and_huge_batch(cupy_backend, rng):
    import cupy

    x = random_array(rng, (70000, 3, 4), np.float32)  # more planes than gridDim.z allows
    k = random_array(rng, (2, 2), np.float32)
    xd = cupy.asarray(x)
    got = gpuconv.convolve2d(xd[:, ::-1, ::-1], cupy.asarray(k)[::-1], mode="same",
                             boundary="wrap")
    want = on_numpy(gpuconv.convolve2d, x[:, ::-1, ::-1], k[::-1], mode="same",
                    boundary="wrap")
    assert_close(got, want, np.float32, xp=cupy)


@pytest.mark.gpu
def test_gpu_matches_cupyx(cupy_backend, rng):
    import cupy
    import cupyx.scipy.signal

    x = cupy.asarray(random_array(rng, (130, 97), np.float64))
    k = cupy.asarray(random_array(rng, (5, 7), np.float64))  # odd: one "same" centre
    for mode in ("full", "same", "valid"):
        for boundary in ("fill", "wrap", "symm"):
            want = cupyx.scipy.signal.correlate2d(x, k, mode=mode, boundary=boundary)
            got = gpuconv.correlate2d(x, k, mode=mode, boundary=boundary)
            assert_close(got, want, np.float64, xp=cupy)


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["direct", "gemm"])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_gpu_conv2d_matches_numpy(cupy_backend, rng, method, padding_mode):
    import cupy

    for xs, ws, stride, padding, dilation, groups in CONV:
        x = random_array(rng, xs, np.float32)
        w = random_array(rng, ws, np.float32)
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                      padding_mode=padding_mode, method=method)
        got = gpuconv.conv2d(cupy.asarray(x), cupy.asarray(w), **kwargs)
        assert_close(got, on_numpy(gpuconv.conv2d, x, w, **kwargs), np.float32, xp=cupy)


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["direct", "gemm"])
def test_gpu_conv_transpose2d_matches_numpy(cupy_backend, rng, method):
    import cupy

    x = random_array(rng, (2, 4, 9, 7), np.float32)
    w = random_array(rng, (4, 3, 3, 2), np.float32)
    kwargs = dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2,
                  dilation=(1, 2), method=method)
    got = gpuconv.conv_transpose2d(cupy.asarray(x), cupy.asarray(w), **kwargs)
    assert_close(got, on_numpy(gpuconv.conv_transpose2d, x, w, **kwargs), np.float32,
                 xp=cupy)


@pytest.mark.gpu
def test_gpu_device_key_names_the_device(cupy_backend):
    import cupy

    dev = cupy.cuda.Device()
    name = cupy.cuda.runtime.getDeviceProperties(dev.id)["name"].decode()
    assert cupy_backend.device_key() == name
    cupy_backend.synchronize()

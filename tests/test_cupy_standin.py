"""CuPy arrays through gpuconv's public API, and the CuPy stand-in that runs them without a GPU.

Three groups:

* CuPy's rules where they differ from NumPy's (implicit conversion raises,
  NumPy operands are refused, results stay on the device, ...).  These run on
  whichever CuPy the session has: on a GPU they check the real CuPy, which is
  what keeps the stand-in's model of it honest.
* The public API on device arrays (the ``"auto"`` backend follows them): every
  op x method x mode/boundary x dtype returns CuPy arrays of NumPy's dtype and
  values, direct and gemm never wait on the device, ``fillvalue`` may be a 0-d
  device array, choose_method, the nn layer and dask with CuPy chunks.
* The stand-in itself: its synchronisation accounting, its kernels, its
  device, and that it never leaks out of a session that did not ask for it.
"""

from __future__ import annotations

import inspect
import json
import operator
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.signal

import cupy_standin
import gpuconv
from conftest import assert_close, backend_skip_reason, random_array

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def cupy():
    """The session's CuPy: the real one on a GPU, else the stand-in."""
    reason = backend_skip_reason("cupy")
    if reason:
        pytest.skip(reason)
    import cupy

    return cupy


@pytest.fixture
def standin(cupy):
    if not cupy_standin.installed():
        pytest.skip("checks the CuPy stand-in; this session runs the real CuPy")
    return cupy


def on_numpy(fn, *args, **kwargs):
    with gpuconv.set_backend("numpy"):
        return fn(*args, **kwargs)


# -- CuPy's rules (real or stand-in) -------------------------------------------------

def test_implicit_conversion_to_numpy_raises(cupy):
    x = cupy.arange(6.0).reshape(2, 3)
    for convert in (np.asarray, np.array, np.ascontiguousarray,
                    lambda a: np.testing.assert_allclose(a, np.zeros((2, 3)))):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not "
                                            "allowed"):
            convert(x)
    assert not isinstance(x, np.ndarray)
    host = x.get()
    assert type(host) is np.ndarray and host.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert type(cupy.asnumpy(x)) is np.ndarray


def test_numpy_operands_are_refused_scalars_are_not(cupy):
    x = cupy.ones((2, 3), dtype=cupy.float32)
    host = np.ones((2, 3), dtype=np.float32)
    for mix in (lambda: x + host, lambda: host + x, lambda: x * np.float64(1) + host,
                lambda: cupy.add(x, host), lambda: cupy.matmul(x, host.T),
                lambda: x + np.asarray(2.0)):
        with pytest.raises(TypeError):
            mix()
    # Assignment goes through fill(), which takes host scalars only.
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        x[...] = host
    x[0] = np.float32(3)
    x[1, 1:] = np.asarray(4.0)
    assert x.get().tolist() == [[3, 3, 3], [1, 4, 4]]
    # Python and NumPy scalars are fine, with NumPy 2's (NEP 50) promotion.
    assert (x * 2.0).dtype == np.float32
    assert (np.float64(2.0) * x).dtype == np.float64
    assert isinstance(np.float32(2) * x, cupy.ndarray)


def test_results_stay_on_the_device(cupy):
    x = cupy.asarray(np.arange(12.0).reshape(3, 4))
    for result in (x.sum(), x.max(), x[1, 2], np.sum(x), np.abs(x)[0, 0], x.mean(),
                   cupy.isfinite(x).all(), np.linalg.norm(x)):
        assert isinstance(result, cupy.ndarray) and result.shape == ()
    assert isinstance(np.concatenate([x, x]), cupy.ndarray)  # __array_function__
    # A 0-d device integer is not a Python index.
    with pytest.raises(TypeError):
        operator.index(cupy.asarray(3))


def test_explicit_conversions_of_one_element(cupy):
    x = cupy.asarray(np.array([[2.5, -1.0]]))
    assert float(x[0, 0]) == 2.5 and int(x[0, 1]) == -1 and complex(x[0, 0]) == 2.5
    assert bool(x[0, 0] > 0) is True and x[0, 1].item() == -1.0
    assert x.tolist() == [[2.5, -1.0]]
    with pytest.raises(ValueError):
        bool(x > 0)


def test_layout_attributes_are_cupys(cupy):
    host = np.arange(24.0).reshape(4, 6)
    x = cupy.asarray(host)
    assert x.strides == host.strides and x.flags.c_contiguous and not x.flags.f_contiguous
    view = x[:, ::2]
    assert not view.flags.c_contiguous and not view.flags.owndata
    assert not hasattr(x.flags, "writeable")  # device memory is always writeable
    assert isinstance(x.data.ptr, int) and x.device.id == cupy.cuda.Device().id
    view[0, 0] = -1.0  # views share the device memory
    assert float(x[0, 0]) == -1.0


def test_creation_and_conversion_functions(cupy):
    with pytest.raises(TypeError):  # CuPy's ascontiguousarray takes device arrays only
        cupy.ascontiguousarray(np.ones(3))
    x = cupy.asarray(np.ones((2, 2)))
    assert cupy.asarray(x) is x and cupy.ascontiguousarray(x) is x
    assert x.astype(np.float64, copy=False) is x
    assert cupy.get_array_module(x) is cupy and cupy.get_array_module(np.ones(1)) is np
    for unsupported in (np.array(["a"]), np.array([1.0], dtype=">f8"), np.array([None])):
        with pytest.raises(ValueError, match="Unsupported dtype"):
            cupy.asarray(unsupported)
    assert not hasattr(cupy, "errstate") and not hasattr(cupy, "matrix")


def test_cupyx_fft_has_cupys_options_and_sizes(cupy):
    import cupyx.scipy.fft

    params = inspect.signature(cupyx.scipy.fft.rfftn).parameters
    assert "plan" in params and "workers" not in params
    # cuFFT's fast sizes are products of 2, 3, 5 and 7, real or not (SciPy's real: 2, 3, 5).
    assert [cupyx.scipy.fft.next_fast_len(n, True) for n in (11, 13, 121, 1000)] == \
        [12, 14, 125, 1000]
    x = cupy.asarray(np.ones((4, 6), dtype=np.float32))
    spectrum = cupyx.scipy.fft.rfftn(x)
    assert isinstance(spectrum, cupy.ndarray) and spectrum.dtype == np.complex64


# -- the public API on device arrays -----------------------------------------------

OPS = {
    "correlate2d": lambda x, k, **kw: gpuconv.correlate2d(x, k, **kw),
    "convolve2d": lambda x, k, **kw: gpuconv.convolve2d(x, k, **kw),
}
METHODS = ["direct", "gemm", "fft", "overlap-add", "auto"]
DTYPES = [np.float16, np.float32, np.float64, np.complex64, np.complex128, np.int16]


def result_dtype(dtype):
    return np.dtype(np.float64) if np.dtype(dtype).kind in "biu" else np.dtype(dtype)


def _check_sync_free(seen, method, label):
    if method in ("direct", "gemm"):
        assert seen.total_syncs == 0, f"{label}: blocking device-to-host waits {seen.syncs}"
        kernels = {name.split("<")[0] for name in seen.launches}
        if method == "direct":
            # The op's own kernel, once (with a split-K reduction where the grid is small).
            main = [n for name, n in seen.launches.items() if "splitk_reduce" not in name]
            assert main == [1], (label, seen.launches)
        else:
            # im2col/col2im around cuBLAS (none for a 1x1 product), no other kernel.
            assert kernels <= {"im2col", "col2im"}, (label, seen.launches)
        assert seen.to_device == seen.to_host == 0, (label, seen)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("op", list(OPS))
def test_planes_on_device_arrays(standin, rng, op, method, dtype):
    cupy = standin
    x = random_array(rng, (2, 11, 9), dtype)
    k = random_array(rng, (3, 4), dtype)
    xd, kd = cupy.asarray(x), cupy.asarray(k)
    for mode in ("full", "same", "valid"):
        for boundary in ("fill", "wrap", "symm"):
            kwargs = dict(mode=mode, boundary=boundary, fillvalue=0.5, method=method)
            with cupy_standin.activity() as seen:
                got = OPS[op](xd, kd, **kwargs)
            label = f"{op} {kwargs}"
            _check_sync_free(seen, method, label)
            want = on_numpy(OPS[op], x, k, **kwargs)
            assert want.dtype == result_dtype(dtype)
            assert_close(got, want, xp=cupy)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.complex64])
@pytest.mark.parametrize("method", METHODS)
def test_conv2d_and_transpose_on_device_arrays(standin, rng, method, dtype):
    cupy = standin
    x = random_array(rng, (2, 4, 9, 8), dtype)
    w = random_array(rng, (6, 2, 3, 2), dtype)
    b = random_array(rng, (6,), dtype)
    dev = [cupy.asarray(a) for a in (x, w, b)]
    for padding_mode in ("zeros", "reflect", "replicate", "circular"):
        kwargs = dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2,
                      padding_mode=padding_mode, method=method)
        with cupy_standin.activity() as seen:
            got = gpuconv.conv2d(*dev, **kwargs)
        _check_sync_free(seen, method, f"conv2d {kwargs}")
        assert_close(got, on_numpy(gpuconv.conv2d, x, w, b, **kwargs), xp=cupy)
    wt = random_array(rng, (4, 3, 3, 2), dtype)
    wt_device = cupy.asarray(wt)
    kwargs = dict(stride=2, padding=1, output_padding=1, groups=2, method=method)
    with cupy_standin.activity() as seen:
        got = gpuconv.conv_transpose2d(dev[0], wt_device, dev[2], **kwargs)
    _check_sync_free(seen, method, f"conv_transpose2d {kwargs}")
    assert_close(got, on_numpy(gpuconv.conv_transpose2d, x, wt, b, **kwargs), xp=cupy)


def test_mixing_device_and_host_arrays_is_a_type_error(cupy, rng):
    x = rng.standard_normal((6, 7))
    k = rng.standard_normal((2, 2))
    with pytest.raises(TypeError, match="Multiple array libraries.*in1 is a cupy array.*"
                                        "in2 is a numpy array"):
        gpuconv.correlate2d(cupy.asarray(x), k)
    with pytest.raises(TypeError, match="Multiple array libraries"):
        gpuconv.conv2d(x[None, None], cupy.asarray(k)[None, None])
    # Choosing the backend explicitly moves host inputs to it.
    with gpuconv.set_backend("cupy"):
        got = gpuconv.correlate2d(cupy.asarray(x), k)
    assert_close(got, on_numpy(gpuconv.correlate2d, x, k), xp=cupy)


def test_fillvalue_may_be_a_zero_d_device_array(cupy, rng):
    # correlate2d(x, k, fillvalue=x.mean()) with a CuPy x: the mean is a 0-d
    # device array, which refuses the implicit conversion NumPy would do.
    x = cupy.asarray(rng.standard_normal((2, 7, 6)))
    k = cupy.asarray(rng.standard_normal((3, 3)))
    for method in ("direct", "gemm", "fft"):
        got = gpuconv.correlate2d(x, k, "same", fillvalue=x.mean(), method=method)
        want = on_numpy(gpuconv.correlate2d, x.get(), k.get(), "same",
                        fillvalue=float(x.mean()), method=method)
        assert_close(got, want, xp=cupy)
    with pytest.raises(ValueError, match=r"fillvalue must be a scalar; got an array of "
                                         r"shape \(2,\)"):
        gpuconv.correlate2d(x, k, fillvalue=x[0, 0, :2])
    with pytest.raises(ValueError, match="fillvalue .* is complex but the inputs are real"):
        gpuconv.correlate2d(x, k, fillvalue=cupy.asarray(1j))


def test_device_fillvalue_costs_one_explicit_copy(standin, rng):
    x = standin.asarray(rng.standard_normal((7, 6)))
    fill = x.mean()
    with cupy_standin.activity() as seen:
        gpuconv.correlate2d(x, x[:2, :2], fillvalue=fill, method="direct")
    assert seen.syncs == {"item": 1}


def test_choose_method_on_device_arrays(standin, rng):
    x = standin.asarray(rng.standard_normal((3, 300, 200)).astype(np.float32))
    for k_shape in [(3, 3), (31, 31)]:
        k = standin.asarray(rng.standard_normal(k_shape).astype(np.float32))
        with cupy_standin.activity() as seen:
            choice = gpuconv.choose_method("correlate2d", x, k, mode="same")
        assert choice.method in ("direct", "gemm", "fft", "overlap-add")
        assert "NVIDIA H200" in gpuconv.backend.get_backend_object("cupy").device_key()
        # An FFT method is allowed only for finite inputs: one fused check, one wait for
        # its answer; an exact method needs none.
        fft = choice.method in ("fft", "overlap-add")
        assert dict(seen.syncs) == ({"bool": 1} if fft else {}), (choice, seen)
        assert seen.total_launches == 0, seen


def test_nn_conv2d_forward_and_backward_on_device(cupy, rng):
    from gpuconv import nn

    for padding_mode in ("zeros", "reflect"):
        layer = nn.Conv2D(2, 3, 3, padding=1, padding_mode=padding_mode, stride=(1, 2),
                          seed=1, dtype=np.float64, backend="cupy")
        twin = nn.Conv2D(2, 3, 3, padding=1, padding_mode=padding_mode, stride=(1, 2),
                         seed=1, dtype=np.float64, backend="numpy")
        x = rng.standard_normal((2, 2, 7, 8))
        y = layer(cupy.asarray(x))
        assert_close(y, twin(x), xp=cupy)
        g = rng.standard_normal(tuple(y.shape))
        dx = layer.backward(cupy.asarray(g))
        assert_close(dx, twin.backward(g), xp=cupy)
        for p, q in zip(layer.parameters(), twin.parameters()):
            assert_close(p.grad, q.grad, xp=cupy)
            assert_close(p.data, q.data, xp=cupy)


def test_a_training_step_on_device(cupy, rng):
    from gpuconv import nn

    def net(backend):
        return nn.Sequential(nn.Conv2D(1, 4, 3, padding=1, seed=0, backend=backend), nn.ReLU(),
                             nn.MaxPool2D(2), nn.Flatten(),
                             nn.Linear(4 * 4 * 4, 10, seed=0, backend=backend))

    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 10, size=5)
    results = {}
    for backend, xp in (("cupy", cupy), ("numpy", np)):
        model = net(backend)
        loss, grad = nn.cross_entropy(model(xp.asarray(x)), xp.asarray(labels))
        model.zero_grad()
        model.backward(grad)
        nn.SGD(model.parameters(), lr=0.1).step()
        assert type(loss) is float
        results[backend] = loss, [p.data for p in model.parameters()]
    assert results["cupy"][0] == pytest.approx(results["numpy"][0], rel=1e-5)
    for got, want in zip(results["cupy"][1], results["numpy"][1]):
        assert_close(got, want, scale=10, xp=cupy)


def test_dask_with_device_chunks(standin, rng):
    da = pytest.importorskip("dask.array", reason="dask[array] is not installed")
    dask = pytest.importorskip("dask")
    x = rng.standard_normal((4, 23, 17))
    k = rng.standard_normal((5, 4))
    w = rng.standard_normal((3, 4, 3, 3))
    with dask.config.set(scheduler="synchronous"):
        lazy = da.from_array(standin.asarray(x), chunks=(2, 9, 6), asarray=False)
        for boundary in ("fill", "wrap", "symm"):
            got = gpuconv.correlate2d(lazy, standin.asarray(k), "same", boundary, 0.5,
                                      method="direct").compute()
            want = on_numpy(gpuconv.correlate2d, x, k, "same", boundary, 0.5, method="direct")
            assert_close(got, want, xp=standin)
        images = da.from_array(standin.asarray(x[None].repeat(2, 0)), chunks=(1, 2, 12, 17),
                               asarray=False)
        got = gpuconv.conv2d(images, standin.asarray(w), padding=1, method="gemm").compute()
        assert_close(got, on_numpy(gpuconv.conv2d, x[None].repeat(2, 0), w, padding=1), xp=standin)


# -- the stand-in itself ------------------------------------------------------------

def test_every_blocking_conversion_is_counted(standin):
    x = standin.asarray(np.arange(4.0))
    conversions = {"get": lambda: x.get(), "bool": lambda: bool(x[1]),
                   "float": lambda: float(x[1]), "int": lambda: int(x[1]),
                   "complex": lambda: complex(x[1]), "item": lambda: x[1].item(),
                   "tolist": lambda: x.tolist(), "repr": lambda: repr(x),
                   "stream.synchronize": lambda: standin.cuda.get_current_stream().synchronize(),
                   "device.synchronize": lambda: standin.cuda.Device().synchronize()}
    for kind, convert in conversions.items():
        with cupy_standin.activity() as seen:
            convert()
        assert seen.syncs == {kind: 1}
    with cupy_standin.activity() as seen:
        standin.asnumpy(x)
        y = (x * 2 + 1).sum()
        standin.asarray(np.ones(2))
    assert seen.syncs == {"get": 1} and seen.to_host == 1 and seen.to_device == 1
    assert isinstance(y, standin.ndarray)


def test_device_is_an_h200(standin):
    props = standin.cuda.runtime.getDeviceProperties(0)
    assert props["name"] == b"NVIDIA H200"
    assert (props["major"], props["minor"]) == (9, 0)
    assert props["multiProcessorCount"] == 132
    assert props["clockRate"] == 1980000 and props["memoryClockRate"] == 3201000
    assert props["memoryBusWidth"] == 6144 and props["l2CacheSize"] == 60 * 2**20
    assert props["totalGlobalMem"] == 143771 * 2**20
    assert standin.cuda.runtime.getDeviceCount() == 1
    with pytest.raises(standin.cuda.runtime.CUDARuntimeError, match="invalid device"):
        standin.cuda.runtime.getDeviceProperties(1)
    assert gpuconv.backend.get_backend_object("cupy").device_key() == "NVIDIA H200"
    start, end = standin.cuda.Event(), standin.cuda.Event()
    start.record()
    end.record()
    assert standin.cuda.get_elapsed_time(start, end) >= 0


def test_kernels_take_device_arrays_and_write_them(standin, rng):
    from gpuconv import kernels

    fn = kernels.get_function("correlate_planes.cu", "correlate_planes", np.float32)
    x = rng.standard_normal((1, 8, 9)).astype(np.float32)
    w = rng.standard_normal((3, 3)).astype(np.float32)
    launch = kernels.planes_launch(x.shape, w.shape, (6, 7), (0, 0), "fill", 0.0)
    scalars = tuple(np.int32(a) if isinstance(a, int) else np.float64(a) for a in launch.args)
    out = standin.zeros((1, 6, 7), dtype=np.float32)
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        fn(launch.grid, launch.block, (x, standin.asarray(w), out) + scalars)
    with cupy_standin.activity() as seen:
        fn(launch.grid, launch.block, (standin.asarray(x), standin.asarray(w), out) + scalars)
    assert seen.launches == {"correlate_planes<float>": 1} and seen.total_syncs == 0
    want = on_numpy(gpuconv.correlate2d, x, w, "valid", method="direct")
    assert_close(out, want, xp=standin)
    with pytest.raises(NotImplementedError, match="gpuconv's own .cu kernels"):
        standin.RawModule(code="__global__ void k() {}")


def test_backend_fixtures_cupy_is_the_standin(standin, backend, rng):
    x = rng.standard_normal((5, 5))
    got = gpuconv.correlate2d(x, np.ones((2, 2)))
    if backend.name == "cupy":
        assert backend.xp is standin and type(got) is standin.ndarray
    assert_close(got, scipy.signal.correlate2d(x, np.ones((2, 2))), xp=backend.xp)


def test_installing_is_reversible_and_never_leaks():
    # Importing gpuconv, its CuPy backend and the stand-in package installs nothing;
    # install() and uninstall() swap the modules and gpuconv's view of them.
    code = f"""
import json, sys
sys.path.insert(0, {str(TESTS)!r})
import gpuconv, gpuconv.backends.cupy, cupy_standin
report = {{"after_import": sorted(m for m in sys.modules if m.split('.')[0] in ('cupy', 'cupyx'))}}
cupy_standin.install()
import cupy
report["installed"] = [cupy_standin.installed(), getattr(cupy, "__standin__", False),
                       gpuconv.available_backends()["cupy"].usable]
cupy_standin.uninstall()
report["after_uninstall"] = [cupy_standin.installed(),
                             sorted(m for m in sys.modules if m.split('.')[0] == 'cupy')]
try:
    import cupy
    report["plain_import"] = getattr(cupy, "__standin__", False)
except ImportError:
    report["plain_import"] = "not installed"
print(json.dumps(report))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["after_import"] == []
    assert report["installed"] == [True, True, True]
    assert report["after_uninstall"] == [False, []]
    assert report["plain_import"] in (False, "not installed")


def test_subprocesses_of_a_standin_session_get_the_real_cupy(standin):
    code = ("import json\ntry:\n    import cupy\n    print(json.dumps(getattr(cupy, "
            "'__standin__', False)))\nexcept ImportError:\n    print(json.dumps(None))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert json.loads(out.stdout) in (False, None)
    with cupy_standin.suspended():
        assert not cupy_standin.installed()
        assert getattr(sys.modules.get("cupy"), "__standin__", False) is False
    assert cupy_standin.installed() and sys.modules["cupy"] is standin


# -- auto on a GPU before any calibration ------------------------------------------------
@pytest.mark.parametrize("case, expected", [
    # Memory-bound 3x3 planes: the direct kernel (one pass over the image).
    (("correlate2d", (4096, 4096), (3, 3), {"mode": "same"}), {"direct"}),
    (("correlate2d", (8192, 8192), (3, 3), {"mode": "same"}), {"direct"}),
    (("correlate2d", (64, 512, 512), (5, 5), {"mode": "same"}), {"direct"}),
    # Large kernels on large planes: an FFT method.
    (("correlate2d", (4096, 4096), (31, 31), {"mode": "valid"}), {"fft", "overlap-add"}),
    # Deep conv layers: cuBLAS; small ones: the single launch of the direct kernel.
    (("conv2d", (32, 64, 56, 56), (64, 64, 3, 3), {"padding": 1}), {"gemm"}),
    # (The model calls this one a tie: the GPU run's calibration will decide.)
    (("conv2d", (32, 64, 28, 28), (64, 64, 3, 3), {"padding": 1}), {"gemm", "direct"}),
    (("conv2d", (8, 256, 14, 14), (256, 256, 3, 3), {"padding": 1}), {"gemm"}),
    (("conv2d", (32, 1, 28, 28), (6, 1, 5, 5), {}), {"direct"}),
])
def test_auto_on_an_uncalibrated_h200_from_its_properties(standin, tmp_path, monkeypatch,
                                                          case, expected):
    from gpuconv import _choose

    monkeypatch.setenv("GPUCONV_CACHE_DIR", str(tmp_path))  # no calibration file
    _choose.clear_measured()
    op, x_shape, w_shape, kwargs = case
    x = standin.zeros(x_shape, dtype=np.float32)
    w = standin.zeros(w_shape, dtype=np.float32)
    choice = gpuconv.choose_method(op, x, w, **kwargs)
    assert choice.method in expected, choice
    assert "derived from the device's properties" in choice.reason
    backend = gpuconv.backend.get_backend_object("cupy")
    props = backend.device_properties()
    # An H200: 2 x 3.201 GHz x 6144 bits of HBM3e, 132 SMs x 128 lanes x 1.98 GHz.
    assert props["bandwidth"] == pytest.approx(4.92e12, rel=0.01)
    assert props["fma_rate"] == pytest.approx(33.45e12, rel=0.01)

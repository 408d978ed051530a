"""Arrays of other libraries in and out, and backends that claim their array types.

* Under ``"auto"`` an input of a library no backend claims that exports DLPack
  (torch tensors first) is imported without a copy, computed on the backend of
  its device, and returned in its own library.  The torch tests skip where
  torch is missing (CI's test extra); each behaviour that matters has a
  torch-free twin with ``dlfake``, a tiny DLPack-exporting array library
  defined here over NumPy.
* ``register_backend(..., array_types=...)`` claims types for ``"auto"``.
* ``register_backend`` checks what a factory returns against the protocol.

Oracles: the same op on NumPy arrays (the path these calls must reproduce,
compared exactly), and PyTorch's own functional ops where torch is here.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.signal

import gpuconv
from gpuconv import _dispatch, _foreign
from gpuconv import backend as registry
from gpuconv.backends import ArrayBackend
from gpuconv.backends.numpy import NumpyBackend


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="torch is not installed (it is no test "
                                               "dependency): the dlfake twins cover this")


@pytest.fixture
def spy(monkeypatch):
    """Record the backend arrays each foreign input became and each result exported."""
    seen = {"imported": [], "exported": []}
    real_import, real_export = _foreign._import, _foreign._export

    def record_import(backend, argname, library, value):
        arr = real_import(backend, argname, library, value)
        seen["imported"].append(arr)
        return arr

    def record_export(result, *args):
        seen["exported"].append(result)
        return real_export(result, *args)

    monkeypatch.setattr(_foreign, "_import", record_import)
    monkeypatch.setattr(_foreign, "_export", record_export)
    return seen


# -- the public ops, one call each -------------------------------------------------

def _ops(rng, dtype=np.float64):
    """(name, call, arrays): every public op with array arguments, on fresh inputs."""
    dtype = np.dtype(dtype)

    def arr(*shape):
        if dtype.kind == "b":
            return rng.standard_normal(shape) > 0
        if dtype.kind in "iu":
            return rng.integers(0 if dtype.kind == "u" else -4, 5, shape).astype(dtype)
        a = rng.standard_normal(shape)
        if dtype.kind == "c":
            a = a + 1j * rng.standard_normal(shape)
        return a.astype(dtype)

    return [
        ("correlate2d", lambda a, b: gpuconv.correlate2d(a, b, "same", "symm"),
         (arr(2, 7, 6), arr(3, 2))),
        ("convolve2d", lambda a, b: gpuconv.convolve2d(a, b), (arr(7, 6), arr(3, 2))),
        ("corr2d", gpuconv.corr2d, (arr(6, 5), arr(2, 3))),
        ("conv2d", lambda x, w, b: gpuconv.conv2d(x, w, b, stride=2, padding=1),
         (arr(2, 3, 8, 7), arr(4, 3, 3, 3), arr(4))),
        ("conv_transpose2d", lambda x, w: gpuconv.conv_transpose2d(x, w, stride=2),
         (arr(2, 3, 5, 4), arr(3, 2, 3, 3))),
        ("avg_pool2d", lambda x: gpuconv.avg_pool2d(x, 2, padding=1), (arr(2, 3, 6, 5),)),
    ] + ([] if dtype.kind in "cb" else [
        ("max_pool2d", lambda x: gpuconv.max_pool2d(x, 3, 2, 1, return_indices=True),
         (arr(2, 3, 7, 6),)),
    ])


def _assert_same(got, expected):
    """``got`` (exported back to NumPy) equals the NumPy computation exactly, dtype too."""
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


# -- torch ---------------------------------------------------------------------------

TORCH_DTYPES = ["float32", "float64", "float16", "complex64", "complex128", "int32", "int64",
                "uint8", "bool"]


@pytest.mark.parametrize("dtype", TORCH_DTYPES)
def test_torch_tensors_in_every_op_come_back_as_tensors(torch, rng, dtype):
    for name, call, arrays in _ops(rng, dtype):
        got = call(*(torch.from_numpy(a) for a in arrays))
        expected = call(*arrays)
        if name == "max_pool2d":
            (got, got_indices), (expected, indices) = got, expected
            assert isinstance(got_indices, torch.Tensor)
            _assert_same(got_indices.numpy(), indices)
        assert isinstance(got, torch.Tensor), name
        _assert_same(got.numpy(), expected)


def test_torch_results_match_torch_itself(torch, rng):
    F = torch.nn.functional
    x = torch.from_numpy(rng.standard_normal((2, 3, 9, 8)))
    w = torch.from_numpy(rng.standard_normal((4, 3, 3, 2)))
    b = torch.from_numpy(rng.standard_normal(4))
    torch.testing.assert_close(gpuconv.conv2d(x, w, b, stride=2, padding=1),
                               F.conv2d(x, w, b, stride=2, padding=1))
    wt = torch.from_numpy(rng.standard_normal((3, 2, 3, 3)))
    torch.testing.assert_close(gpuconv.conv_transpose2d(x, wt, stride=2, output_padding=1),
                               F.conv_transpose2d(x, wt, stride=2, output_padding=1))
    out, idx = gpuconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    ref_out, ref_idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    torch.testing.assert_close(out, ref_out)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(gpuconv.avg_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 3, 2, 1))


def test_choose_method_takes_tensors(torch, rng):
    x = rng.standard_normal((1, 3, 32, 32))
    w = rng.standard_normal((4, 3, 3, 3))
    got = gpuconv.choose_method("conv2d", torch.from_numpy(x), torch.from_numpy(w))
    assert got == gpuconv.choose_method("conv2d", x, w)
    got = gpuconv.choose_method("correlate2d", torch.from_numpy(x[0, 0]),
                                torch.from_numpy(w[0, 0]), measure=True)
    assert got.method in got.measured


def test_torch_in_and_out_without_copies(torch, rng, spy):
    x = torch.from_numpy(rng.standard_normal((2, 3, 8, 8)))
    w = torch.from_numpy(rng.standard_normal((4, 3, 3, 3)))
    out = gpuconv.conv2d(x, w, padding=1)
    imported_x, imported_w = spy["imported"]
    assert np.shares_memory(imported_x, x.numpy()) and np.shares_memory(imported_w, w.numpy())
    (result,) = spy["exported"]
    assert out.data_ptr() == result.ctypes.data
    assert np.shares_memory(out.numpy(), result)


def test_non_contiguous_tensors_are_read_in_place(torch, rng, spy):
    base = rng.standard_normal((3, 9, 10))
    for view, ref in [(lambda t: t.transpose(-1, -2), lambda a: a.swapaxes(-1, -2)),
                      (lambda t: t[:, 1::2, ::3], lambda a: a[:, 1::2, ::3]),
                      (lambda t: t[:1].expand(4, 9, 10), lambda a: np.broadcast_to(a[:1],
                                                                                (4, 9, 10)))]:
        spy["imported"].clear()
        t = view(torch.from_numpy(base))
        assert not t.is_contiguous()
        k = rng.standard_normal((2, 3))
        got = gpuconv.correlate2d(t, torch.from_numpy(k), "same")
        assert np.shares_memory(spy["imported"][0], base)
        _assert_same(got.numpy(), gpuconv.correlate2d(ref(base), k, "same"))


def test_lazy_conjugate_views_are_resolved(torch, rng):
    x = rng.standard_normal((6, 6)) + 1j * rng.standard_normal((6, 6))
    k = rng.standard_normal((2, 2)) + 1j * rng.standard_normal((2, 2))
    t = torch.from_numpy(x).conj()
    assert t.is_conj()
    got = gpuconv.correlate2d(t, torch.from_numpy(k))
    _assert_same(got.numpy(), gpuconv.correlate2d(np.conj(x), k))


def test_bfloat16_computes_in_float32_and_comes_back_bfloat16(torch, rng):
    x = torch.from_numpy(rng.standard_normal((2, 3, 8, 8)).astype(np.float32)).bfloat16()
    w = torch.from_numpy(rng.standard_normal((4, 3, 3, 3)).astype(np.float32)).bfloat16()
    got = gpuconv.conv2d(x, w, padding=1)
    assert got.dtype == torch.bfloat16
    expected = gpuconv.conv2d(x.float().numpy(), w.float().numpy(), padding=1)
    assert torch.equal(got, torch.from_numpy(expected).bfloat16())
    pooled = gpuconv.avg_pool2d(x, 2)
    assert pooled.dtype == torch.bfloat16
    assert torch.equal(pooled, torch.from_numpy(gpuconv.avg_pool2d(x.float().numpy(),
                                                                   2)).bfloat16())
    # With a float32 argument alongside, float32 comes back, as torch promotes.
    mixed = gpuconv.conv2d(x, w.float(), padding=1)
    assert mixed.dtype == torch.float32
    np.testing.assert_array_equal(mixed.numpy(), expected)
    # max_pool2d's indices stay int64.
    out, idx = gpuconv.max_pool2d(x, 2, return_indices=True)
    assert out.dtype == torch.bfloat16 and idx.dtype == torch.int64


def test_a_tensor_that_requires_grad_is_refused_by_name(torch, rng):
    x = torch.ones(1, 2, 5, 5)
    w = torch.ones(3, 2, 3, 3)
    for call, name in [({"input": x.clone().requires_grad_(), "weight": w}, "input"),
                       ({"input": x, "weight": torch.nn.Parameter(w)}, "weight")]:
        with pytest.raises(TypeError, match=rf"{name} is a torch array with requires_grad=True;"
                                            rf" gpuconv does not track gradients.*"
                                            rf"{name}\.detach\(\)"):
            gpuconv.conv2d(**call)
    with pytest.raises(TypeError, match=r"bias is a torch array with requires_grad"):
        gpuconv.conv2d(x, w, torch.zeros(3, requires_grad=True))
    # Also when a backend is chosen: the gradient would be lost just the same.
    with gpuconv.set_backend("numpy"), pytest.raises(TypeError, match=r"in1 .*detach"):
        gpuconv.correlate2d(torch.ones(4, 4, requires_grad=True), np.ones((2, 2)))
    # Detached, the same call runs.
    got = gpuconv.conv2d(torch.nn.Parameter(w).detach(), w)
    assert isinstance(got, torch.Tensor) and not got.requires_grad


def test_torch_and_numpy_in_one_call(torch, rng):
    x = rng.standard_normal((6, 6))
    k = rng.standard_normal((2, 2))
    with pytest.raises(TypeError, match=r"in1 is a torch array, in2 is a numpy array\); pass "
                                        r"arrays of one library.*set_backend"):
        gpuconv.correlate2d(torch.from_numpy(x), k)
    with pytest.raises(TypeError, match=r"input is a numpy array, weight is a torch array"):
        gpuconv.conv2d(np.ones((1, 1, 4, 4)), torch.ones(1, 1, 2, 2))
    # Lists and scalars follow the tensor.
    got = gpuconv.correlate2d(torch.from_numpy(x), k.tolist())
    assert isinstance(got, torch.Tensor)
    _assert_same(got.numpy(), gpuconv.correlate2d(x, k))
    # A chosen backend takes both and returns its own array.
    with gpuconv.set_backend("numpy"):
        got = gpuconv.correlate2d(torch.from_numpy(x), k)
    assert type(got) is np.ndarray
    _assert_same(got, gpuconv.correlate2d(x, k))


def test_explicit_backend_returns_its_arrays_also_for_bfloat16(torch, rng):
    x = torch.from_numpy(rng.standard_normal((1, 2, 6, 6)).astype(np.float32))
    w = torch.from_numpy(rng.standard_normal((3, 2, 3, 3)).astype(np.float32))
    with gpuconv.set_backend("numpy"):
        got = gpuconv.conv2d(x.bfloat16(), w.bfloat16())
    assert type(got) is np.ndarray and got.dtype == np.float32
    _assert_same(got, gpuconv.conv2d(x.bfloat16().float().numpy(), w.bfloat16().float().numpy()))


def test_a_tensor_on_a_device_without_backend_is_refused_by_name(torch):
    meta = torch.empty(1, 1, 4, 4, device="meta")
    with pytest.raises(TypeError, match=r"input is a torch array on device 'meta'.*move it"):
        gpuconv.conv2d(meta, torch.ones(1, 1, 2, 2))
    with gpuconv.set_backend("numpy"), pytest.raises(TypeError, match=r"input .* 'meta'"):
        gpuconv.max_pool2d(meta, 2)


def test_a_0d_tensor_fill_value(torch, rng):
    x = rng.standard_normal((5, 5))
    got = gpuconv.correlate2d(torch.from_numpy(x), torch.ones(2, 2, dtype=torch.float64),
                              fillvalue=torch.tensor(2.5))
    _assert_same(got.numpy(), gpuconv.correlate2d(x, np.ones((2, 2)), fillvalue=2.5))


# -- dlfake: a DLPack-exporting library over NumPy, for the torch-free twins ----------

class DLArray:
    """An array of the ``dlfake`` library: NumPy memory behind the DLPack protocol only."""

    def __init__(self, data, device=(1, 0), requires_grad=False):
        self.data = data
        self.device_code = device
        self.requires_grad = requires_grad

    dtype = property(lambda self: self.data.dtype)
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    device = property(lambda self: {1: "cpu", 2: "cuda:0", 8: "metal:0"}[self.device_code[0]])

    def __dlpack__(self, **kwargs):
        return self.data.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.device_code


DLArray.__module__ = "dlfake"


def _dlfake_from_dlpack(x):
    return DLArray(np.from_dlpack(x))


@pytest.fixture
def dlfake(monkeypatch):
    module = types.ModuleType("dlfake")
    module.DLArray = DLArray
    module.from_dlpack = _dlfake_from_dlpack
    monkeypatch.setitem(sys.modules, "dlfake", module)
    return module


def test_an_unclaimed_dlpack_type_is_foreign(dlfake):
    a = DLArray(np.ones((2, 2)))
    assert _dispatch.array_library(a) == "dlfake"
    assert _dispatch.is_foreign(a) and not _dispatch.is_claimed(a)
    assert not _dispatch.is_foreign(np.ones(2)) and _dispatch.is_claimed(np.ones(2))
    assert not _dispatch.is_foreign([1.0]) and _dispatch.array_library([1.0]) is None
    assert registry.backend_for("auto", x=a).name == "numpy"


def test_dlpack_arrays_in_every_op_come_back_in_their_library(dlfake, rng, spy):
    for name, call, arrays in _ops(rng) + _ops(rng, np.complex64) + _ops(rng, np.int16):
        spy["imported"].clear()
        spy["exported"].clear()
        got = call(*(DLArray(a) for a in arrays))
        expected = call(*arrays)
        if name == "max_pool2d":
            (got, got_indices), (expected, indices) = got, expected
            assert type(got_indices) is DLArray
            _assert_same(got_indices.data, indices)
        assert type(got) is DLArray, name
        _assert_same(got.data, expected)
        # In and out without a copy.
        assert all(np.shares_memory(i, a) for i, a in zip(spy["imported"], arrays))
        exported = spy["exported"][0]
        assert np.shares_memory(got.data, exported[0] if name == "max_pool2d" else exported)
    x = rng.standard_normal((1, 2, 7, 7))
    w = rng.standard_normal((3, 2, 3, 3))
    assert (gpuconv.choose_method("conv2d", DLArray(x), DLArray(w))
            == gpuconv.choose_method("conv2d", x, w))


def test_results_with_negative_strides_are_exported_contiguous(dlfake, rng):
    # torch.from_dlpack of a NumPy view with negative strides aborts the process (torch
    # 2.13); the ops' results are contiguous today, and a view is copied before export.
    flipped = rng.standard_normal((4, 5))[::-1, ::-1]
    numpy_backend = registry.get_backend_object("numpy")
    got = _foreign._export((flipped, flipped[0]), numpy_backend, dlfake, _foreign._GENERIC,
                           False)
    assert all(type(g) is DLArray and g.data.flags.c_contiguous for g in got)
    np.testing.assert_array_equal(got[0].data, flipped)
    np.testing.assert_array_equal(got[1].data, flipped[0])


def test_read_only_results_are_exported(dlfake, monkeypatch, rng):
    calls = []

    def strict_from_dlpack(x):
        calls.append(x)
        if not x.flags.writeable:
            raise BufferError("cannot signal read-only")
        return DLArray(np.from_dlpack(x))

    monkeypatch.setattr(dlfake, "from_dlpack", strict_from_dlpack)
    frozen = rng.standard_normal((3, 3))
    frozen.flags.writeable = False
    got = _foreign._export(frozen, registry.get_backend_object("numpy"), dlfake,
                           _foreign._GENERIC, False)
    np.testing.assert_array_equal(got.data, frozen)
    assert len(calls) == 2 and calls[1].flags.writeable


def test_dlpack_array_requiring_grad_is_refused_by_name(dlfake):
    with pytest.raises(TypeError, match=r"in2 is a dlfake array with requires_grad=True; "
                                        r"gpuconv does not track gradients.*in2\.detach\(\)"):
        gpuconv.correlate2d(DLArray(np.ones((4, 4))), DLArray(np.ones((2, 2)),
                                                              requires_grad=True))


def test_dlpack_array_on_a_device_without_backend_is_refused_by_name(dlfake):
    metal = DLArray(np.ones((1, 1, 4, 4)), device=(8, 0))
    with pytest.raises(TypeError, match=r"input is a dlfake array on device 'metal:0' "
                                        r"\(DLPack device type 8\), where no gpuconv backend "
                                        r"computes"):
        gpuconv.avg_pool2d(metal, 2)


def test_dlpack_arrays_on_two_devices_are_refused(dlfake):
    cpu = DLArray(np.ones((4, 4)))
    cuda = DLArray(np.ones((2, 2)), device=(2, 0))
    with pytest.raises(TypeError, match=r"several devices.*in1 is on device 'cpu', in2 is on "
                                        r"device 'cuda:0'"):
        gpuconv.correlate2d(cpu, cuda)


def test_dlpack_and_numpy_in_one_call(dlfake, rng):
    x = rng.standard_normal((5, 5))
    with pytest.raises(TypeError, match=r"in1 is a dlfake array, in2 is a numpy array"):
        gpuconv.correlate2d(DLArray(x), np.ones((2, 2)))
    with gpuconv.set_backend("numpy"):
        got = gpuconv.correlate2d(DLArray(x), np.ones((2, 2)))
    assert type(got) is np.ndarray
    _assert_same(got, gpuconv.correlate2d(x, np.ones((2, 2))))


def test_a_library_without_from_dlpack_gets_the_backend_array(dlfake, monkeypatch, rng):
    monkeypatch.delattr(dlfake, "from_dlpack")
    x = rng.standard_normal((5, 5))
    got = gpuconv.correlate2d(DLArray(x), [[1.0, 2.0]])
    assert type(got) is np.ndarray
    _assert_same(got, gpuconv.correlate2d(x, [[1.0, 2.0]]))


def test_dlpack_array_on_a_cuda_device_goes_to_the_cupy_backend(dlfake, monkeypatch, rng):
    try:
        cupy_backend = registry.get_backend_object("cupy")
    except gpuconv.BackendUnavailableError as exc:
        pytest.skip(f"the cupy backend cannot run here: {exc}")
    cp = cupy_backend.xp
    # DLPack from a fake CUDA device: the backend's from_dlpack reads the memory directly.
    monkeypatch.setattr(cp, "from_dlpack", lambda x: cp.asarray(x.data), raising=False)
    monkeypatch.setattr(dlfake, "from_dlpack", lambda x: DLArray(x, device=(2, 0)))
    x = rng.standard_normal((1, 2, 6, 6))
    w = rng.standard_normal((3, 2, 3, 3))
    got = gpuconv.conv2d(DLArray(x, device=(2, 0)), DLArray(w, device=(2, 0)), padding=1)
    assert type(got) is DLArray and isinstance(got.data, cp.ndarray)
    np.testing.assert_allclose(cupy_backend.to_numpy(got.data),
                               gpuconv.conv2d(x, w, padding=1), rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
def test_cuda_tensors_compute_on_cupy_and_come_back_on_their_device(torch, rng):
    import cupy_standin

    if cupy_standin.installed() or not torch.cuda.is_available():
        pytest.skip("needs a CUDA device for both torch and the real CuPy")
    x = torch.from_numpy(rng.standard_normal((2, 3, 16, 16))).cuda()
    w = torch.from_numpy(rng.standard_normal((4, 3, 3, 3))).cuda()
    got = gpuconv.conv2d(x, w, padding=1)
    assert isinstance(got, torch.Tensor) and got.device == x.device
    torch.testing.assert_close(got, torch.nn.functional.conv2d(x, w, padding=1))
    y16 = gpuconv.avg_pool2d(x.bfloat16(), 2)
    assert y16.dtype == torch.bfloat16 and y16.device == x.device
    with pytest.raises(TypeError, match=r"in1 is on device 'cpu', in2 is on device 'cuda:0'"):
        gpuconv.correlate2d(x[0, 0].cpu(), w[0, 0])


def test_an_array_that_fails_to_export_is_refused_by_name(dlfake):
    class Broken(DLArray):
        def __dlpack__(self, **kwargs):
            raise BufferError("cannot export this one")

    Broken.__module__ = "dlfake"
    with pytest.raises(TypeError, match=r"weight is a dlfake array of dtype float64 that "
                                        r"backend 'numpy' could not import through DLPack: "
                                        r"cannot export this one"):
        gpuconv.conv2d(DLArray(np.ones((1, 1, 3, 3))), Broken(np.ones((1, 1, 2, 2))))


def test_dask_arrays_are_not_foreign():
    da = pytest.importorskip("dask.array", reason="dask is not installed")
    x = da.ones((6, 6), chunks=3)
    assert _dispatch.array_library(x) == "dask" and not _dispatch.is_foreign(x)
    assert _dispatch.chunk_array_library(x) == "numpy"


# -- backends that claim their array types -------------------------------------------

class TagArray(np.ndarray):
    """Arrays of a pretend third-party library, ``taglib`` (NumPy underneath)."""


class TagBackend(ArrayBackend):
    """Computes with NumPy, returns TagArray."""

    name = "tag"
    xp = np

    def asarray(self, x):
        return np.asarray(x).view(TagArray)

    def correlate_planes(self, *args):
        return super().correlate_planes(*args).view(TagArray)


@contextlib.contextmanager
def registered(name, factory, **options):
    gpuconv.register_backend(name, factory, **options)
    try:
        yield
    finally:
        registry._unregister_backend(name)


@pytest.fixture
def taglib(monkeypatch):
    module = types.ModuleType("taglib")
    module.TagArray = TagArray
    module.sub = types.SimpleNamespace(TagArray=TagArray)
    monkeypatch.setitem(sys.modules, "taglib", module)
    return lambda a: np.asarray(a).view(TagArray)


def test_a_backend_claiming_its_type_is_reached_by_auto(taglib, rng):
    x = rng.standard_normal((6, 5))
    k = rng.standard_normal((2, 2))
    assert _dispatch.array_library(taglib(x)) == "numpy"  # unclaimed: a NumPy subclass
    with registered("tag", TagBackend, array_types=[("taglib", "TagArray")]):
        assert _dispatch.array_library(taglib(x)) == "tag"
        got = gpuconv.correlate2d(taglib(x), taglib(k), method="direct")
        assert type(got) is TagArray
        np.testing.assert_allclose(got, scipy.signal.correlate2d(x, k), rtol=1e-12)
        # Plain NumPy arrays still belong to NumPy: the most derived claim wins.
        assert type(gpuconv.correlate2d(x, k)) is np.ndarray
        with pytest.raises(TypeError, match=r"in1 is a tag array, in2 is a numpy array"):
            gpuconv.correlate2d(taglib(x), k)
    # Unregistered, the claim is gone (the type cache with it).
    assert _dispatch.array_library(taglib(x)) == "numpy"


def test_claims_by_dotted_name_and_by_predicate(taglib, rng):
    x = taglib(rng.standard_normal((4, 4)))
    with registered("tag", TagBackend, array_types=[("taglib", "sub.TagArray")]):
        assert _dispatch.array_library(x) == "tag"
    # A predicate is asked about the types no pair claims: here, a DLPack type.
    seen = []

    def is_dlarray(cls):
        seen.append(cls)
        return cls.__name__ == "DLArray"

    a = DLArray(np.ones((2, 2)))
    assert _dispatch.is_foreign(a)
    with registered("tag", TagBackend, array_types=is_dlarray):
        assert _dispatch.array_library(a) == "tag" and _dispatch.is_claimed(a)
        assert _dispatch.array_library(x) == "numpy"  # NumPy's pair claims the subclass
        assert _dispatch.array_library(np.ones(2)) == "numpy"
    assert DLArray in seen and np.ndarray not in seen
    assert _dispatch.is_foreign(a)


def test_a_claim_never_imports_its_module():
    # colorsys stands for a library that is installed but not imported.
    code = """
import sys
import gpuconv
from gpuconv.backends.numpy import NumpyBackend
sys.modules.pop("colorsys", None)
gpuconv.register_backend("unimported", NumpyBackend, array_types=[("colorsys", "Color")])
gpuconv.correlate2d([[1.0, 2.0]], [[1.0]])
import numpy as np
gpuconv.correlate2d(np.ones((3, 3)), np.ones((2, 2)))
print("colorsys" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_re_registering_keeps_or_replaces_the_claim(taglib):
    x = taglib(np.ones((3, 3)))
    with registered("tag", TagBackend, array_types=[("taglib", "TagArray")]):
        gpuconv.register_backend("tag", TagBackend, replace=True)   # claims kept
        assert _dispatch.array_library(x) == "tag"
        gpuconv.register_backend("tag", TagBackend, replace=True, array_types=())
        assert _dispatch.array_library(x) == "numpy"                # claims dropped
        gpuconv.register_backend("tag", TagBackend, replace=True,
                                 array_types=[("taglib", "TagArray")])
        assert _dispatch.array_library(x) == "tag"


def test_a_type_claimed_twice_is_refused(taglib):
    with registered("tag", TagBackend, array_types=[("taglib", "TagArray")]):
        with pytest.raises(ValueError, match=r"taglib\.TagArray is already claimed by backend "
                                             r"'tag'"):
            gpuconv.register_backend("tag2", TagBackend, array_types=[("taglib", "TagArray")])
        assert "tag2" not in gpuconv.available_backends()
    with pytest.raises(ValueError, match=r"numpy\.ndarray is already claimed by backend "
                                         r"'numpy'"):
        gpuconv.register_backend("numpy2", NumpyBackend, array_types=[("numpy", "ndarray")])


@pytest.mark.parametrize("bad", ["numpy.ndarray", [("numpy",)], [("numpy", 3)], [("", "x")],
                                 42])
def test_array_types_must_be_pairs_of_names_or_a_predicate(bad):
    with pytest.raises(TypeError, match=r"array_types must be \(module, class\) pairs of str"):
        gpuconv.register_backend("bad-claim", NumpyBackend, array_types=bad)
    assert "bad-claim" not in gpuconv.available_backends()


def test_the_built_in_libraries_are_claims_in_the_same_table():
    claims = _dispatch._claims
    assert claims["numpy"].pairs == (("numpy", "ndarray"),)
    assert claims["cupy"].pairs == (("cupy", "ndarray"),)
    assert claims["dask"].pairs == (("dask.array", "Array"),)
    assert _dispatch._deferred == {"dask": "gpuconv._dask"}


# -- what a factory returns is checked ------------------------------------------------

def _returns_none():
    return None


class NoConv2d:
    """Has every member of the protocol but conv2d and conv_transpose2d."""

    name = "no-conv2d"
    xp = np
    fft = None


for _member in ("asarray", "to_numpy", "device_key", "synchronize", "correlate_planes",
                "conv2d_weight_grad", "max_pool2d", "avg_pool2d"):
    setattr(NoConv2d, _member, lambda self, *args: None)


def test_a_factory_returning_none_is_a_type_error_naming_it():
    with registered("none-backend", _returns_none):
        for _ in range(2):   # remembered: the second use says the same
            with pytest.raises(TypeError, match=r"backend 'none-backend': its factory "
                                                r"test_interop\._returns_none returned None, "
                                                r"which is not a gpuconv backend: it lacks "
                                                r"asarray, avg_pool2d, conv2d.*ArrayBackend"):
                gpuconv.set_backend("none-backend")
        status = gpuconv.available_backends()["none-backend"]
        assert not status.usable and "returned None" in status.reason


def test_a_factory_missing_kernels_is_a_type_error_listing_them():
    calls = []

    def factory():
        calls.append(1)
        return NoConv2d()

    with registered("no-conv2d", factory):
        for _ in range(2):
            with pytest.raises(TypeError, match=r"factory .*factory returned a "
                                                r"test_interop\.NoConv2d, which is not a "
                                                r"gpuconv backend: it lacks conv2d, "
                                                r"conv_transpose2d of"):
                gpuconv.set_backend("no-conv2d")
        assert calls == [1]
        # Fixed by registering again.
        gpuconv.register_backend("no-conv2d", NumpyBackend, replace=True)
        assert gpuconv.available_backends()["no-conv2d"].usable


def test_an_array_backend_subclass_needs_nothing_more():
    class Minimal(ArrayBackend):
        name = "minimal"
        xp = np

    with registered("minimal", Minimal), gpuconv.set_backend("minimal"):
        got = gpuconv.correlate2d(np.eye(3), np.ones((2, 2)), method="direct")
        np.testing.assert_array_equal(got, scipy.signal.correlate2d(np.eye(3), np.ones((2, 2))))


def test_a_factory_that_cannot_run_still_says_why():
    def factory():
        raise gpuconv.BackendUnavailableError("the frobnicator is unplugged")

    with registered("frob", factory):
        for _ in range(2):
            with pytest.raises(gpuconv.BackendUnavailableError,
                               match=r"backend 'frob' is not usable: the frobnicator"):
                gpuconv.set_backend("frob")


# -- import hygiene -------------------------------------------------------------------

def test_foreign_arrays_import_no_optional_library():
    code = """
import json, sys
import numpy as np
import gpuconv

class DL:
    def __init__(self, a): self.a = a; self.dtype = a.dtype; self.shape = a.shape
    def __dlpack__(self, **kw): return self.a.__dlpack__(**kw)
    def __dlpack_device__(self): return (1, 0)

for wrap in (lambda a: a, DL):
    x, w = wrap(np.ones((1, 2, 6, 6))), wrap(np.ones((3, 2, 3, 3)))
    gpuconv.conv2d(x, w)
    gpuconv.conv_transpose2d(x, wrap(np.ones((2, 3, 3, 3))))
    gpuconv.max_pool2d(x, 2, return_indices=True)
    gpuconv.avg_pool2d(x, 2)
    gpuconv.choose_method("conv2d", x, w)
    gpuconv.correlate2d(wrap(np.ones((4, 4))), [[1.0, 2.0]])
    gpuconv.convolve2d(wrap(np.ones((4, 4))), wrap(np.ones((2, 2))))
print(json.dumps(sorted(m for m in ("torch", "cupy", "dask", "jax") if m in sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []

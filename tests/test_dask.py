"""Dask arrays through the public ops: lazy results equal to the in-memory call on any chunking.

These run on dask's local schedulers (fast, in-process); tests/test_dask_cluster.py
runs the same ops on a real multi-process cluster.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason="dask[array] is not installed (the 'dask' extra)")
dask = pytest.importorskip("dask")
scipy_signal = pytest.importorskip("scipy.signal")

import gpuconv  # noqa: E402
from gpuconv._dask import anchor_chunks, extend_axis  # noqa: E402
from gpuconv.backends.numpy import NumpyBackend  # noqa: E402

from conftest import assert_close, random_array  # noqa: E402


@pytest.fixture(autouse=True)
def synchronous_scheduler():
    """In-process and deterministic; the threaded scheduler is tested where it matters."""
    with dask.config.set(scheduler="synchronous"):
        yield


# Chunkings of a (13, 17) plane: dividing (13 = 13, 17 = 17), not dividing,
# smaller than a 7-tap halo, and one chunk.
CHUNKINGS = {
    "uneven": (5, 6),
    "tiny": (2, 3),
    "single": (13, 17),
    "ragged": ((4, 1, 8), (9, 8)),
}


def _as_dask(x, plane_chunks, batch_chunks=1):
    if isinstance(plane_chunks[0], tuple):
        chunks = ((batch_chunks,) * (x.shape[0] // batch_chunks),) + plane_chunks
    else:
        chunks = (batch_chunks,) + tuple(plane_chunks)
    return da.from_array(x, chunks=chunks)


@pytest.mark.parametrize("convolution", [False, True], ids=["correlate", "convolve"])
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("chunking", list(CHUNKINGS))
def test_planes_bit_identical_to_in_memory(rng, mode, boundary, convolution, chunking):
    """Same samples, same summation order per output: equal to the last bit (direct method)."""
    op = gpuconv.convolve2d if convolution else gpuconv.correlate2d
    x = rng.standard_normal((2, 13, 17))
    k = rng.standard_normal((7, 4))        # even width: 'same' centres differ for the two ops
    expected = op(x, k, mode, boundary, 0.75, method="direct")
    lazy = op(_as_dask(x, CHUNKINGS[chunking]), k, mode, boundary, 0.75, method="direct")
    assert isinstance(lazy, da.Array)
    assert lazy.shape == expected.shape and lazy.dtype == expected.dtype
    got = lazy.compute()
    np.testing.assert_array_equal(got, expected)
    # And independently right: SciPy, plane by plane.
    scipy_op = scipy_signal.convolve2d if convolution else scipy_signal.correlate2d
    oracle = np.stack([scipy_op(p, k, mode, boundary, 0.75) for p in x])
    assert_close(got, oracle, np.float64)


@pytest.mark.parametrize("mode", ["full", "same"])
@pytest.mark.parametrize("boundary", ["wrap", "symm"])
def test_extension_wider_than_the_image(rng, mode, boundary):
    """A kernel larger than the planes: the wrapped/mirrored border repeats the image."""
    x = rng.standard_normal((3, 4, 5))
    k = rng.standard_normal((11, 9))
    expected = np.stack([scipy_signal.correlate2d(p, k, mode, boundary) for p in x])
    got = gpuconv.correlate2d(da.from_array(x, chunks=(2, 3, 2)), k, mode, boundary,
                              method="direct").compute()
    assert_close(got, expected, np.float64)
    np.testing.assert_array_equal(got, gpuconv.correlate2d(x, k, mode, boundary,
                                                           method="direct"))


@pytest.mark.parametrize("convolution", [False, True], ids=["correlate", "convolve"])
def test_swapped_valid_mode(rng, convolution):
    """SciPy's 'valid' with the kernel larger than the planes swaps the roles."""
    op = gpuconv.convolve2d if convolution else gpuconv.correlate2d
    x = random_array(rng, (4, 3, 5), np.complex128)
    k = random_array(rng, (6, 8), np.complex128)
    got = op(da.from_array(x, chunks=(3, 2, 2)), k, "valid", method="direct").compute()
    np.testing.assert_array_equal(got, op(x, k, "valid", method="direct"))
    scipy_op = scipy_signal.convolve2d if convolution else scipy_signal.correlate2d
    assert_close(got, np.stack([scipy_op(p, k, "valid") for p in x]), np.complex128)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.complex64, np.int32, np.bool_])
def test_dtypes_follow_the_in_memory_rules(rng, dtype):
    x = random_array(rng, (2, 3, 12, 10), dtype)
    k = random_array(rng, (3, 3), dtype)
    expected = gpuconv.correlate2d(x, k, "same", "symm", method="direct")
    lazy = gpuconv.correlate2d(da.from_array(x, chunks=(1, 2, 5, 4)), k, "same", "symm",
                               method="direct")
    assert lazy.dtype == expected.dtype
    got = lazy.compute()
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_fill_value_with_integer_input_is_not_truncated(rng):
    x = rng.integers(-5, 5, size=(9, 11)).astype(np.int16)
    k = rng.standard_normal((3, 4))
    got = gpuconv.correlate2d(da.from_array(x, chunks=4), k, "full", "fill", 0.5).compute()
    assert_close(got, scipy_signal.correlate2d(x.astype(float), k, "full", "fill", 0.5),
                 np.float64)


def test_kernel_and_image_may_both_be_lazy(rng):
    x = rng.standard_normal((20, 18))
    k = rng.standard_normal((5, 3))
    got = gpuconv.convolve2d(da.from_array(x, chunks=7), da.from_array(k, chunks=2), "same",
                             method="direct")
    np.testing.assert_array_equal(got.compute(), gpuconv.convolve2d(x, k, "same",
                                                                   method="direct"))
    # An in-memory image with a lazy kernel is lazy too.
    lazy = gpuconv.correlate2d(x, da.from_array(k, chunks=2), "valid", method="direct")
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), gpuconv.correlate2d(x, k, "valid",
                                                                      method="direct"))


def test_corr2d_takes_dask_arrays(rng):
    X = rng.standard_normal((10, 12))
    K = rng.standard_normal((2, 3))
    got = gpuconv.corr2d(da.from_array(X, chunks=4), K).compute()
    assert_close(got, scipy_signal.correlate2d(X, K, "valid"), np.float64)


def test_result_is_lazy():
    """Nothing is computed at call time: a chunk that cannot be computed is not touched."""
    def refuse(block):
        raise RuntimeError("computed too early")

    x = da.ones((16, 16), chunks=8).map_blocks(refuse, dtype=np.float64)
    out = gpuconv.correlate2d(x, np.ones((3, 3)), "same")
    with pytest.raises(RuntimeError, match="computed too early"):
        out.compute()


# -- conv2d --------------------------------------------------------------------
CONV_CASES = [
    # stride, padding, dilation, groups, padding_mode
    (1, 0, 1, 1, "zeros"),
    (1, "same", 1, 1, "reflect"),
    (2, 1, 1, 1, "zeros"),
    (2, "same", 2, 1, "replicate"),
    (3, (2, 1), 1, 2, "circular"),
    ((2, 3), (1, 2), (2, 1), 4, "reflect"),
    (3, 0, 1, 1, "zeros"),            # stride larger than the kernel: no halo at all
    (1, "valid", 3, 2, "zeros"),
]


@pytest.mark.parametrize("chunks", [(2, 3, 5, 4), (1, -1, 7, 6), (3, 2, -1, -1), (1, 1, 2, 2)],
                         ids=["batch-channel-space", "space", "channels", "tiny"])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "-".join(map(str, c)))
def test_conv2d_equals_in_memory(rng, case, chunks):
    stride, padding, dilation, groups, padding_mode = case
    x = rng.standard_normal((3, 4, 15, 13)).astype(np.float32)
    w = rng.standard_normal((8, 4 // groups, 3, 2)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                  padding_mode=padding_mode, method="direct")
    expected = gpuconv.conv2d(x, w, b, **kwargs)
    lazy = gpuconv.conv2d(da.from_array(x, chunks=chunks), w, b, **kwargs)
    assert isinstance(lazy, da.Array)
    assert lazy.shape == expected.shape and lazy.dtype == expected.dtype
    # Per-tap matrix products go through BLAS, whose summation order may depend
    # on the block shape: equal to float32's tolerance, not bitwise.
    assert_close(lazy.compute(), expected, np.float32)


def test_conv2d_unbatched_lazy_weight_and_bias(rng):
    x = rng.standard_normal((3, 20, 21))
    w = rng.standard_normal((5, 3, 4, 3))
    b = rng.standard_normal(5)
    expected = gpuconv.conv2d(x, w, b, stride=2, padding="same")
    got = gpuconv.conv2d(da.from_array(x, chunks=(2, 6, 8)), da.from_array(w, chunks=2),
                         da.from_array(b, chunks=3), stride=2, padding="same")
    assert got.shape == expected.shape
    assert_close(got.compute(), expected, np.float64)


def test_conv2d_output_chunks_follow_the_stride(rng):
    x = da.from_array(rng.standard_normal((1, 2, 40, 40)), chunks=(1, 2, 10, 10))
    out = gpuconv.conv2d(x, rng.standard_normal((3, 2, 3, 3)), stride=2, padding=1)
    # Input chunks of 10 rows give output chunks of 5: every chunk starts on the stride.
    assert out.chunks[2] == (5, 5, 5, 5) and out.chunks[3] == (5, 5, 5, 5)


def test_conv_transpose2d_chunked_over_batch(rng):
    x = rng.standard_normal((5, 4, 7, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(6)
    kwargs = dict(stride=2, padding=1, output_padding=1, groups=2)
    expected = gpuconv.conv_transpose2d(x, w, b, **kwargs)
    got = gpuconv.conv_transpose2d(da.from_array(x, chunks=(2, 3, 4, 4)), w, b, **kwargs)
    assert got.shape == expected.shape and got.chunks[0] == (2, 2, 1)
    assert_close(got.compute(), expected, np.float64)


@pytest.mark.parametrize("fft_op", ["correlate", "conv2d"])
def test_fft_method_applies_per_chunk(rng, fft_op):
    x = rng.standard_normal((2, 3, 30, 26))
    try:
        if fft_op == "correlate":
            k = rng.standard_normal((5, 6))
            expected = gpuconv.correlate2d(x, k, "same", "wrap", method="fft")
            got = gpuconv.correlate2d(da.from_array(x, chunks=(1, 3, 9, 11)), k, "same", "wrap",
                                      method="fft").compute()
        else:
            w = rng.standard_normal((4, 3, 5, 5))
            expected = gpuconv.conv2d(x, w, padding=2, method="fft")
            got = gpuconv.conv2d(da.from_array(x, chunks=(1, 3, 9, 11)), w, padding=2,
                                 method="fft").compute()
    except NotImplementedError as exc:
        pytest.skip(f"method='fft' is not implemented in memory on this backend: {exc}")
    # Each chunk is transformed at its own size: equal to float64's tolerance.
    assert_close(got, expected, np.float64)


# -- the rules of the chunked geometry ----------------------------------------
@pytest.mark.parametrize("rule", ["fill", "wrap", "symm", "reflect", "edge"])
@pytest.mark.parametrize("before,after", [(0, 0), (2, 3), (7, 12), (-2, 1), (3, -4)])
def test_extend_axis_matches_numpy_pad(rng, rule, before, after):
    x = rng.standard_normal((3, 5))
    got = extend_axis(da.from_array(x, chunks=(2, 2)), 1, before, after, rule, 9.5).compute()
    mode = {"fill": "constant", "wrap": "wrap", "symm": "symmetric", "reflect": "reflect",
            "edge": "edge"}[rule]
    padded = np.pad(x, ((0, 0), (max(before, 0), max(after, 0))), mode=mode,
                    **({"constant_values": 9.5} if mode == "constant" else {}))
    expected = padded[:, max(-before, 0):padded.shape[1] - max(-after, 0)]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("chunks", [(1, 4, 4, 3, 1), (3,) * 7, (1,) * 9, (21,), (10, 11)])
@pytest.mark.parametrize("extent,stride", [(3, 1), (5, 2), (2, 3), (1, 1), (7, 4)])
def test_anchor_chunks_cover_every_output_once(chunks, extent, stride):
    inp, out, halo = anchor_chunks(chunks, extent, stride)
    length = sum(chunks)
    assert sum(inp) == length
    assert sum(out) == (length - extent) // stride + 1
    assert all(c >= 1 for c in out)
    start = 0
    for i, (n_in, n_out) in enumerate(zip(inp, out)):
        assert start % stride == 0                      # each chunk starts on the stride
        assert n_in >= halo                             # and can lend a full halo
        visible = n_in + (halo if i < len(inp) - 1 else 0)
        assert (visible - extent) // stride + 1 == n_out  # its valid windows are its outputs
        start += n_in


def test_graph_grows_with_chunks_only(rng):
    """Task count depends on the number of chunks, not on pixels or kernel taps."""
    def tasks(size, chunk, ksize, op="correlate"):
        x = da.zeros((size, size), chunks=chunk)
        if op == "correlate":
            out = gpuconv.correlate2d(x, np.ones((ksize, ksize)), "same", "symm")
        else:
            out = gpuconv.conv2d(x[None, None], np.ones((2, 1, ksize, ksize)), stride=2,
                                 padding="same")
        return len(out.__dask_graph__())

    for op in ("correlate", "conv2d"):
        base = tasks(64, 16, 3, op)                   # 4 x 4 chunks
        assert tasks(1024, 256, 3, op) == base        # 256x the pixels: the same graph
        # 100x the kernel taps: the border may cut one chunk differently, no more.
        assert tasks(1024, 256, 31, op) <= 1.5 * base
        many = tasks(256, 16, 3, op)                  # 16x the chunks
        assert 8 * base <= many <= 24 * base


@pytest.fixture
def register():
    """Register backends for one test; they are removed afterwards."""
    from gpuconv import backend as registry

    names = []

    def add(name, factory, **options):
        gpuconv.register_backend(name, factory, **options)
        names.append(name)

    yield add
    for name in names:
        registry._unregister_backend(name)


def test_explicit_backend_reaches_every_chunk(rng, register):
    """The backend chosen in this context computes the chunks, even on worker threads."""
    calls = []

    class Counting(NumpyBackend):
        name = "dask-counting"

        def correlate_planes(self, *args, **kwargs):
            calls.append(1)
            return super().correlate_planes(*args, **kwargs)

    register("dask-counting", Counting)
    x = rng.standard_normal((24, 24))
    k = rng.standard_normal((3, 3))
    with gpuconv.set_backend("dask-counting"):
        lazy = gpuconv.correlate2d(da.from_array(x, chunks=8), k, "same", method="direct")
    with dask.config.set(scheduler="threads"):
        got = lazy.compute()
    assert len(calls) == lazy.npartitions == 9
    np.testing.assert_array_equal(got, gpuconv.correlate2d(x, k, "same", method="direct"))


def test_scratch_limit_reaches_every_chunk(rng, monkeypatch):
    seen = []
    original = NumpyBackend.correlate_planes

    def spy(self, x, w, out_shape, origin, boundary, fillvalue, method, scratch_bytes):
        seen.append(scratch_bytes)
        return original(self, x, w, out_shape, origin, boundary, fillvalue, method,
                        scratch_bytes)

    monkeypatch.setattr(NumpyBackend, "correlate_planes", spy)
    x = da.from_array(rng.standard_normal((12, 12)), chunks=6)
    with gpuconv.scratch_limit(12345):
        lazy = gpuconv.correlate2d(x, np.ones((3, 3)), method="gemm")
    with dask.config.set(scheduler="threads"):
        lazy.compute()
    assert seen and set(seen) == {12345}


# -- errors are the in-memory errors -------------------------------------------
BAD_CALLS = [
    (lambda x: gpuconv.correlate2d(x, np.ones((2, 2)), mode="fulll"), ValueError, "mode"),
    (lambda x: gpuconv.correlate2d(x, np.ones((2, 2)), boundary="nope"), ValueError,
     "boundary"),
    (lambda x: gpuconv.correlate2d(x, np.ones((2, 2)), method="magic"), ValueError, "method"),
    (lambda x: gpuconv.correlate2d(x, np.ones((2, 2, 2))), ValueError, "in2"),
    (lambda x: gpuconv.correlate2d(x[0, 0], np.ones((2, 2))), ValueError, "in1"),
    (lambda x: gpuconv.correlate2d(x, np.ones((2, 2)), fillvalue=1j), ValueError, "fillvalue"),
    (lambda x: gpuconv.correlate2d(x.astype(object), np.ones((2, 2))), TypeError, "in1"),
    (lambda x: gpuconv.correlate2d(x[:, :1], np.ones((3, 1)), "valid"), ValueError, "valid"),
    (lambda x: gpuconv.conv2d(x, np.ones((1, 1, 2, 2))), ValueError, "input"),
    (lambda x: gpuconv.conv2d(x[None], np.ones((1, 2, 2, 2))), ValueError, "weight.shape"),
    (lambda x: gpuconv.conv2d(x[None], np.ones((1, 6, 2, 2)), padding=6,
                              padding_mode="reflect"), ValueError, "padding_mode"),
    (lambda x: gpuconv.conv2d(x[None], np.ones((1, 6, 2, 2)), stride=0), ValueError,
     "stride"),
]


@pytest.mark.parametrize("call,exc,word", BAD_CALLS,
                         ids=[f"{i}-{word}" for i, (_, _, word) in enumerate(BAD_CALLS)])
def test_errors_match_the_in_memory_call(call, exc, word):
    x = np.ones((6, 5, 5))
    with pytest.raises(exc, match=word) as lazy_error:
        call(da.from_array(x, chunks=2))
    with pytest.raises(exc) as memory_error:
        call(x)
    assert str(lazy_error.value) == str(memory_error.value)


def test_unknown_chunk_sizes_are_a_clear_error():
    x = da.ones((4, 5), chunks=2)
    x = x[x[:, 0] > 0]          # how many rows survive is unknown until computed
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        gpuconv.correlate2d(x, np.ones((2, 2)))


def test_every_mode_boundary_pair_keeps_output_chunking_close_to_input(rng):
    x = da.from_array(rng.standard_normal((64, 64)), chunks=16)
    for mode, boundary in itertools.product(["full", "same", "valid"], ["fill", "wrap", "symm"]):
        out = gpuconv.correlate2d(x, np.ones((5, 5)), mode, boundary)
        # No chunk degenerates: at most one extra thin chunk per axis for the border.
        assert max(len(out.chunks[0]), len(out.chunks[1])) <= 5
        assert min(min(out.chunks[0]), min(out.chunks[1])) >= 4


# -- the chunks' library decides the backend -----------------------------------
class _ChunkArray(np.ndarray):
    """Chunks of a pretend array library (NumPy underneath), standing in for CuPy."""


class _ChunkBackend(NumpyBackend):
    name = "chunkarray"

    def asarray(self, x):
        return np.asarray(x).view(_ChunkArray)

    def correlate_planes(self, *args, **kwargs):
        return super().correlate_planes(*args, **kwargs).view(_ChunkArray)


@pytest.fixture
def chunk_library(monkeypatch, register):
    """Make ``chunkarray`` a library gpuconv recognises, with a registered backend."""
    import sys
    import types

    module = types.ModuleType("chunkarray")
    module.ndarray = _ChunkArray
    monkeypatch.setitem(sys.modules, "chunkarray", module)
    register("chunkarray", _ChunkBackend, array_types=[("chunkarray", "ndarray")])
    yield lambda a: np.asarray(a).view(_ChunkArray)


def test_chunks_of_another_library_compute_on_its_backend(rng, chunk_library):
    x = rng.standard_normal((2, 20, 18))
    k = rng.standard_normal((3, 4))
    lazy_x = da.from_array(chunk_library(x), chunks=(1, 7, 7), asarray=False)
    assert type(lazy_x._meta) is _ChunkArray
    out = gpuconv.correlate2d(lazy_x, chunk_library(k), "same", method="direct")
    assert type(out._meta) is _ChunkArray            # lazily known: the chunks' library
    # (Which backend computes the chunks is checked with an explicit backend
    # below: this stand-in library is an ndarray subclass, which NumPy's
    # concatenation of halos turns back into plain ndarrays; CuPy's does not.)
    np.testing.assert_array_equal(np.asarray(out.compute()),
                                  gpuconv.correlate2d(x, k, "same", method="direct"))


def test_chunks_and_kernel_of_two_libraries_are_a_type_error(rng, chunk_library):
    lazy_x = da.from_array(chunk_library(rng.standard_normal((8, 8))), chunks=4, asarray=False)
    with pytest.raises(TypeError, match="in1 is a dask array of chunkarray chunks, in2 is a "
                                        "numpy array"):
        gpuconv.correlate2d(lazy_x, np.ones((2, 2)))
    # Choosing a backend explicitly moves the kernel, as for in-memory inputs.
    with gpuconv.set_backend("chunkarray"):
        out = gpuconv.correlate2d(lazy_x, np.ones((2, 2)), method="direct")
    assert {type(b.compute()) for b in out.to_delayed().ravel()} == {_ChunkArray}


def test_empty_batch_and_unbatched_transpose(rng):
    out = gpuconv.conv2d(da.zeros((0, 2, 8, 8), chunks=(1, 2, 4, 4)), np.ones((3, 2, 3, 3)),
                         padding=1)
    assert out.shape == out.compute().shape == (0, 3, 8, 8)
    out = gpuconv.correlate2d(da.zeros((0, 8, 8), chunks=(1, 4, 4)), np.ones((3, 3)))
    assert out.shape == out.compute().shape == (0, 10, 10)
    x = rng.standard_normal((3, 9, 8))
    w = rng.standard_normal((3, 2, 3, 3))
    got = gpuconv.conv_transpose2d(da.from_array(x, chunks=2), w, stride=2)
    assert_close(got.compute(), gpuconv.conv_transpose2d(x, w, stride=2), np.float64)

"""Run gpuconv's CUDA kernels on the CPU: test support, not product.

The translation unit is exactly what the CuPy backend compiles
(:func:`gpuconv.kernels.source`), compiled by the host C++ compiler against
``_emulator/gpu_emulator.h``, which gives every CUDA thread its own fiber and
makes ``__syncthreads()`` a real barrier.  Launch wrappers with C linkage take
the product's :class:`gpuconv.kernels.Launch` (grid, block, scalar arguments).
Builds are cached in ``tests/_emulator_build/`` keyed by a hash of everything
that goes into them.

Every launch runs twice, blocks and threads in increasing and then in
decreasing index order, from the same inputs; the two results must agree bit
for bit, so an outcome that depends on scheduling (a race) fails even where
one order happens to give the right answer.

``GPUCONV_EMULATOR_SANITIZE=1`` builds with AddressSanitizer and
UndefinedBehaviorSanitizer; the process must then have the ASan runtime
preloaded (``LD_PRELOAD=$(g++ -print-file-name=libasan.so)``), which
:func:`sanitizer_env` sets up for a subprocess.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from gpuconv import kernels as K

__all__ = ["compiler", "skip_or_fail", "sanitizer_env", "Emulator", "EmulatorError",
           "emulated_kernel"]

HERE = Path(__file__).parent
HEADER = HERE / "_emulator" / "gpu_emulator.h"
BUILD_DIR = HERE / "_emulator_build"

# Kernel -> kinds of its scalar parameters after its array pointers
# ('i' int, 'l' long long, 'd' double), in order.
SIGNATURES = {
    "correlate_planes": "i" * 10 + "dd",
    "im2col": "i" * 16 + "dd" + "ll",
    "col2im": "i" * 18,
    "conv2d_igemm": "i" * 19,
    "conv2d_igemm_padded": "i" * 19,
    "conv_transpose2d_igemm": "i" * 18,
    "conv2d_splitk_reduce": "i" * 3,
}
# Kernel -> number of array pointers it takes first (3 unless listed).
POINTERS = {"im2col": 2}
SANITIZE_ENV = "GPUCONV_EMULATOR_SANITIZE"
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                  "-fno-omit-frame-pointer", "-g"]


class EmulatorError(RuntimeError):
    """The emulated launch failed (barrier divergence or bad geometry)."""


def skip_or_fail(reason: str):
    """Skip with ``reason``; fail instead where CI demands the kernel checks
    (``GPUCONV_REQUIRE_KERNEL_CHECKS=1``, set by ``.ci/run``)."""
    import pytest

    if os.environ.get("GPUCONV_REQUIRE_KERNEL_CHECKS") == "1":
        pytest.fail(f"required kernel check cannot run: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def compiler() -> str | None:
    """The host C++ compiler, or ``None``."""
    if os.environ.get("CXX"):
        return shutil.which(os.environ["CXX"])
    return shutil.which("g++") or shutil.which("c++")


def sanitizer_env(cxx: str | None = None) -> dict[str, str] | None:
    """Environment for a subprocess that runs sanitized emulator builds, or ``None``
    when the compiler has no AddressSanitizer runtime."""
    cxx = cxx or compiler()
    if cxx is None:
        return None
    proc = subprocess.run([cxx, "-print-file-name=libasan.so"], capture_output=True,
                          text=True)
    runtime = proc.stdout.strip()
    if proc.returncode or not os.path.isabs(runtime) or not os.path.exists(runtime):
        return None
    env = dict(os.environ)
    env.update({
        SANITIZE_ENV: "1",
        "LD_PRELOAD": runtime,
        # Python itself leaks by design at exit; the kernels' accesses are the subject.
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:halt_on_error=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    })
    return env


def _asan_runtime_loaded() -> bool:
    try:
        with open("/proc/self/maps") as maps:
            return "libasan" in maps.read()
    except OSError:
        return False


def _symbol(expr: str) -> str:
    kernel, tn = expr[:-1].split("<")
    return f"emu_{kernel}_{tn}"


def _wrapper(expr: str) -> str:
    kernel, tn = expr[:-1].split("<")
    params = [f"({tn}*)ptrs[{k}]" for k in range(POINTERS.get(kernel, 3))]
    ints, dbls = 0, 0
    for kind in SIGNATURES[kernel]:
        if kind in "il":
            params.append(f"({'int' if kind == 'i' else 'long long'})ia[{ints}]")
            ints += 1
        else:
            params.append(f"da[{dbls}]")
            dbls += 1
    call = f"{expr}(" + ", ".join(params) + ")"
    return (
        f'extern "C" int {_symbol(expr)}(void* const* ptrs, '
        "const long long* ia, const double* da, const unsigned* geom, long* barriers, "
        "int reverse) {\n"
        "    dim3 g; g.x = geom[0]; g.y = geom[1]; g.z = geom[2];\n"
        "    dim3 b; b.x = geom[3]; b.y = geom[4]; b.z = geom[5];\n"
        f"    std::function<void()> body = [&] {{ {call}; }};\n"
        "    return emu::launch(g, b, body, barriers, reverse != 0);\n"
        "}\n"
    )


def translation_unit(filename: str) -> str:
    wrappers = "".join(_wrapper(e) for e in K.name_expressions(filename))
    return '#include "gpu_emulator.h"\n' + K.source(filename) + "\n" + wrappers


class Emulator:
    """The kernels of one ``.cu`` file, built for the host with extra ``-D`` defines.

    ``sanitize`` (default: ``GPUCONV_EMULATOR_SANITIZE=1`` in the environment)
    builds with AddressSanitizer and UndefinedBehaviorSanitizer.
    """

    def __init__(self, filename: str, defines: tuple[str, ...] = (),
                 sanitize: bool | None = None):
        cxx = compiler()
        if cxx is None:
            raise RuntimeError("no host C++ compiler (g++ or $CXX) to build the kernel emulator")
        if sanitize is None:
            sanitize = os.environ.get(SANITIZE_ENV) == "1"
        if sanitize and not _asan_runtime_loaded():
            # Loading an ASan library into a process without the runtime aborts it.
            raise RuntimeError("a sanitized emulator build needs the ASan runtime preloaded: "
                               "run under LD_PRELOAD=$(g++ -print-file-name=libasan.so)")
        self.filename = filename
        self.sanitized = sanitize
        tu = translation_unit(filename)
        flags = ["-std=c++17", "-O1", "-shared", "-fPIC", "-Wno-unknown-pragmas",
                 f"-I{HEADER.parent}", *(f"-D{d}" for d in defines),
                 *(SANITIZE_FLAGS if sanitize else [])]
        key = hashlib.sha256("\0".join([tu, HEADER.read_text(), cxx, *flags]).encode())
        lib = BUILD_DIR / f"{Path(filename).stem}-{key.hexdigest()[:16]}.so"
        if not lib.exists():
            BUILD_DIR.mkdir(exist_ok=True)
            with tempfile.TemporaryDirectory(dir=BUILD_DIR) as tmp:
                src = Path(tmp) / "tu.cpp"
                src.write_text(tu)
                out = Path(tmp) / "lib.so"
                proc = subprocess.run([cxx, *flags, str(src), "-o", str(out)],
                                      capture_output=True, text=True)
                if proc.returncode:
                    raise RuntimeError(f"emulator build of {filename} failed:\n{proc.stderr}")
                os.replace(out, lib)
        self._lib = ctypes.CDLL(str(lib))

    def launch(self, kernel: str, dtype, launch: K.Launch, *arrays: np.ndarray | None) -> int:
        """Run ``kernel<dtype>`` with ``launch`` on ``arrays`` (its pointer arguments in
        order, ``None`` for a null pointer); returns the number of barrier rounds.

        The launch runs in both thread orders from the same inputs and raises
        :class:`EmulatorError` if the results differ.
        """
        expr = f"{kernel}<{K.typename(dtype)}>"
        want = POINTERS.get(kernel, 3)
        if len(arrays) != want:
            raise TypeError(f"{kernel} takes {want} arrays, got {len(arrays)}")
        for i, arr in enumerate(arrays):
            if arr is not None and (arr.dtype != np.dtype(dtype) or not arr.flags.c_contiguous):
                raise TypeError(f"array {i} must be C-contiguous {np.dtype(dtype)}")
        sig = SIGNATURES[kernel]
        if len(sig) != len(launch.args):
            raise TypeError(f"{kernel} takes {len(sig)} scalars, launch has {len(launch.args)}")
        ia = [int(a) for k, a in zip(sig, launch.args) if k in "il"]
        da = [float(a) for k, a in zip(sig, launch.args) if k == "d"]
        ia_c = (ctypes.c_longlong * max(len(ia), 1))(*ia)
        da_c = (ctypes.c_double * max(len(da), 1))(*da)
        geom = (ctypes.c_uint * 6)(*launch.grid, *launch.block)
        ptrs = (ctypes.c_void_p * want)(*(None if a is None else a.ctypes.data for a in arrays))
        fn = getattr(self._lib, _symbol(expr))
        fn.restype = ctypes.c_int
        present = [a for a in arrays if a is not None]
        inputs = [a.copy() for a in present]

        def run(reverse: bool) -> int:
            barriers = ctypes.c_long(0)
            status = fn(ptrs, ia_c, da_c, geom, ctypes.byref(barriers), int(reverse))
            if status == 1:
                raise EmulatorError(
                    f"{expr}: a thread exited while others waited at __syncthreads()")
            if status:
                raise EmulatorError(
                    f"{expr}: invalid launch geometry {launch.grid} x {launch.block}")
            return barriers.value

        rounds = run(reverse=False)
        forward = [a.copy() for a in present]
        for arr, before in zip(present, inputs):
            if arr.tobytes() != before.tobytes():
                arr[...] = before
        run(reverse=True)
        for i, (arr, first) in enumerate(zip(present, forward)):
            if arr.tobytes() != first.tobytes():
                raise EmulatorError(
                    f"{expr}: array {i} differs between running the threads in increasing and "
                    "in decreasing order: the result depends on scheduling (a race)")
        return rounds


class _EmulatedKernel:
    """Stands in for a ``cupy.RawKernel``: same call, run by the emulator.

    It insists on the scalar types the kernel's C signature needs (``int32``
    for ``int``, ``float64`` for ``double``), which is what CuPy passes on.
    """

    def __init__(self, emulator: Emulator, kernel: str, dtype):
        self.emulator, self.kernel, self.dtype = emulator, kernel, np.dtype(dtype)
        self.launches = 0

    def __call__(self, grid, block, args):
        npointers = POINTERS.get(self.kernel, 3)
        arrays, scalars = args[:npointers], args[npointers:]
        sig = SIGNATURES[self.kernel]
        want = {"i": np.int32, "l": np.int64, "d": np.float64}
        if len(scalars) != len(sig):
            raise TypeError(f"{self.kernel} takes {len(sig)} scalars, got {len(scalars)}")
        for i, (kind, value) in enumerate(zip(sig, scalars)):
            if type(value) is not want[kind]:
                raise TypeError(f"{self.kernel} scalar {i} must be {want[kind].__name__}, "
                                f"got {type(value).__name__}")
        launch = K.Launch(tuple(grid), tuple(block), tuple(v.item() for v in scalars))
        self.emulator.launch(self.kernel, self.dtype, launch, *arrays)
        self.launches += 1


def emulated_kernel(emulator: Emulator, kernel: str, dtype) -> _EmulatedKernel:
    """``kernel<dtype>`` of ``emulator``'s build as a ``cupy.RawKernel``-like callable
    (``fn(grid, block, args)``, NumPy buffers for the pointers; ``.launches`` counts)."""
    return _EmulatedKernel(emulator, kernel, dtype)


class _FakeCuda:
    class Device:
        """Device 0, usable as a context like ``cupy.cuda.Device``."""

        def __init__(self, device_id: int = 0):
            self.id = device_id

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    class runtime:  # noqa: N801 - mirrors cupy.cuda.runtime
        @staticmethod
        def getDeviceProperties(device_id):
            return {"name": b"host emulator"}

        @staticmethod
        def memGetInfo():
            return 16 * 2**30, 16 * 2**30

    class _Stream:
        def synchronize(self):
            pass

    @classmethod
    def get_current_stream(cls):
        return cls._Stream()


class _NumpyAsCupy:
    """NumPy under CuPy's name, plus the few ``cupy.cuda`` calls the backend makes."""

    cuda = _FakeCuda

    class _Pool:
        def free_bytes(self):
            return 0

    def get_default_memory_pool(self):
        return self._Pool()

    def __getattr__(self, name):
        return getattr(np, name)


def _strided_operand(name, arr, off, ld, stride, batch, rows, cols, dtype):
    """The (batch, rows, cols) matrices a strided-batched GEMM reads at ``arr`` + ``off``."""
    from numpy.lib.stride_tricks import as_strided

    if arr.dtype != dtype or not arr.flags.c_contiguous:
        raise TypeError(f"{name} must be a C-contiguous {dtype} buffer; got {arr.dtype}")
    for what, value in (("offset", off), ("batch stride", stride)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} {what} must be a non-negative int; got {value!r}")
    if ld < max(cols, 1):
        raise ValueError(f"{name} leading dimension {ld} is shorter than its rows ({cols})")
    last = off + (batch - 1) * stride + (rows - 1) * ld + cols - 1
    if last >= arr.size:
        raise ValueError(f"{name} reaches element {last} of a buffer of {arr.size}")
    it = arr.itemsize
    return as_strided(arr.reshape(-1)[off:], shape=(batch, rows, cols),
                      strides=(stride * it, ld * it, it))


def emulated_cupy_backend():
    """A :class:`gpuconv.backends.cupy.CupyBackend` whose arrays are NumPy arrays and whose
    kernels run in the emulator: the backend's own code, on the CPU."""
    from gpuconv.backends.cupy import CupyBackend

    emulators: dict[tuple, Emulator] = {}
    kernels: dict[tuple, _EmulatedKernel] = {}

    def get_function(filename, kernel, dtype, defines=()):
        build = (filename, tuple(sorted(defines)))
        if build not in emulators:
            emulators[build] = Emulator(filename, defines=build[1])
        key = (build, kernel, np.dtype(dtype))
        if key not in kernels:
            kernels[key] = _EmulatedKernel(emulators[build], kernel, dtype)
        return kernels[key]

    class EmulatedCupyBackend(CupyBackend):
        gemm_calls = 0

        def _device_of(self, x):
            # NumPy arrays stand in for device arrays, all on device 0.
            return _FakeCuda.Device(0)

        def _gemm_strided(self, a, a_off, lda, sa, b, b_off, ldb, sb, c, c_off, ldc, sc,
                          M, N, K, batch):
            # cuBLAS's strided-batched GEMM on NumPy buffers, refusing what cuBLAS
            # would misread: operands reaching outside their arrays, a leading
            # dimension shorter than a row, output matrices that overlap.
            A = _strided_operand("A", a, a_off, lda, sa, batch, M, K, c.dtype)
            B = _strided_operand("B", b, b_off, ldb, sb, batch, K, N, c.dtype)
            C = _strided_operand("C", c, c_off, ldc, sc, batch, M, N, c.dtype)
            if batch > 1 and sc < M * ldc:
                raise ValueError(f"C batch stride {sc} overlaps {M} rows of stride {ldc}")
            C[...] = np.matmul(A, B)
            type(self).gemm_calls += 1

    backend = EmulatedCupyBackend(_NumpyAsCupy(), get_function)
    backend.emulated_kernels = kernels
    return backend

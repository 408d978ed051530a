"""Run gpuconv's CUDA kernels on the CPU: test support, not product.

The translation unit is exactly what the CuPy backend compiles
(:func:`gpuconv.kernels.source`), compiled by the host C++ compiler against
``_emulator/gpu_emulator.h``, which gives every CUDA thread its own fiber and
makes ``__syncthreads()`` a real barrier.  Launch wrappers with C linkage take
the product's :class:`gpuconv.kernels.Launch` (grid, block, scalar arguments).
Builds are cached in ``tests/_emulator_build/`` keyed by a hash of everything
that goes into them.
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

__all__ = ["compiler", "skip_or_fail", "Emulator", "EmulatorError", "emulated_kernel"]

HERE = Path(__file__).parent
HEADER = HERE / "_emulator" / "gpu_emulator.h"
BUILD_DIR = HERE / "_emulator_build"

# Kernel -> kinds of its scalar parameters after the three pointers
# ('i' int, 'd' double), in order.
SIGNATURES = {
    "correlate_planes": "i" * 10 + "dd",
    "conv2d_nchw": "i" * 17,
    "conv_transpose2d_nchw": "i" * 16,
}


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


def _symbol(expr: str) -> str:
    kernel, tn = expr[:-1].split("<")
    return f"emu_{kernel}_{tn}"


def _wrapper(expr: str) -> str:
    kernel, tn = expr[:-1].split("<")
    ints, dbls, params = 0, 0, []
    for kind in SIGNATURES[kernel]:
        if kind == "i":
            params.append(f"(int)ia[{ints}]")
            ints += 1
        else:
            params.append(f"da[{dbls}]")
            dbls += 1
    call = (f"{expr}((const {tn}*)x, (const {tn}*)w, ({tn}*)out, " + ", ".join(params) + ")")
    return (
        f'extern "C" int {_symbol(expr)}(const void* x, const void* w, void* out, '
        "const long long* ia, const double* da, const unsigned* geom, long* barriers) {\n"
        "    dim3 g; g.x = geom[0]; g.y = geom[1]; g.z = geom[2];\n"
        "    dim3 b; b.x = geom[3]; b.y = geom[4]; b.z = geom[5];\n"
        f"    std::function<void()> body = [&] {{ {call}; }};\n"
        "    return emu::launch(g, b, body, barriers);\n"
        "}\n"
    )


def translation_unit(filename: str) -> str:
    wrappers = "".join(_wrapper(e) for e in K.name_expressions(filename))
    return '#include "gpu_emulator.h"\n' + K.source(filename) + "\n" + wrappers


class Emulator:
    """The kernels of one ``.cu`` file, built for the host with extra ``-D`` defines."""

    def __init__(self, filename: str, defines: tuple[str, ...] = ()):
        cxx = compiler()
        if cxx is None:
            raise RuntimeError("no host C++ compiler (g++ or $CXX) to build the kernel emulator")
        self.filename = filename
        tu = translation_unit(filename)
        flags = ["-std=c++17", "-O1", "-shared", "-fPIC", "-Wno-unknown-pragmas",
                 f"-I{HEADER.parent}", *(f"-D{d}" for d in defines)]
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

    def launch(self, kernel: str, dtype, launch: K.Launch, x: np.ndarray, w: np.ndarray,
               out: np.ndarray) -> int:
        """Run ``kernel<dtype>`` with ``launch``; returns the number of barrier rounds."""
        expr = f"{kernel}<{K.typename(dtype)}>"
        for name, arr in (("x", x), ("w", w), ("out", out)):
            if arr.dtype != np.dtype(dtype) or not arr.flags.c_contiguous:
                raise TypeError(f"{name} must be C-contiguous {np.dtype(dtype)}")
        sig = SIGNATURES[kernel]
        if len(sig) != len(launch.args):
            raise TypeError(f"{kernel} takes {len(sig)} scalars, launch has {len(launch.args)}")
        ia = [int(a) for k, a in zip(sig, launch.args) if k == "i"]
        da = [float(a) for k, a in zip(sig, launch.args) if k == "d"]
        ia_c = (ctypes.c_longlong * max(len(ia), 1))(*ia)
        da_c = (ctypes.c_double * max(len(da), 1))(*da)
        geom = (ctypes.c_uint * 6)(*launch.grid, *launch.block)
        barriers = ctypes.c_long(0)
        fn = getattr(self._lib, _symbol(expr))
        fn.restype = ctypes.c_int
        status = fn(ctypes.c_void_p(x.ctypes.data), ctypes.c_void_p(w.ctypes.data),
                    ctypes.c_void_p(out.ctypes.data), ia_c, da_c, geom, ctypes.byref(barriers))
        if status == 1:
            raise EmulatorError(f"{expr}: a thread exited while others waited at __syncthreads()")
        if status:
            raise EmulatorError(f"{expr}: invalid launch geometry {launch.grid} x {launch.block}")
        return barriers.value


class _EmulatedKernel:
    """Stands in for a ``cupy.RawKernel``: same call, run by the emulator.

    It insists on the scalar types the kernel's C signature needs (``int32``
    for ``int``, ``float64`` for ``double``), which is what CuPy passes on.
    """

    def __init__(self, emulator: Emulator, kernel: str, dtype):
        self.emulator, self.kernel, self.dtype = emulator, kernel, np.dtype(dtype)
        self.launches = 0

    def __call__(self, grid, block, args):
        x, w, out, *scalars = args
        sig = SIGNATURES[self.kernel]
        want = {"i": np.int32, "d": np.float64}
        for i, (kind, value) in enumerate(zip(sig, scalars)):
            if type(value) is not want[kind]:
                raise TypeError(f"{self.kernel} scalar {i} must be {want[kind].__name__}, "
                                f"got {type(value).__name__}")
        launch = K.Launch(tuple(grid), tuple(block), tuple(v.item() for v in scalars))
        self.emulator.launch(self.kernel, self.dtype, launch, x, w, out)
        self.launches += 1


def emulated_kernel(emulator: Emulator, kernel: str, dtype) -> _EmulatedKernel:
    """``kernel<dtype>`` of ``emulator``'s build as a ``cupy.RawKernel``-like callable
    (``fn(grid, block, args)``, NumPy buffers for the pointers; ``.launches`` counts)."""
    return _EmulatedKernel(emulator, kernel, dtype)


class _FakeCuda:
    class Device:
        id = 0

    class runtime:  # noqa: N801 - mirrors cupy.cuda.runtime
        @staticmethod
        def getDeviceProperties(device_id):
            return {"name": b"host emulator"}

    class _Stream:
        def synchronize(self):
            pass

    @classmethod
    def get_current_stream(cls):
        return cls._Stream()


class _NumpyAsCupy:
    """NumPy under CuPy's name, plus the few ``cupy.cuda`` calls the backend makes."""

    cuda = _FakeCuda

    def __getattr__(self, name):
        return getattr(np, name)


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

    backend = CupyBackend(_NumpyAsCupy(), get_function)
    backend.emulated_kernels = kernels
    return backend

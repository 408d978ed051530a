"""``cupy.RawModule`` for the stand-in: gpuconv's own CUDA sources, run by the emulator.

``RawModule(code=gpuconv.kernels.source(f), options=..., name_expressions=...)``
recognises which of gpuconv's ``.cu`` files ``code`` is, builds it for the
host with the ``-D`` options (:class:`kernel_emulator.Emulator`), and
``get_function("kernel<type>")`` returns a kernel with ``cupy.RawKernel``'s
call convention.  Pointer arguments must be device arrays on the current
device (CuPy refuses NumPy arrays); the emulator runs on their buffers, so
what a kernel writes lands in the device array.  Any other CUDA source is
refused: the stand-in cannot compile arbitrary CUDA.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._core import DEVICE_ID, ndarray, record_launch

__all__ = ["RawModule", "RawKernel", "ElementwiseKernel", "ReductionKernel", "fuse"]


def _unsupported_kernel(what: str) -> NotImplementedError:
    return NotImplementedError(
        f"the CuPy stand-in cannot run {what}: it runs gpuconv's own .cu kernels (a "
        "RawModule whose code is gpuconv.kernels.source(filename)) in the host emulator")


class _DeviceKernel:
    """A compiled kernel: ``kernel(grid, block, args, *, shared_mem=0)``."""

    def __init__(self, name_expression: str, emulated: Any, defines: tuple[str, ...] = ()):
        self.name = name_expression
        self._emulated = emulated
        # What activity() records: the name expression, and the -D variant if any.
        self._launch_key = name_expression + "".join(f"+{d}" for d in defines)

    @property
    def launches(self) -> int:
        return self._emulated.launches

    def __call__(self, grid: tuple, block: tuple, args: tuple, *, shared_mem: int = 0,
                 enable_cooperative_groups: bool = False) -> None:
        host_args = []
        for i, arg in enumerate(args):
            if isinstance(arg, ndarray):
                if arg.device.id != DEVICE_ID:
                    raise ValueError(f"{self.name}: argument {i} is on device {arg.device.id}")
                host_args.append(arg._host)
            elif isinstance(arg, np.ndarray):
                raise TypeError(f"{self.name}: argument {i}: Unsupported type {type(arg)}")
            else:
                host_args.append(arg)
        grid = tuple(grid) + (1,) * (3 - len(tuple(grid)))
        block = tuple(block) + (1,) * (3 - len(tuple(block)))
        self._emulated(grid, block, tuple(host_args))
        record_launch(self._launch_key)


class RawModule:
    """``cupy.RawModule`` for gpuconv's kernel sources."""

    def __init__(self, code: str | None = None, *, path: str | None = None,
                 options: tuple = (), backend: str = "nvrtc", translate_cucomplex: bool = False,
                 enable_cooperative_groups: bool = False, name_expressions: Any = None,
                 jitify: bool = False):
        import kernel_emulator
        from gpuconv import kernels

        if code is None:
            raise _unsupported_kernel(f"a RawModule loaded from {path!r}")
        filename = next((f for f in kernels.KERNELS if kernels.source(f) == code), None)
        if filename is None:
            raise _unsupported_kernel("this RawModule's code")
        if kernel_emulator.compiler() is None:
            raise RuntimeError("no host C++ compiler (g++ or $CXX) to build the kernel emulator")
        self.filename = filename
        self.options = tuple(options)
        self.name_expressions = tuple(name_expressions or ())
        self.defines = tuple(o[2:] for o in self.options if o.startswith("-D"))
        self._emulator = kernel_emulator.Emulator(filename, defines=self.defines)
        self._kernels: dict[str, _DeviceKernel] = {}

    def get_function(self, name: str) -> _DeviceKernel:
        import kernel_emulator
        from gpuconv import kernels

        if name not in self._kernels:
            if name not in self.name_expressions:
                raise KeyError(f"{name!r} is not one of this module's name_expressions "
                               f"({list(self.name_expressions)})")
            kernel, typename = name[:-1].split("<")
            dtype = next(d for d, t in kernels.TYPENAMES.items() if t == typename)
            self._kernels[name] = _DeviceKernel(
                name, kernel_emulator.emulated_kernel(self._emulator, kernel, dtype),
                self.defines)
        return self._kernels[name]


class RawKernel:
    def __init__(self, code: str, name: str, *args: Any, **kwargs: Any):
        raise _unsupported_kernel(f"RawKernel {name!r}")


class ElementwiseKernel:
    def __init__(self, *args: Any, **kwargs: Any):
        raise _unsupported_kernel("an ElementwiseKernel")


class ReductionKernel:
    def __init__(self, *args: Any, **kwargs: Any):
        raise _unsupported_kernel("a ReductionKernel")


def fuse(*args: Any, **kwargs: Any) -> Any:
    raise _unsupported_kernel("cupy.fuse")

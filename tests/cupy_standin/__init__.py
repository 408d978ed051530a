"""A strict, NumPy-backed stand-in for CuPy, to run gpuconv's CuPy paths without a GPU.

A stand-in that *is* NumPy lets through exactly the mistakes that break CuPy
code on its first run: ``numpy.asarray`` of a device array, mixing host and
device arrays, ``isinstance(x, numpy.ndarray)`` checks, Python scalars
expected where CuPy returns 0-d arrays, and FFT modules with SciPy's
options.  This one keeps device arrays a distinct type, :class:`cupy.ndarray`
(``_core.ndarray``), with CuPy's conversion rules, and provides the modules
gpuconv and its benchmarks use:

* ``cupy`` -- NumPy's functions wrapped to take and return device arrays and
  to refuse NumPy arrays (names CuPy lacks are missing too); ``asarray`` /
  ``asnumpy`` / ``get`` are the explicit transfers; ``RawModule`` runs
  gpuconv's own ``.cu`` sources in the host kernel emulator;
* ``cupy.cuda`` -- one device with an NVIDIA H200's properties, streams and
  events; ``cupy.fft``, ``cupy.linalg``, ``cupy.random``;
* ``cupyx.scipy.fft`` (cupyx's signatures: ``plan=``, no ``workers=``, cuFFT's
  ``next_fast_len``), ``cupyx.scipy.signal``, ``cupyx.scipy.ndimage``.

:func:`install` puts these modules in :data:`sys.modules` under CuPy's names
(saving any real CuPy modules already imported) and re-registers gpuconv's
``"cupy"`` backend, so that ``import cupy``, ``gpuconv.set_backend("cupy")``
and the ``"auto"`` dispatch of device arrays all reach the stand-in, exactly
as they would reach CuPy.  Nothing is installed by importing this package;
:func:`uninstall` puts everything back.  :func:`activity` counts the
synchronisations, transfers and kernel launches of a block of code.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Iterator

from ._core import Activity, activity, ndarray
from ._device import H200_PROPERTIES

__all__ = ["install", "uninstall", "installed", "suspended", "activity", "Activity",
           "ndarray", "H200_PROPERTIES", "SITE"]

#: The folder holding the stand-in's ``cupy`` and ``cupyx`` packages.
SITE = Path(__file__).parent / "site"
_TOP_LEVEL = ("cupy", "cupyx")
_saved: dict[str, object] = {}   # the real CuPy's modules while the stand-in is installed
_fakes: dict[str, object] = {}   # the stand-in's modules while it is not


def _cupy_module_names() -> list[str]:
    return [name for name in sys.modules if name.split(".")[0] in _TOP_LEVEL]


def installed() -> bool:
    """Whether ``import cupy`` gives the stand-in now."""
    return getattr(sys.modules.get("cupy"), "__standin__", False)


def install() -> None:
    """Make ``cupy``/``cupyx`` the stand-in's for this process (until :func:`uninstall`)."""
    if installed():
        return
    _saved.clear()
    for name in _cupy_module_names():
        _saved[name] = sys.modules.pop(name)
    if _fakes:
        # The same module objects as before: references taken earlier stay valid.
        sys.modules.update(_fakes)
        _fakes.clear()
    else:
        environment = _saved.get("cupy._environment") or _real_cupy_environment()
        sys.path.insert(0, str(SITE))
        try:
            cupy = importlib.import_module("cupy")
            importlib.import_module("cupyx")
        finally:
            sys.path.remove(str(SITE))
        if environment is not None:
            # CuPy's low-level bindings (cupy_backends: NVRTC, which the kernel
            # compile tests use without a device) find the CUDA libraries through
            # cupy._environment, plain host code: lend them the real one.
            sys.modules["cupy._environment"] = environment
            cupy._environment = environment
    _reset_gpuconv()


def _real_cupy_environment() -> object | None:
    """The real ``cupy._environment`` (standard library only), without importing CuPy."""
    spec = importlib.util.find_spec("cupy")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "_environment.py"
    if not path.is_file():
        return None
    env_spec = importlib.util.spec_from_file_location("cupy._environment", path)
    module = importlib.util.module_from_spec(env_spec)
    env_spec.loader.exec_module(module)
    return module


def uninstall() -> None:
    """Restore the modules :func:`install` replaced (the real CuPy, or none)."""
    if not installed():
        return
    for name in _cupy_module_names():
        _fakes[name] = sys.modules.pop(name)
    sys.modules.update(_saved)
    _saved.clear()
    _reset_gpuconv()


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """The real CuPy (or its absence) for the block, the stand-in again after it."""
    was_installed = installed()
    uninstall()
    try:
        yield
    finally:
        if was_installed:
            install()


def _reset_gpuconv() -> None:
    """Forget what gpuconv learned about the other ``cupy``: its backend instance (or why
    it could not run), the library of each array type, and the compiled kernel modules."""
    import gpuconv
    from gpuconv import _dispatch, kernels
    from gpuconv.backends.cupy import make_backend

    from ._kernels import RawModule

    gpuconv.register_backend("cupy", make_backend, replace=True)
    _dispatch._library_of_type.cache_clear()
    for key, module in list(kernels._modules.items()):
        if isinstance(module, RawModule):
            del kernels._modules[key]

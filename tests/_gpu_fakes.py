"""Minimal stand-ins for a GPU machine's libraries, for testing the GPU harness on the CPU.

* :class:`FakeCupy`: NumPy under CuPy's name with the ``cupy.cuda`` calls the
  harness makes (events read the host clock; ``synchronize`` calls are counted).
* :func:`install_cupyx`: SciPy's ``signal``, ``ndimage`` and ``fft`` as ``cupyx.scipy.*``.
* :func:`fake_torch`: a ``torch`` module with or without CUDA whose ``conv2d`` is
  NumPy (sliding windows and ``einsum``, independent of gpuconv).

These check plumbing (which columns run, what they are compared with, what is
reported), not speed or kernels.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import sys
import time
import types

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class SyncCounter:
    def __init__(self):
        self.count = 0


def fake_cupy(name: str = b"NVIDIA H200 (stand-in)", counter: SyncCounter | None = None):
    """A module object ``cupy`` backed by NumPy."""
    counter = counter if counter is not None else SyncCounter()

    class Event:
        def record(self, stream=None):
            self.t = time.perf_counter()

        def synchronize(self):
            pass

    class Stream:
        def synchronize(self):
            counter.count += 1

    class Device:
        id = 0
        compute_capability = "90"

        def __init__(self, device=0):
            pass

        def synchronize(self):
            counter.count += 1

    class runtime:  # noqa: N801 - mirrors cupy.cuda.runtime
        @staticmethod
        def getDeviceCount():
            return 1

        @staticmethod
        def getDeviceProperties(device_id):
            return {"name": name, "multiProcessorCount": 132, "major": 9, "minor": 0,
                    "totalGlobalMem": 141 * 2**30}

        memGetInfo = staticmethod(lambda: (140 * 2**30, 141 * 2**30))
        runtimeGetVersion = staticmethod(lambda: 13000)
        driverGetVersion = staticmethod(lambda: 13000)

    cuda = types.SimpleNamespace(
        Event=Event, Device=Device, runtime=runtime,
        get_current_stream=lambda: Stream(),
        get_elapsed_time=lambda start, end: (end.t - start.t) * 1e3,
        set_allocator=lambda allocator: None,
        set_pinned_memory_allocator=lambda allocator: None,
    )

    class Module(types.ModuleType):
        def __getattr__(self, attr):
            return getattr(np, attr)

    module = Module("cupy")
    module.cuda = cuda
    module.__version__ = "14.2.0 (stand-in)"
    module.asnumpy = np.asarray
    module.get_default_memory_pool = lambda: types.SimpleNamespace(
        free_all_blocks=lambda: None, free_bytes=lambda: 0)
    module.sync_counter = counter
    return module


def install_cupyx(monkeypatch) -> None:
    """SciPy as ``cupyx.scipy``: the cupyx anchors' calls have SciPy's signatures."""
    import scipy.fft
    import scipy.ndimage
    import scipy.signal

    for name in [m for m in sys.modules if m.split(".")[0] == "cupyx"]:
        monkeypatch.delitem(sys.modules, name)
    cupyx = types.ModuleType("cupyx")
    cupyx.scipy = types.ModuleType("cupyx.scipy")
    for module in (cupyx, cupyx.scipy):
        module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
    for sub, module in (("signal", scipy.signal), ("ndimage", scipy.ndimage),
                        ("fft", scipy.fft)):
        setattr(cupyx.scipy, sub, module)
        monkeypatch.setitem(sys.modules, f"cupyx.scipy.{sub}", module)
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    monkeypatch.setitem(sys.modules, "cupyx.scipy", cupyx.scipy)


def fake_torch(cuda: bool) -> types.ModuleType:
    """A ``torch`` stand-in: tensors are NumPy arrays; ``conv2d`` is sliding windows + einsum."""
    torch = types.ModuleType("torch")
    torch.__spec__ = importlib.machinery.ModuleSpec("torch", None)
    torch.__version__ = "2.11.0 (stand-in)"
    torch.synchronized = 0

    def synchronize():
        torch.synchronized += 1

    torch.cuda = types.SimpleNamespace(is_available=lambda: cuda, synchronize=synchronize)
    torch.version = types.SimpleNamespace(cuda="13.0" if cuda else None)
    torch.backends = types.SimpleNamespace(
        cuda=types.SimpleNamespace(matmul=types.SimpleNamespace(allow_tf32=True)),
        cudnn=types.SimpleNamespace(allow_tf32=True, benchmark=False,
                                    version=lambda: 91000 if cuda else None))
    torch.no_grad = contextlib.nullcontext
    torch.set_num_threads = lambda n: None

    def as_tensor(array, device="cpu"):
        if device == "cuda" and not cuda:
            raise RuntimeError("Torch not compiled with CUDA enabled")
        return np.asarray(array)

    def conv2d(x, w, bias=None, padding=0):
        if padding:
            x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        kh, kw = w.shape[2:]
        windows = sliding_window_view(x, (kh, kw), axis=(2, 3))
        out = np.einsum("nchwij,ocij->nohw", windows, w)
        return out if bias is None else out + bias[None, :, None, None]

    torch.as_tensor = as_tensor
    torch.nn = types.SimpleNamespace(functional=types.SimpleNamespace(conv2d=conv2d))
    return torch


def counting_device_backend(counter: SyncCounter | None = None):
    """A backend named "cupy" that computes with NumPy and counts ``synchronize`` calls.

    Its arrays are NumPy arrays (gpuconv's ops run them on the NumPy backend);
    what it adds is the name (so the GPU grids and anchors apply) and the count.
    """
    from gpuconv.backends.numpy import NumpyBackend

    counter = counter if counter is not None else SyncCounter()

    class CountingDeviceBackend(NumpyBackend):
        name = "cupy"
        xp = fake_cupy(counter=counter)

        def synchronize(self):
            counter.count += 1

        def device_key(self):
            return "0:stand-in"

    backend = CountingDeviceBackend()
    backend.counter = counter
    return backend

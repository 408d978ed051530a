"""How a benchmark column's call runs: blocking, queued, or through torch on the backend's device.

The harness's contract (see :class:`gpuconv.bench.Column`): a column's call
returns only once its result is ready, so that any clock around it times the
work and not just the queueing of it.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Callable

import numpy as np

from . import _cases as C
from ._registry import Unavailable

__all__ = ["blocking", "queued", "tensor", "torch_call", "torch_on", "torch_threads"]

_TORCH_THREADS: list[int | None] = [None]


def torch_threads(n: int | None) -> None:
    """Thread count the CPU torch anchor uses (None: torch's default)."""
    _TORCH_THREADS[0] = n


def _torch() -> Any:
    if importlib.util.find_spec("torch") is None:
        raise Unavailable("torch is not installed")
    import torch

    if _TORCH_THREADS[0] is not None:
        torch.set_num_threads(_TORCH_THREADS[0])
    return torch


def torch_on(backend: Any) -> tuple[Any, str]:
    """(torch, device) for the anchor of ``backend``: the CPU for NumPy, CUDA for CuPy.

    On CUDA, TF32 is switched off (gpuconv computes in full float32) and cuDNN
    picks its fastest algorithm per shape (``cudnn.benchmark``).
    """
    device = C.TORCH_DEVICES.get(backend.name)
    if device is None:
        raise Unavailable(f"no torch device corresponds to backend {backend.name!r}")
    torch = _torch()
    if device == "cuda":
        if not torch.cuda.is_available():
            raise Unavailable("torch has no CUDA here (a CPU-only build, or no device)")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    return torch, device


def tensor(torch: Any, array: np.ndarray, device: str) -> Any:
    return torch.as_tensor(array, device=device)


def blocking(backend: Any, op: Callable[[], Any]) -> Callable[[], Any]:
    """``op`` as a column's call: run it, wait for the backend, return the result."""
    sync = backend.synchronize

    def call():
        out = op()
        sync()
        return out
    return call


def queued(backend: Any, op: Callable[[], Any], calls: int) -> Callable[[], Any]:
    """``calls`` runs of ``op`` queued back to back, then one wait (a pipeline's view)."""
    if calls == 1:
        return blocking(backend, op)
    sync = backend.synchronize

    def call():
        for _ in range(calls):
            out = op()
        sync()
        return out
    return call


def torch_call(backend: Any, torch: Any, device: str, op: Callable[[], Any],
                calls: int = 1) -> Callable[[], Any]:
    sync = torch.cuda.synchronize if device == "cuda" else None

    def call():
        with torch.no_grad():
            for _ in range(calls):
                out = op()
        if sync is not None:
            sync()
        backend.synchronize()
        return out
    return call

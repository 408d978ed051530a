"""Arrays of libraries no backend claims (torch tensors), in through DLPack and out in kind.

Under ``"auto"`` a foreign input is imported without a copy (``xp.from_dlpack``)
into the backend of its device, the op runs there, and each array of the
result goes back to the caller's library through that library's own
``from_dlpack`` (``torch.from_dlpack``), again without a copy.  With a backend
chosen by name the inputs are imported the same way, then moved to that
backend, and its arrays are returned.

What a library needs beyond DLPack lives in one small adapter keyed by its
module name; torch's resolves lazy conjugate/negative views (which DLPack
cannot carry) and widens bfloat16 (which NumPy has no type for) to float32,
returning bfloat16 results.  No library is imported here: the module of an
array's type is in :data:`sys.modules` because the array exists.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from ._dispatch import array_library, dlpack_backend, is_claimed, is_foreign
from .backend import BackendUnavailableError, backend_for, get_backend, get_backend_object

__all__ = ["call_with_foreign"]


class _Adapter:
    """What gpuconv does to a library's arrays before DLPack carries them, and after."""

    def importable(self, module: Any, x: Any) -> tuple[Any, bool]:
        """``x`` ready for ``from_dlpack``, and whether it was bfloat16 widened to float32."""
        return x, False

    def restore(self, module: Any, out: Any, bfloat16: bool) -> Any:
        """An exported result in the dtype the caller's inputs call for."""
        return out


class _TorchAdapter(_Adapter):
    def importable(self, module: Any, x: Any) -> tuple[Any, bool]:
        # DLPack cannot express torch's lazy conjugate and negative views; resolving
        # them copies only when the bit is set.
        x = x.resolve_conj().resolve_neg()
        if x.dtype == module.bfloat16:
            return x.float(), True
        return x, False

    def restore(self, module: Any, out: Any, bfloat16: bool) -> Any:
        if bfloat16 and out.dtype == module.float32:
            return out.to(module.bfloat16)
        return out


_ADAPTERS: dict[str, _Adapter] = {"torch": _TorchAdapter()}
_GENERIC = _Adapter()


def _check_no_grad(argname: str, library: str, value: Any) -> None:
    if getattr(value, "requires_grad", False) is True:
        raise TypeError(
            f"{argname} is a {library} array with requires_grad=True; gpuconv does not "
            f"track gradients, so its result could not carry them: pass {argname}.detach()")


def _import(backend: Any, argname: str, library: str, value: Any) -> Any:
    try:
        return backend.xp.from_dlpack(value)
    except (BufferError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise TypeError(f"{argname} is a {library} array of dtype {value.dtype} that backend "
                        f"{backend.name!r} could not import through DLPack: {exc}") from None


def _device_backend_object(argname: str, value: Any) -> Any:
    return get_backend_object(dlpack_backend(argname, value))


def _backend_of_device(argname: str, value: Any, find: Callable[[], Any]) -> Any:
    """``find()``, the backend for ``value``'s device, or why it cannot run, naming ``argname``."""
    try:
        return find()
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(
            f"{argname} is a {array_library(value)} array on device "
            f"'{getattr(value, 'device', 'unknown')}', where gpuconv computes with backend "
            f"{dlpack_backend(argname, value)!r}, but {exc}") from None


def call_with_foreign(op: Callable[..., Any], slots: tuple[tuple[str, int], ...],
                      args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run ``op`` with its foreign array arguments (at ``slots``) imported; export the result.

    ``slots`` are the ``(name, position)`` of the op's array arguments.
    """
    args_list, kwargs = list(args), dict(kwargs)
    values = {name: (args_list[pos] if pos < len(args_list) else kwargs.get(name))
              for name, pos in slots}
    foreign = {name: v for name, v in values.items() if v is not None and is_foreign(v)}
    for name, v in foreign.items():
        _check_no_grad(name, array_library(v), v)  # type: ignore[arg-type]
    auto = get_backend() == "auto"
    backend = None
    if auto:
        # One library and one device (or the TypeError naming each argument's).
        name, first = next(iter(foreign.items()))
        backend = _backend_of_device(name, first,
                                     functools.partial(backend_for, "auto", **values))
    widened = set()
    for name, v in foreign.items():
        library = array_library(v)
        module = sys.modules.get(type(v).__module__.split(".")[0])
        ready, was_bfloat16 = _ADAPTERS.get(library, _GENERIC).importable(module, v)
        if was_bfloat16:
            widened.add(name)
        target = backend if backend is not None else _backend_of_device(
            name, ready, functools.partial(_device_backend_object, name, ready))
        values[name] = _import(target, name, library, ready)
    for name, pos in slots:
        if name in foreign:
            if pos < len(args_list):
                args_list[pos] = values[name]
            else:
                kwargs[name] = values[name]
    result = op(*args_list, **kwargs)
    if not auto:
        return result
    # The caller's library: that of the first foreign argument (under "auto" they share one).
    first = next(iter(foreign.values()))
    library = array_library(first)
    module = sys.modules.get(type(first).__module__.split(".")[0])
    # bfloat16 comes back when it was the only floating type among the arrays, as in the
    # caller's library; a float32 (or wider) array alongside keeps the result float32.
    narrow = bool(widened) and all(name in widened for name, v in values.items()
                                   if _kind(v) in ("f", "c"))
    return _export(result, backend, module, _ADAPTERS.get(library, _GENERIC), narrow)


def _kind(value: Any) -> str | None:
    return getattr(getattr(value, "dtype", None), "kind", None)


def _export(result: Any, backend: Any, module: Any, adapter: _Adapter, narrow: bool) -> Any:
    if isinstance(result, tuple):
        return tuple(_export(r, backend, module, adapter, narrow) for r in result)
    from_dlpack = getattr(module, "from_dlpack", None)
    if from_dlpack is None or not is_claimed(result):
        return result  # not an array (a MethodChoice), or a library that cannot import
    if not result.flags.c_contiguous:
        # Some importers refuse (or worse) negative strides; a copy only for views.
        result = backend.xp.ascontiguousarray(result)
    try:
        out = from_dlpack(result)
    except BufferError:
        # Read-only arrays cannot be signalled to every importer: hand it a copy.
        out = from_dlpack(backend.xp.array(result, copy=True))
    return adapter.restore(module, out, narrow)

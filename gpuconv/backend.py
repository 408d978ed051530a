"""Backend registry: which array library computes, chosen per context.

A backend is an object satisfying :class:`gpuconv.backends.Backend`.  Backends
are registered by name with a factory; the factory runs the first time the
backend is used (so registering CuPy imports nothing) and its result is cached.
The current choice lives in a :class:`contextvars.ContextVar`, so threads and
asyncio tasks each see their own.
"""

from __future__ import annotations

import contextvars
import inspect
import threading
from dataclasses import dataclass
from typing import Any, Callable

from . import _dispatch
from ._dispatch import ArrayTypes, common_array_library

__all__ = [
    "BackendUnavailableError",
    "BackendStatus",
    "set_backend",
    "get_backend",
    "available_backends",
    "register_backend",
    "resolve_backend",
    "backend_for",
]


class BackendUnavailableError(RuntimeError):
    """A backend is registered but cannot run here (library or device missing).

    A backend factory raises it with a sentence saying why;
    :func:`available_backends` reports that sentence, and :func:`set_backend`
    re-raises it naming the backend.

    See Also
    --------
    available_backends : which backends can run here.
    register_backend : factories that may raise it.

    Examples
    --------
    >>> import gpuconv
    >>> try:
    ...     with gpuconv.set_backend("cupy"):
    ...         pass                      # compute on the GPU
    ... except gpuconv.BackendUnavailableError:
    ...     pass                          # no CuPy or no device here: stay on NumPy
    >>> issubclass(gpuconv.BackendUnavailableError, RuntimeError)
    True
    """


@dataclass(frozen=True)
class BackendStatus:
    """Whether a registered backend can run here, and if not, why.

    ``bool(status)`` is ``status.usable``.

    Attributes
    ----------
    name : str
        The registered name.
    usable : bool
        Whether the backend could be created here.
    reason : str
        ``"ok"``, or the sentence saying why not (e.g. ``"cupy is not installed"``).

    See Also
    --------
    available_backends : returns one per registered backend.

    Examples
    --------
    >>> import gpuconv
    >>> status = gpuconv.available_backends()["numpy"]
    >>> status
    BackendStatus(name='numpy', usable=True, reason='ok')
    >>> bool(status)
    True
    """

    name: str
    usable: bool
    reason: str

    def __bool__(self) -> bool:
        return self.usable


_AUTO = "auto"
_factories: dict[str, Callable[[], Any]] = {}
_instances: dict[str, Any] = {}
_failures: dict[str, str] = {}
_generation = 0
_invalid: dict[str, str] = {}    # factories whose result is not a backend: why
_lock = threading.Lock()
_current: contextvars.ContextVar[str] = contextvars.ContextVar("gpuconv_backend", default=_AUTO)


def register_backend(name: str, factory: Callable[[], Any], *, replace: bool = False,
                     array_types: ArrayTypes | None = None) -> None:
    """Register a backend under ``name``, and the array types it computes under ``"auto"``.

    Parameters
    ----------
    name : str
        The name users pass to :func:`set_backend`.  ``"auto"`` is reserved.
    factory : callable
        Called with no arguments the first time the backend is needed; returns
        an object implementing :class:`gpuconv.backends.Backend`, or raises
        :class:`BackendUnavailableError` with a sentence saying why it cannot run.
        What it returns is checked then: an object lacking a member of the
        protocol is a ``TypeError`` naming the backend, the factory and the
        missing members (subclass :class:`gpuconv.backends.ArrayBackend` to
        inherit every optional one).
    replace : bool, optional
        Allow replacing an existing registration (default ``False``).
    array_types : iterable of (str, str), or callable, optional
        The array types this backend computes when the backend is ``"auto"``:
        ``(module, class)`` pairs such as ``("cupy", "ndarray")`` (``class``
        may be dotted), matched with ``issubclass`` after looking the module
        up in :data:`sys.modules` (never importing it: a library that is not
        imported cannot have made the array).  The most derived claimed class
        wins.  For the rare library that needs it, a predicate taking a type
        and returning a bool (it must not import anything either); predicates
        are asked after the pairs.  ``None`` (the default) keeps what ``name``
        claimed before (nothing for a new name); ``()`` claims nothing, so the
        backend is reached by name only.

    Raises
    ------
    TypeError
        If ``name`` is not a non-empty str, ``factory`` is not callable or
        ``array_types`` is neither pairs of str nor a callable.
    ValueError
        If ``name`` is ``"auto"``, already registered and ``replace`` is false,
        or one of ``array_types`` is claimed by another backend.

    See Also
    --------
    set_backend : choose the registered backend.
    gpuconv.backends.ArrayBackend : a base class for new backends.

    Examples
    --------
    >>> import gpuconv
    >>> from gpuconv.backends.numpy import NumpyBackend
    >>> gpuconv.register_backend("my-numpy", NumpyBackend, replace=True)
    >>> gpuconv.available_backends()["my-numpy"].usable
    True
    >>> with gpuconv.set_backend("my-numpy"):
    ...     gpuconv.get_backend()
    'my-numpy'

    A backend that claims the arrays of its library is chosen by ``"auto"``
    for them.  Here a pretend library's arrays are a NumPy subclass, claimed
    by a backend that computes with NumPy and returns them:

    >>> import sys, types
    >>> import numpy as np
    >>> from gpuconv.backends import ArrayBackend
    >>> class TaggedArray(np.ndarray):
    ...     pass
    >>> tagged = types.ModuleType("tagged")
    >>> tagged.TaggedArray = TaggedArray
    >>> sys.modules["tagged"] = tagged
    >>> class TaggedBackend(ArrayBackend):
    ...     name = "tagged"
    ...     xp = np
    ...     def correlate_planes(self, *args):
    ...         return super().correlate_planes(*args).view(TaggedArray)
    >>> gpuconv.register_backend("tagged", TaggedBackend, replace=True,
    ...                          array_types=[("tagged", "TaggedArray")])
    >>> x = np.eye(3).view(TaggedArray)
    >>> type(gpuconv.correlate2d(x, [[1.0, 1.0]], method="direct")).__name__
    'TaggedArray'
    >>> gpuconv.register_backend("tagged", TaggedBackend, replace=True, array_types=())
    >>> type(gpuconv.correlate2d(x, [[1.0, 1.0]], method="direct")).__name__
    'ndarray'
    >>> del sys.modules["tagged"]
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"backend name must be a non-empty str, got {name!r}")
    if name == _AUTO:
        raise ValueError("backend name 'auto' is reserved for following the inputs")
    if not callable(factory):
        raise TypeError(
            f"factory must be callable (a class or function returning a backend); got {factory!r}"
        )
    if array_types is not None:
        _dispatch.check_array_types(array_types)
    with _lock:
        if name in _factories and not replace:
            raise ValueError(
                f"a backend named {name!r} is already registered; pass replace=True to replace it"
            )
        if array_types is not None:
            _dispatch.claim_array_types(name, array_types)
        _factories[name] = factory
        _instances.pop(name, None)
        _failures.pop(name, None)
        _invalid.pop(name, None)
        global _generation
        _generation += 1


def registry_generation() -> int:
    """A number that changes whenever a registration does (plans cached by the ops
    hold a backend instance: they are valid for one generation)."""
    return _generation


def _unregister_backend(name: str) -> None:
    """Forget a registration and its array types (for tests and plug-ins that unload)."""
    with _lock:
        for table in (_factories, _instances, _failures, _invalid):
            table.pop(name, None)
        _dispatch.release_array_types(name)
        global _generation
        _generation += 1


def _describe_factory(factory: Any) -> str:
    qualname = getattr(factory, "__qualname__", None)
    module = getattr(factory, "__module__", None)
    return f"{module}.{qualname}" if qualname and module else repr(factory)


def _not_a_backend(name: str, factory: Any, obj: Any) -> str | None:
    """Why ``obj`` is not a backend, or ``None`` when it is one.

    This is ``isinstance(obj, gpuconv.backends.Backend)`` as Python 3.12 checks
    it: the protocol's members are looked up without calling properties (before
    3.12 ``isinstance`` calls them, and a backend's ``fft`` may import its
    library, or raise to say it has none), and the missing ones are named.
    """
    from .backends import protocol_members

    missing = []
    for member in protocol_members():
        try:
            inspect.getattr_static(obj, member)
        except AttributeError:
            missing.append(member)
    if not missing:
        return None
    what = "None" if obj is None else f"a {type(obj).__module__}.{type(obj).__qualname__}"
    return (f"backend {name!r}: its factory {_describe_factory(factory)} returned {what}, "
            f"which is not a gpuconv backend: it lacks {', '.join(missing) or 'nothing'} of "
            "gpuconv.backends.Backend; subclass gpuconv.backends.ArrayBackend to inherit "
            "generic kernels and defaults")


def _instantiate(name: str) -> Any:
    with _lock:
        if name in _instances:
            return _instances[name]
        if name in _failures:
            raise BackendUnavailableError(f"backend {name!r} is not usable: {_failures[name]}")
        if name in _invalid:
            raise TypeError(_invalid[name])
        factory = _factories[name]
    try:
        backend = factory()
    except BackendUnavailableError as exc:
        with _lock:
            _failures[name] = str(exc)
        raise BackendUnavailableError(f"backend {name!r} is not usable: {exc}") from None
    problem = _not_a_backend(name, factory, backend)
    with _lock:
        if problem is not None:
            # Remembered like an unavailable backend: every later use says the same.
            _invalid[name] = problem
            raise TypeError(problem)
        return _instances.setdefault(name, backend)


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        allowed = ", ".join(repr(n) for n in [_AUTO, *_factories])
        raise TypeError(f"backend must be a str, one of {allowed}; got {name!r}")
    if name != _AUTO and name not in _factories:
        allowed = ", ".join(repr(n) for n in [_AUTO, *_factories])
        raise ValueError(f"unknown backend {name!r}; allowed: {allowed}")
    return name


class _BackendContext:
    """Returned by :func:`set_backend`; restores the previous choice on exit."""

    def __init__(self, name: str, token: contextvars.Token[str]):
        self.name = name
        self._token = token

    def __enter__(self) -> str:
        return self.name

    def __exit__(self, *exc_info: object) -> None:
        _current.reset(self._token)

    def __repr__(self) -> str:
        return f"<gpuconv backend {self.name!r}>"


def set_backend(name: str) -> _BackendContext:
    """Choose the backend for the current context (thread or asyncio task).

    Parameters
    ----------
    name : str
        ``"auto"`` (the default) follows the inputs: NumPy arrays run on the
        NumPy backend, CuPy arrays on the CuPy backend (each on the backend
        that claims their type, see :func:`register_backend`), arrays of
        another library that export DLPack (torch tensors) on the backend of
        their device, returned in their library without a copy; mixing
        libraries raises ``TypeError``.  Any other registered name (``"numpy"``,
        ``"cupy"``, or one added with :func:`register_backend`) computes there:
        inputs from another library are moved to that backend and the result is
        that backend's array.  Such a move is a host/device copy; it happens
        only because a backend was chosen explicitly.

    Returns
    -------
    context
        The choice is in force at once.  Used in a ``with`` statement, the
        previous choice is restored on exit.

    Raises
    ------
    ValueError
        If ``name`` is not registered.
    BackendUnavailableError
        If the backend is registered but cannot run here (the message says why).

    See Also
    --------
    get_backend : the current choice.
    available_backends : which backends can run here.

    Examples
    --------
    >>> import gpuconv
    >>> gpuconv.get_backend()
    'auto'
    >>> with gpuconv.set_backend("numpy"):
    ...     gpuconv.get_backend()
    'numpy'
    >>> gpuconv.get_backend()
    'auto'
    """
    name = _check_name(name)
    if name != _AUTO:
        _instantiate(name)
    return _BackendContext(name, _current.set(name))


def get_backend() -> str:
    """Name of the backend chosen in the current context (``"auto"`` by default).

    Returns
    -------
    str
        ``"auto"`` or a name registered with :func:`register_backend`.

    See Also
    --------
    set_backend : change it.

    Examples
    --------
    >>> import gpuconv
    >>> gpuconv.get_backend()
    'auto'
    """
    return _current.get()


def available_backends() -> dict[str, BackendStatus]:
    """Every registered backend with whether it can run here and, if not, why.

    This instantiates each backend, which imports its array library.

    Returns
    -------
    dict of str to BackendStatus
        ``status.usable`` is a bool; ``status.reason`` is ``"ok"`` or a sentence
        such as ``"cupy is not installed"``.

    See Also
    --------
    BackendStatus : each entry.
    register_backend : add a backend.

    Examples
    --------
    >>> import gpuconv
    >>> status = gpuconv.available_backends()["numpy"]
    >>> status.usable, status.reason
    (True, 'ok')
    """
    statuses = {}
    for name in list(_factories):
        try:
            _instantiate(name)
        except BackendUnavailableError:
            statuses[name] = BackendStatus(name, False, _failures[name])
        except TypeError:
            if name not in _invalid:
                raise
            statuses[name] = BackendStatus(name, False, _invalid[name])
        else:
            statuses[name] = BackendStatus(name, True, "ok")
    return statuses


def backend_for(name: str | None, **arrays: Any) -> Any:
    """The backend object that computes with these arrays under the choice ``name``.

    The one place a backend name becomes a backend: every layer, trainer,
    example and command goes through here, so ``"auto"`` means the same
    everywhere.

    Parameters
    ----------
    name : str or None
        ``None`` follows the current context (:func:`set_backend`).
        ``"auto"`` follows ``arrays``: the backend claiming their common
        library (mixing libraries raises ``TypeError``), NumPy when there are
        none or none belongs to an array library.  Arrays of a library no
        backend claims that export DLPack (torch tensors) follow their device:
        NumPy for the CPU, CuPy for a CUDA device.  Any other registered name
        is that backend.
    **arrays
        The array arguments of the call, by argument name (``None`` values are
        ignored); a dask array counts as the library of its chunks.

    Returns
    -------
    Backend
        The backend object, instantiated on first use.

    Raises
    ------
    ValueError
        ``name`` is not registered.
    TypeError
        Under ``"auto"``: arrays of several libraries or devices, or of a
        library claimed by no backend and on a device none computes on.
    BackendUnavailableError
        The backend is registered but cannot run here (the message says why).

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv.backend import backend_for
    >>> backend_for("auto").name, backend_for("auto", x=np.ones(3)).name
    ('numpy', 'numpy')
    >>> backend_for("numpy", x=[1, 2]).name
    'numpy'
    """
    name = _current.get() if name is None else _check_name(name)
    if name == _AUTO:
        library = common_array_library(**arrays)
        name = library if library is not None else "numpy"
        if library is not None and any(_dispatch.is_foreign(v) for v in arrays.values()):
            name = _device_backend(**arrays)
        if name not in _factories:
            raise TypeError(
                f"inputs are {name} arrays, but no gpuconv backend named {name!r} is registered"
            )
    return _instantiate(name)


def _device_backend(**arrays: Any) -> str:
    """The backend of the one DLPack device of these foreign arrays."""
    devices = {arg: _dispatch.dlpack_backend(arg, v) for arg, v in arrays.items()
               if v is not None and _dispatch.is_foreign(v)}
    if len(set(devices.values())) > 1:
        detail = ", ".join(f"{arg} is on device '{getattr(arrays[arg], 'device', 'unknown')}'"
                           for arg in devices)
        raise TypeError(f"Arrays on several devices in one call ({detail}); move them to one "
                        "device, or choose a backend explicitly with gpuconv.set_backend(...)")
    return next(iter(devices.values()))


def get_backend_object(name: str) -> Any:
    """The backend instance registered as ``name`` (``"auto"`` with no inputs: NumPy)."""
    return backend_for(_check_name(name))


def resolve_backend(**arrays: Any) -> Any:
    """The backend that computes a call with these array arguments.

    With ``"auto"`` the inputs decide (mixed libraries raise ``TypeError``);
    otherwise the chosen backend computes and moves foreign inputs itself.
    A dask array is not a backend: its chunks' library (``_meta``) decides,
    and each chunk is computed on that backend.
    """
    return backend_for(None, **arrays)

"""The stand-in's device array and the rules that make NumPy behave like CuPy.

Everything here runs on the host: a "device" array is a NumPy array kept
behind a distinct type, :class:`ndarray`, that enforces CuPy's rules where
they differ from NumPy's (CuPy 14, read from ``cupy/_core/core.pyx``):

* implicit conversion to NumPy (``numpy.asarray(x)``, ``__array__``) raises
  ``TypeError``; ``x.get()`` and ``cupy.asnumpy(x)`` are the explicit copies;
* ``float(x)``, ``int(x)``, ``complex(x)``, ``bool(x)``, ``x.item()``,
  ``x.tolist()``, ``repr(x)`` work, each through ``get()``: a blocking
  device-to-host copy, counted here as a synchronisation;
* there is no ``__index__``: a 0-d device integer is not a Python index;
* NumPy arrays (of any shape, even 0-d) are refused as operands of device
  arithmetic, ufuncs and functions with CuPy's ``TypeError: Unsupported type
  <class 'numpy.ndarray'>``; Python and NumPy scalars are accepted; assigning
  a host array into a device array raises CuPy's ``ValueError`` (only host
  scalars can be assigned);
* every result is a device array: reductions and integer indexing give 0-d
  device arrays, never NumPy scalars;
* only CuPy's dtypes exist on the device (bool, integers, float16/32/64,
  complex64/128, native byte order);
* ``flags`` has ``c_contiguous``, ``f_contiguous`` and ``owndata`` only (device
  arrays are always writeable); ``data.ptr``, ``device`` and
  ``__cuda_array_interface__`` exist;
* NumPy functions called on device arrays dispatch to the stand-in's ``cupy``
  through ``__array_function__`` / ``__array_ufunc__``, as with CuPy.

Views share memory with their base, as on a device.  :func:`activity`
counts synchronisations, transfers and kernel launches.
"""

from __future__ import annotations

import weakref

import collections
import contextlib
import functools
import operator
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ndarray", "Activity", "activity", "record_sync", "record_launch",
           "device_function", "wrap_module_function", "to_host_args", "to_device",
           "SUPPORTED_DTYPE_CHARS", "check_dtype", "DEVICE_ID"]

DEVICE_ID = 0
# cupy/_core/_dtype.pyx: bool, the integers, float16/32/64, complex64/128.
SUPPORTED_DTYPE_CHARS = "?bhilqBHILQefdFD"
# CuPy's scalar_type_set: Python scalars and NumPy scalar types, nothing else.
_PY_SCALARS = (bool, int, float, complex)


# -- what happened on the "device" --------------------------------------------
@dataclass
class Activity:
    """What a block of code made the device do (see :func:`activity`).

    ``syncs`` counts blocking device-to-host waits by what caused them
    (``"get"``, ``"bool"``, ``"float"``, ``"int"``, ``"complex"``, ``"item"``,
    ``"tolist"``, ``"repr"``, ``"stream.synchronize"``, ...);
    ``to_device``/``to_host`` count copies between host and device;
    ``launches`` counts kernel launches by name expression.
    """

    syncs: collections.Counter = field(default_factory=collections.Counter)
    to_device: int = 0
    to_host: int = 0
    launches: collections.Counter = field(default_factory=collections.Counter)

    @property
    def total_syncs(self) -> int:
        return sum(self.syncs.values())

    @property
    def total_launches(self) -> int:
        return sum(self.launches.values())


_log = Activity()


def record_sync(kind: str) -> None:
    _log.syncs[kind] += 1


def record_launch(name: str) -> None:
    _log.launches[name] += 1


@contextlib.contextmanager
def activity():
    """Count what the device does inside the block.

    Examples
    --------
    >>> with activity() as seen:  # doctest: +SKIP
    ...     float(cupy.ones(3).sum())
    >>> seen.syncs  # doctest: +SKIP
    Counter({'float': 1})
    """
    before = Activity(_log.syncs.copy(), _log.to_device, _log.to_host, _log.launches.copy())
    seen = Activity()
    try:
        yield seen
    finally:
        seen.syncs.update(_log.syncs - before.syncs)
        seen.launches.update(_log.launches - before.launches)
        seen.to_device = _log.to_device - before.to_device
        seen.to_host = _log.to_host - before.to_host


# -- conversions between host values and device arrays ------------------------
def _unsupported(value: Any, where: str = "") -> TypeError:
    hint = (" (a NumPy array where CuPy needs a device array: CuPy refuses implicit "
            "host-to-device copies; use cupy.asarray)") if isinstance(value, np.ndarray) else ""
    prefix = f"{where}: " if where else ""
    return TypeError(f"{prefix}Unsupported type {type(value)}{hint}")


def check_dtype(dtype: Any) -> np.dtype:
    """``dtype`` if CuPy can hold it, else CuPy's ``ValueError``."""
    dtype = np.dtype(dtype)
    if dtype.byteorder == ">":
        raise ValueError(f"Unsupported dtype {dtype} with big-endian byte-order")
    if dtype.char not in SUPPORTED_DTYPE_CHARS:
        raise ValueError(f"Unsupported dtype {dtype}")
    return dtype


def to_host_args(value: Any, where: str = "") -> Any:
    """Replace device arrays by their buffers (recursively); refuse NumPy arrays."""
    if isinstance(value, ndarray):
        return value._host
    if isinstance(value, np.ndarray):
        raise _unsupported(value, where)
    t = type(value)
    if t is list or t is tuple:
        return t(to_host_args(v, where) for v in value)
    if t is dict:
        return {k: to_host_args(v, where) for k, v in value.items()}
    return value


def to_device(result: Any, inputs: tuple = ()) -> Any:
    """Wrap host results as device arrays; an input returned as is stays that object."""
    if isinstance(result, np.ndarray):
        for arg in inputs:
            if isinstance(arg, ndarray) and arg._host is result:
                return arg
        return ndarray._from_host(result)
    if isinstance(result, np.generic):
        return ndarray._from_host(np.asarray(result))
    if isinstance(result, tuple):
        items = [to_device(r, inputs) for r in result]
        return type(result)(*items) if hasattr(result, "_fields") else tuple(items)
    if type(result) is list:
        return [to_device(r, inputs) for r in result]
    return result


def _flat_inputs(args: tuple, kwargs: dict) -> tuple:
    out = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, (list, tuple)):
            out.extend(a)
        else:
            out.append(a)
    return tuple(out)


def device_function(name: str, host_function: Any) -> Any:
    """``host_function`` with CuPy's calling rules: device arrays in, device arrays out."""

    @functools.wraps(host_function)
    def call(*args, **kwargs):
        where = f"cupy.{name}"
        result = host_function(*to_host_args(args, where), **to_host_args(kwargs, where))
        return to_device(result, _flat_inputs(args, kwargs))

    call.__module__ = "cupy"
    call.__qualname__ = name
    return call


class _DeviceUfunc:
    """A NumPy ufunc under CuPy's rules; operands must be device arrays or scalars."""

    def __init__(self, name: str, host_ufunc: np.ufunc):
        self.__name__ = name
        self._ufunc = host_ufunc
        self.nin, self.nout, self.nargs = host_ufunc.nin, host_ufunc.nout, host_ufunc.nargs
        self.types = host_ufunc.types

    def _run(self, method: str, args: tuple, kwargs: dict) -> Any:
        where = f"cupy.{self.__name__}"
        host_args = []
        for a in args:
            if isinstance(a, ndarray):
                host_args.append(a._host)
            elif type(a) in _PY_SCALARS or isinstance(a, np.generic) or a is None:
                host_args.append(a)
            else:
                # NumPy arrays, lists, tuples: CuPy's kernels take none of them.
                raise _unsupported(a, where)
        host_kwargs = dict(kwargs)
        outs: tuple = ()
        if kwargs.get("out") is not None:
            out = kwargs["out"]
            outs = out if isinstance(out, tuple) else (out,)
            for o in outs:
                if o is not None and not isinstance(o, ndarray):
                    raise TypeError(f"{where}: output must be a cupy.ndarray, got {type(o)}")
            host_kwargs["out"] = tuple(None if o is None else o._host for o in outs)
        fn = self._ufunc if method == "__call__" else getattr(self._ufunc, method)
        return to_device(fn(*host_args, **host_kwargs), (*args, *outs))

    def __call__(self, *args, **kwargs):
        return self._run("__call__", args, kwargs)

    def reduce(self, *args, **kwargs):
        return self._run("reduce", args, kwargs)

    def accumulate(self, *args, **kwargs):
        return self._run("accumulate", args, kwargs)

    def outer(self, *args, **kwargs):
        return self._run("outer", args, kwargs)

    def at(self, *args, **kwargs):
        return self._run("at", args, kwargs)

    def __repr__(self) -> str:
        return f"<ufunc '{self.__name__}'>"


def wrap_module_function(name: str, value: Any) -> Any:
    """What the stand-in's namespace exposes for NumPy's attribute ``value``."""
    if isinstance(value, np.ufunc):
        return _DeviceUfunc(name, value)
    if isinstance(value, type) or not callable(value):
        # dtypes and scalar types (cupy.float32 is numpy.float32), constants.
        return value
    return device_function(name, value)


def _namespace() -> Any:
    return sys.modules["cupy"]


# -- the device array ---------------------------------------------------------
class _Flags:
    """``cupy.ndarray.flags``: three read-only booleans, nothing about writeability."""

    __slots__ = ("c_contiguous", "f_contiguous", "owndata")

    def __init__(self, c: bool, f: bool, own: bool):
        self.c_contiguous, self.f_contiguous, self.owndata = c, f, own

    @property
    def fnc(self) -> bool:
        return self.f_contiguous and not self.c_contiguous

    @property
    def forc(self) -> bool:
        return self.f_contiguous or self.c_contiguous

    def __getitem__(self, name: str) -> bool:
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[name]

    def __repr__(self) -> str:
        return (f"  C_CONTIGUOUS : {self.c_contiguous}\n  F_CONTIGUOUS : "
                f"{self.f_contiguous}\n  OWNDATA : {self.owndata}")


class MemoryPointer:
    """``cupy.cuda.MemoryPointer``: where an array's first element lives."""

    def __init__(self, ptr: int, device_id: int = DEVICE_ID):
        self.ptr = ptr
        self.device_id = device_id

    @property
    def device(self) -> Any:
        return _namespace().cuda.Device(self.device_id)

    def __int__(self) -> int:
        return self.ptr


def _operand(value: Any, where: str) -> Any:
    """The host value of an arithmetic operand, or NotImplemented, as CuPy decides."""
    if isinstance(value, ndarray):
        return value._host
    if type(value) in _PY_SCALARS or isinstance(value, np.generic):
        return value
    if isinstance(value, np.ndarray):
        raise _unsupported(value, where)
    return NotImplemented


def _binary(op: Any, name: str, reflected: bool = False) -> Any:
    def method(self, other):
        value = _operand(other, f"cupy.ndarray.{name}")
        if value is NotImplemented:
            return NotImplemented
        result = op(value, self._host) if reflected else op(self._host, value)
        return to_device(result)

    method.__name__ = name
    return method


def _inplace(op: Any, name: str) -> Any:
    def method(self, other):
        value = _operand(other, f"cupy.ndarray.{name}")
        if value is NotImplemented:
            raise _unsupported(other, f"cupy.ndarray.{name}")
        op(self._host, value)
        return self

    method.__name__ = name
    return method


def _host_method(name: str) -> Any:
    def method(self, *args, **kwargs):
        where = f"cupy.ndarray.{name}"
        result = getattr(self._host, name)(*to_host_args(args, where),
                                           **to_host_args(kwargs, where))
        return to_device(result, (self, *_flat_inputs(args, kwargs)))

    method.__name__ = name
    return method


def _getitem_key(key: Any) -> Any:
    """Indices: device arrays are used in place; NumPy arrays and lists CuPy copies over."""
    if isinstance(key, ndarray):
        return key._host
    if isinstance(key, tuple):
        return tuple(k._host if isinstance(k, ndarray) else k for k in key)
    return key


# Every live device array, by id (device arrays are unhashable, as CuPy's are).
_LIVE: dict[int, "weakref.ref[ndarray]"] = {}


def _register(arr: "ndarray") -> None:
    key = id(arr)
    _LIVE[key] = weakref.ref(arr, lambda _, key=key: _LIVE.pop(key, None))


def _root(host: np.ndarray) -> np.ndarray:
    while isinstance(host.base, np.ndarray):
        host = host.base
    return host


def live_buffer_containing(ptr: int, nbytes: int) -> tuple[int | None, int]:
    """(start, size) of the live device allocation holding ``nbytes`` at ``ptr``, or
    ``(None, 0)``: what a raw-pointer library call (cuBLAS) may touch."""
    for ref in list(_LIVE.values()):
        arr = ref()
        if arr is None:
            continue
        root = _root(arr._host)
        start = root.__array_interface__["data"][0]
        if start <= ptr and ptr + nbytes <= start + root.nbytes:
            return start, root.nbytes
    return None, 0


class ndarray:  # noqa: N801 - CuPy's name
    """A NumPy array held as if on a CUDA device, with CuPy's conversion rules."""

    __slots__ = ("_host", "__weakref__")
    __array_priority__ = 100
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, shape: Any, dtype: Any = float, memptr: Any = None,
                 strides: Any = None, order: str = "C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("the CuPy stand-in does not emulate ndarray(memptr=..., "
                                      "strides=...)")
        self._host = np.empty(shape, dtype=check_dtype(dtype), order=order)
        _register(self)

    @classmethod
    def _from_host(cls, host: np.ndarray) -> ndarray:
        check_dtype(host.dtype)
        obj = cls.__new__(cls)
        obj._host = host
        _register(obj)
        return obj

    # -- attributes ----------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._host.shape

    @shape.setter
    def shape(self, value: Any) -> None:
        self._host.shape = value

    dtype = property(lambda self: self._host.dtype)
    ndim = property(lambda self: self._host.ndim)
    size = property(lambda self: self._host.size)
    itemsize = property(lambda self: self._host.itemsize)
    nbytes = property(lambda self: self._host.nbytes)
    strides = property(lambda self: self._host.strides)

    @property
    def flags(self) -> _Flags:
        f = self._host.flags
        return _Flags(f.c_contiguous, f.f_contiguous, self._host.base is None)

    @property
    def base(self) -> ndarray | None:
        base = self._host.base
        return ndarray._from_host(base) if isinstance(base, np.ndarray) else None

    @property
    def data(self) -> MemoryPointer:
        return MemoryPointer(self._host.__array_interface__["data"][0])

    @property
    def device(self) -> Any:
        return _namespace().cuda.Device(DEVICE_ID)

    @property
    def T(self) -> ndarray:  # noqa: N802
        return self if self.ndim < 2 else to_device(self._host.T)

    @property
    def mT(self) -> ndarray:  # noqa: N802
        return to_device(np.swapaxes(self._host, -1, -2))

    @property
    def real(self) -> ndarray:
        return to_device(self._host.real, (self,))

    @real.setter
    def real(self, value: Any) -> None:
        self._host.real = self._value(value, "real")

    @property
    def imag(self) -> ndarray:
        return to_device(self._host.imag)

    @imag.setter
    def imag(self, value: Any) -> None:
        self._host.imag = self._value(value, "imag")

    @property
    def __cuda_array_interface__(self) -> dict:
        host = self._host
        return {"shape": host.shape, "typestr": host.dtype.str, "descr": host.dtype.descr,
                "version": 3, "stream": 1,
                "strides": None if host.flags.c_contiguous else host.strides,
                "data": (self.data.ptr if host.size else 0, False)}

    # -- explicit transfers (each a blocking copy unless an async stream is given) --
    def get(self, stream: Any = None, order: str = "C", out: np.ndarray | None = None,
            blocking: bool = True) -> np.ndarray:
        """A host copy (``numpy.ndarray``): CuPy's explicit device-to-host transfer."""
        if stream is None or blocking:
            record_sync("get")
        _log.to_host += 1
        if out is not None:
            if not isinstance(out, np.ndarray):
                raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
            if out.dtype != self.dtype:
                raise TypeError(f"{out.dtype} array cannot be obtained from {self.dtype} array")
            if out.shape != self.shape:
                raise ValueError(f"Shape mismatch. Expected shape: {self.shape}, "
                                 f"actual shape: {out.shape}")
            np.copyto(out, self._host)
            return out
        order = order.upper()
        if order == "A":
            order = "F" if self._host.flags.f_contiguous else "C"
        return np.array(self._host, order=order, copy=True)

    def set(self, arr: np.ndarray, stream: Any = None) -> None:
        if not isinstance(arr, np.ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        if self.dtype != arr.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if self.shape != arr.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        _log.to_device += 1
        np.copyto(self._host, arr)

    def _host_scalar(self, kind: str) -> np.ndarray:
        record_sync(kind)
        _log.to_host += 1
        return np.array(self._host, copy=True)

    def item(self) -> Any:
        if self.size != 1:
            raise ValueError("can only convert an array of size 1 to a Python scalar")
        return self._host_scalar("item").item()

    def tolist(self) -> Any:
        return self._host_scalar("tolist").tolist()

    def tobytes(self, order: str = "C") -> bytes:
        return self._host_scalar("tobytes").tobytes(order)

    def __bool__(self) -> bool:
        if self.size == 0:
            warnings.warn("The truth value of an empty array is ambiguous. Returning False, "
                          "but in future this will result in an error. Use `array.size > 0` "
                          "to check that an array is not empty.", DeprecationWarning,
                          stacklevel=2)
            return False
        if self.size != 1:
            raise ValueError("The truth value of an array with more than one element is "
                             "ambiguous. Use a.any() or a.all()")
        return bool(self._host_scalar("bool").reshape(()))

    def __int__(self) -> int:
        return int(self._host_scalar("int"))

    def __float__(self) -> float:
        return float(self._host_scalar("float"))

    def __complex__(self) -> complex:
        return complex(self._host_scalar("complex"))

    def __repr__(self) -> str:
        return repr(self._host_scalar("repr"))

    def __str__(self) -> str:
        return str(self._host_scalar("repr"))

    def __format__(self, spec: str) -> str:
        return format(self._host_scalar("repr"), spec)

    def __reduce__(self) -> tuple:
        return (_namespace().array, (self._host_scalar("pickle"),))

    def __copy__(self) -> ndarray:
        return self.copy()

    def __deepcopy__(self, memo: dict) -> ndarray:
        return self.copy()

    # -- CuPy refuses what NumPy would do silently --------------------------
    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any):
        cupy = _namespace()
        func = getattr(cupy, ufunc.__name__, None)
        if not isinstance(func, _DeviceUfunc):
            return NotImplemented
        for x in (*inputs, *kwargs.get("out", ())):
            if not (isinstance(x, (ndarray, np.ndarray)) or type(x) in _PY_SCALARS
                    or isinstance(x, np.generic)):
                return NotImplemented
        if ufunc.__name__ in ("greater", "greater_equal", "less", "less_equal", "equal",
                              "not_equal"):
            inputs = tuple(x.item() if isinstance(x, np.ndarray) and x.ndim == 0 else x
                           for x in inputs)
        return func._run(method, inputs, kwargs)

    def __array_function__(self, func: Any, types: tuple, args: tuple, kwargs: dict):
        module = _namespace()
        try:
            for part in func.__module__.split(".")[1:]:
                module = getattr(module, part)
            device_func = getattr(module, func.__name__)
        except AttributeError:
            return NotImplemented
        if device_func is func:
            return NotImplemented
        if not all(issubclass(t, (ndarray, np.ndarray)) for t in types):
            return NotImplemented
        return device_func(*args, **kwargs)

    # -- containers -----------------------------------------------------------
    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    def __getitem__(self, key: Any) -> ndarray:
        host_key = _getitem_key(key)
        result = self._host[host_key]
        if isinstance(result, np.generic):
            # CuPy returns a 0-d view, never a scalar: index again with an Ellipsis.
            keys = host_key if isinstance(host_key, tuple) else (host_key,)
            result = self._host[(*keys, Ellipsis)]
        return to_device(result, (self,))

    def _value(self, value: Any, where: str) -> Any:
        if isinstance(value, ndarray):
            return value._host
        if type(value) in _PY_SCALARS or isinstance(value, np.generic):
            return value
        # NumPy arrays, lists: CuPy's elementwise copy takes neither.
        raise _unsupported(value, f"cupy.ndarray.{where}")

    def _fill_scalar(self, value: Any) -> Any:
        """What CuPy's ``fill`` makes of a host value: a scalar, or ``ValueError``."""
        scalar = np.asarray(value, dtype=self.dtype)
        if scalar.shape != ():
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        return scalar[()]

    def __setitem__(self, key: Any, value: Any) -> None:
        # A device value is copied (broadcasting); anything else goes through fill().
        host_value = value._host if isinstance(value, ndarray) else self._fill_scalar(value)
        self._host[_getitem_key(key)] = host_value

    def fill(self, value: Any) -> None:
        if isinstance(value, ndarray):
            if value.shape != ():
                raise ValueError("non-scalar cupy.ndarray cannot be used for fill")
            self._host[...] = value._host
        else:
            self._host[...] = self._fill_scalar(value)

    # -- methods that keep data on the device -------------------------------
    def astype(self, dtype: Any, order: str = "K", casting: Any = None, subok: Any = None,
               copy: bool = True) -> ndarray:
        result = self._host.astype(check_dtype(dtype), order=order, copy=copy,
                                   **({} if casting is None else {"casting": casting}))
        return to_device(result, (self,))

    def copy(self, order: str = "C") -> ndarray:
        return ndarray._from_host(self._host.copy(order=order))

    def view(self, dtype: Any = None) -> ndarray:
        return to_device(self._host.view() if dtype is None
                         else self._host.view(check_dtype(dtype)))

    def reshape(self, *shape: Any, order: str = "C") -> ndarray:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return to_device(self._host.reshape(shape, order=order), (self,))

    def transpose(self, *axes: Any) -> ndarray:
        return to_device(self._host.transpose(*axes), (self,))

    def ptp(self, axis: Any = None, out: Any = None, keepdims: bool = False) -> ndarray:
        return _namespace().ptp(self, axis=axis, out=out, keepdims=keepdims)

    def dot(self, b: Any, out: Any = None) -> ndarray:
        return _namespace().dot(self, b, out=out)


    def __neg__(self) -> ndarray:
        return to_device(-self._host)

    def __pos__(self) -> ndarray:
        return self

    def __abs__(self) -> ndarray:
        return to_device(abs(self._host))

    def __invert__(self) -> ndarray:
        return to_device(~self._host)


# Methods that compute on the device: NumPy's, with device arrays in and out.
for _name in ("all", "any", "argmax", "argmin", "argpartition", "argsort", "choose", "clip",
              "compress", "conj", "conjugate", "cumprod", "cumsum", "diagonal", "flatten", "max",
              "mean", "min", "nonzero", "partition", "prod", "put", "ravel", "repeat", "round",
              "sort", "squeeze", "std", "sum", "swapaxes", "take", "trace", "var"):
    setattr(ndarray, _name, _host_method(_name))
# Arithmetic and comparisons: device arrays and scalars only.
for _name, _fn in (("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("matmul", operator.matmul), ("truediv", operator.truediv),
                   ("floordiv", operator.floordiv), ("mod", operator.mod), ("pow", operator.pow),
                   ("lshift", operator.lshift), ("rshift", operator.rshift),
                   ("and", operator.and_), ("or", operator.or_), ("xor", operator.xor),
                   ("divmod", divmod)):
    setattr(ndarray, f"__{_name}__", _binary(_fn, f"__{_name}__"))
    setattr(ndarray, f"__r{_name}__", _binary(_fn, f"__r{_name}__", reflected=True))
for _name, _fn in (("add", operator.iadd), ("sub", operator.isub), ("mul", operator.imul),
                   ("truediv", operator.itruediv), ("floordiv", operator.ifloordiv),
                   ("mod", operator.imod), ("pow", operator.ipow), ("lshift", operator.ilshift),
                   ("rshift", operator.irshift), ("and", operator.iand), ("or", operator.ior),
                   ("xor", operator.ixor)):
    setattr(ndarray, f"__i{_name}__", _inplace(_fn, f"__i{_name}__"))
for _name, _fn in (("lt", operator.lt), ("le", operator.le), ("eq", operator.eq),
                   ("ne", operator.ne), ("gt", operator.gt), ("ge", operator.ge)):
    setattr(ndarray, f"__{_name}__", _binary(_fn, f"__{_name}__"))
del _name, _fn
ndarray.__module__ = "cupy"


# -- host <-> device at the namespace's front door ---------------------------------
def _send(obj: Any, dtype: Any, copy: Any, order: Any, ndmin: int = 0) -> ndarray:
    """``cupy.array``: device arrays are used as they are, anything else is copied over."""
    if isinstance(obj, ndarray):
        result = obj._host.astype(check_dtype(dtype) if dtype is not None else obj.dtype,
                                  order=order or "K", copy=bool(copy))
        if ndmin > result.ndim:
            result = result.reshape((1,) * (ndmin - result.ndim) + result.shape)
        return to_device(result, (obj,))
    if copy is False:
        raise ValueError("Unable to avoid copy while creating an array as requested: the "
                         "input is on the host")
    host = np.array(to_host_args_lenient(obj), dtype=dtype, order=order or "K", ndmin=ndmin,
                    copy=True)
    _log.to_device += 1
    return ndarray._from_host(host)


def to_host_args_lenient(value: Any) -> Any:
    """Like :func:`to_host_args`, but NumPy arrays pass (creation functions copy them over)."""
    if isinstance(value, ndarray):
        return value._host
    t = type(value)
    if t is list or t is tuple:
        return t(to_host_args_lenient(v) for v in value)
    return value


def array(obj: Any, dtype: Any = None, copy: bool = True, order: str = "K",
          subok: bool = False, ndmin: int = 0, *, blocking: bool = False) -> ndarray:
    return _send(obj, dtype, copy, order, ndmin)


def asarray(a: Any, dtype: Any = None, order: Any = None, *, copy: Any = None,
            blocking: bool = False) -> ndarray:
    return _send(a, dtype, copy, order)


def asanyarray(a: Any, dtype: Any = None, order: Any = None, *, copy: Any = None,
               blocking: bool = False) -> ndarray:
    return _send(a, dtype, copy, order)


def ascontiguousarray(a: Any, dtype: Any = None) -> ndarray:
    if not isinstance(a, ndarray):
        # CuPy's ascontiguousarray is typed: it takes device arrays only.
        raise TypeError(f"Argument 'a' has incorrect type (expected cupy._core.core."
                        f"_ndarray_base, got {type(a).__name__})")
    result = np.ascontiguousarray(a._host, dtype=None if dtype is None else check_dtype(dtype))
    return to_device(result, (a,))


def asnumpy(a: Any, stream: Any = None, order: str = "C", out: Any = None, *,
            blocking: bool = True) -> np.ndarray:
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    result = np.asarray(a, order=order)
    if out is not None:
        out[...] = result
        return out
    return result


def get_array_module(*args: Any) -> Any:
    return _namespace() if any(isinstance(a, ndarray) for a in args) else np

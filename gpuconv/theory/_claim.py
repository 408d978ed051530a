"""ClaimResult and the helpers every claim uses: the backend context, the
rounding-error constant ``gamma_n`` and the result constructor."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

__all__ = ["ClaimResult"]


@dataclass(frozen=True)
class ClaimResult:
    """The outcome of checking one claim.

    Attributes
    ----------
    claim : str
        The claim, in words.
    max_error : float
        The largest difference observed between the two sides.
    tolerance : float
        The largest difference floating point allows (0 for exact claims).
    passed : bool
        ``max_error <= tolerance`` and any further condition of the claim.
    detail : str
        What was computed, and for the exercises the answers.

    See Also
    --------
    check : every claim's result.

    Examples
    --------
    >>> from gpuconv import theory
    >>> r = theory.laplacian_claim()
    >>> r.passed, r.max_error <= r.tolerance
    (True, True)
    >>> print(theory.ClaimResult("1 + 1 = 2", 0.0, 0.0, True))
    pass  1 + 1 = 2: max error 0 <= 0
    """

    claim: str
    max_error: float
    tolerance: float
    passed: bool
    detail: str = ""

    def __str__(self) -> str:
        flag = "pass" if self.passed else "FAIL"
        return f"{flag}  {self.claim}: max error {self.max_error:.3g} <= {self.tolerance:.3g}"


# -- helpers ------------------------------------------------------------------------
@contextlib.contextmanager
def _on(backend: str | None) -> Iterator[Any]:
    import gpuconv
    from ..backend import get_backend_object, resolve_backend

    if backend is None:
        yield resolve_backend()
        return
    with gpuconv.set_backend(backend):
        yield get_backend_object(backend)


def _np(backend: Any, a: Any) -> np.ndarray:
    return np.asarray(backend.to_numpy(a))


def _gamma(n: int, dtype: Any = np.float64) -> float:
    u = float(np.finfo(np.dtype(dtype)).eps) / 2
    return n * u / (1 - n * u)


def _result(claim: str, err: float, tol: float, detail: str = "",
            extra: bool = True) -> ClaimResult:
    err = float(err)
    return ClaimResult(claim, err, float(tol), bool(err <= tol and extra), detail)


# Argument checks at the front door of each public function: a sentence naming
# the argument instead of NumPy's own error from deep inside.
def _int(argname: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argname} must be an int; got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{argname} must be {bound}; got {value!r}")
    return int(value)


def _int_pair(argname: str, value: Any, minimum: int | None = None) -> tuple[int, int]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{argname} must be a pair of ints; got {value!r}")
    low = -(2**62) if minimum is None else minimum
    try:
        return _int(argname, value[0], low), _int(argname, value[1], low)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{exc} (in {argname}={value!r})") from None


def _rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, (np.random.Generator, np.random.SeedSequence)):
        return np.random.default_rng(seed)
    return np.random.default_rng(_int("seed", seed, 0))


def _bool(argname: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{argname} must be a bool; got {value!r}")
    return bool(value)


def _abs_full_conv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import scipy.signal

    return scipy.signal.convolve2d(np.abs(a), np.abs(b), "full")


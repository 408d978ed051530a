"""Library-wide settings that an op may consult (per context, like the backend)."""

from __future__ import annotations

import contextvars
import os

__all__ = ["DEFAULT_SCRATCH_BYTES", "scratch_limit", "get_scratch_limit"]

DEFAULT_SCRATCH_BYTES = 256 * 2**20


def _initial_limit() -> int:
    env = os.environ.get("GPUCONV_SCRATCH_BYTES")
    if env is None:
        return DEFAULT_SCRATCH_BYTES
    try:
        value = int(env)
    except ValueError:
        raise ValueError(f"GPUCONV_SCRATCH_BYTES must be an integer; got {env!r}") from None
    if value <= 0:
        raise ValueError(f"GPUCONV_SCRATCH_BYTES must be positive; got {value}")
    return value


_scratch: contextvars.ContextVar[int] = contextvars.ContextVar(
    "gpuconv_scratch_bytes", default=_initial_limit()
)


class _ScratchContext:
    def __init__(self, token: contextvars.Token[int]):
        self._token = token

    def __enter__(self) -> int:
        return _scratch.get()

    def __exit__(self, *exc_info: object) -> None:
        _scratch.reset(self._token)


def scratch_limit(nbytes: int) -> _ScratchContext:
    """Bound the temporary memory one call may use (default 256 MiB).

    The ``"gemm"`` and overlap-add methods process their work in chunks sized
    so that their scratch buffers stay under this bound.  Like
    :func:`gpuconv.set_backend`, the setting applies at once to the current
    context and, used in a ``with`` statement, is restored on exit.

    Parameters
    ----------
    nbytes : int
        Positive number of bytes.

    Returns
    -------
    context
        The bound is in force at once; used in a ``with`` statement, the
        previous bound is restored on exit.

    Raises
    ------
    TypeError
        If ``nbytes`` is not an int.
    ValueError
        If ``nbytes`` is not positive.

    See Also
    --------
    get_scratch_limit : the bound in force.

    Examples
    --------
    >>> import gpuconv
    >>> with gpuconv.scratch_limit(64 * 2**20):
    ...     gpuconv.get_scratch_limit()
    67108864
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise TypeError(f"nbytes must be an int; got {nbytes!r}")
    if nbytes <= 0:
        raise ValueError(f"nbytes must be positive; got {nbytes}")
    return _ScratchContext(_scratch.set(nbytes))


def get_scratch_limit() -> int:
    """The scratch-memory bound in force in the current context, in bytes.

    Returns
    -------
    int
        The bound set by :func:`scratch_limit`, or the default: 256 MiB unless
        the ``GPUCONV_SCRATCH_BYTES`` environment variable says otherwise.

    See Also
    --------
    scratch_limit : set it.

    Examples
    --------
    >>> import gpuconv
    >>> with gpuconv.scratch_limit(2**20):
    ...     gpuconv.get_scratch_limit()
    1048576
    """
    return _scratch.get()

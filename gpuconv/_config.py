"""Library-wide settings that an op may consult (per context, like the backend)."""

from __future__ import annotations

import contextvars
import os

__all__ = ["DEFAULT_SCRATCH_BYTES", "scratch_limit", "get_scratch_limit"]

# A whole-plane FFT of a 4096x4096 float64 image needs about half of it; NumPy's
# column buffers are further capped at 64 MiB, where larger chunks stopped paying.
DEFAULT_SCRATCH_BYTES = 2**30


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
    """Bound the scratch memory of one call (default 1 GiB).

    Scratch is the working memory that grows with the work and can be cut
    into chunks: im2col column buffers (``"gemm"``), per-tap accumulators
    (``"direct"``), spectra and block canvases (``"fft"``,
    ``"overlap-add"``).  Each method processes as many images, rows or
    blocks at a time as fit under the bound.  ``"fft"`` transforms whole
    planes: when one image's spectra do not fit, it raises ``MemoryError``
    (use ``"overlap-add"``, whose blocks fit any bound), and ``"auto"`` does
    not choose it.

    Not counted: the output, and the copies of the input and output that
    the kernels rearrange them into (the padded or boundary-extended input,
    a channel-major copy, an output-sized accumulator; at most two of each).
    Every op checks that those fit in the memory the backend reports free
    before it allocates, and raises ``MemoryError`` naming the arrays
    otherwise.  Like :func:`gpuconv.set_backend`, the setting applies at once
    to the current context and, used in a ``with`` statement, is restored on
    exit.  The default can be changed with the ``GPUCONV_SCRATCH_BYTES``
    environment variable.

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
        The bound set by :func:`scratch_limit`, or the default: 1 GiB unless
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

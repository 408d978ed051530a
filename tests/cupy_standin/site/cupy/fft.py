"""``cupy.fft`` of the CuPy stand-in: ``numpy.fft`` under CuPy's rules."""

import numpy as _np

from cupy_standin._namespace import module_getattr as _getattr

__getattr__ = _getattr(__name__, _np.fft, allowed=frozenset(
    "fft fft2 fftfreq fftn fftshift hfft ifft ifft2 ifftn ifftshift ihfft irfft irfft2 irfftn "
    "rfft rfft2 rfftfreq rfftn".split()))

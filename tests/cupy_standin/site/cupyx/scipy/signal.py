"""``cupyx.scipy.signal`` of the CuPy stand-in: ``scipy.signal`` under CuPy's rules."""

import scipy.signal as _signal

from cupy_standin._namespace import module_getattr as _getattr

__getattr__ = _getattr(__name__, _signal)

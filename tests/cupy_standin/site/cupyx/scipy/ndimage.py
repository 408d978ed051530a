"""``cupyx.scipy.ndimage`` of the CuPy stand-in: ``scipy.ndimage`` under CuPy's rules."""

import scipy.ndimage as _ndimage

from cupy_standin._namespace import module_getattr as _getattr

__getattr__ = _getattr(__name__, _ndimage)

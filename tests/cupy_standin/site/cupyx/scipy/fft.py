"""``cupyx.scipy.fft`` of the CuPy stand-in: ``scipy.fft`` with cupyx's signatures.

cupyx's transforms take ``plan=`` and no ``workers=``, and its
``next_fast_len`` returns cuFFT's fast sizes (products of 2, 3, 5, 7)
whatever ``real`` says; code that asks its FFT module for either sees what
it would see on a GPU.
"""

import scipy.fft as _fft

from cupy_standin._core import device_function as _device_function
from cupy_standin._namespace import module_getattr as _getattr


def _one_d(name):
    host = _device_function(name, getattr(_fft, name))

    def transform(x, n=None, axis=-1, norm=None, overwrite_x=False, *, plan=None):
        return host(x, n=n, axis=axis, norm=norm, overwrite_x=overwrite_x)

    transform.__name__ = transform.__qualname__ = name
    return transform


def _n_d(name, default_axes=None):
    host = _device_function(name, getattr(_fft, name))

    def transform(x, s=None, axes=default_axes, norm=None, overwrite_x=False, *, plan=None):
        return host(x, s=s, axes=axes, norm=norm, overwrite_x=overwrite_x)

    transform.__name__ = transform.__qualname__ = name
    return transform


fft, ifft, rfft, irfft, hfft, ihfft = (_one_d(n) for n in
                                        ("fft", "ifft", "rfft", "irfft", "hfft", "ihfft"))
fftn, ifftn, rfftn, irfftn, hfftn, ihfftn = (_n_d(n) for n in
                                              ("fftn", "ifftn", "rfftn", "irfftn", "hfftn",
                                               "ihfftn"))
fft2, ifft2, rfft2, irfft2, hfft2, ihfft2 = (_n_d(n, (-2, -1)) for n in
                                              ("fft2", "ifft2", "rfft2", "irfft2", "hfft2",
                                               "ihfft2"))


def next_fast_len(target, real=False):
    """The smallest product of 2, 3, 5 and 7 at least ``target`` (``real`` is ignored)."""
    if target == 0:
        return 0
    n = max(int(target), 1)
    while True:
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def get_fft_plan(*args, **kwargs):
    raise NotImplementedError("the CuPy stand-in has no cuFFT plans")


__getattr__ = _getattr(__name__, _fft, allowed=frozenset(
    "dct dctn dst dstn fftfreq fftshift fht idct idctn idst idstn ifftshift ifht "
    "rfftfreq".split()))

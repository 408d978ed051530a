"""``cupyx.scipy`` of the CuPy stand-in: ``fft``, ``signal`` and ``ndimage``."""

"""``cupyx`` of the CuPy stand-in (see cupy_standin)."""

__standin__ = True

"""``cupy.cuda`` of the CuPy stand-in: one device, an NVIDIA H200 (see cupy_standin)."""

from cupy_standin._device import (  # noqa: F401
    Device,
    Event,
    MemoryPointer,
    MemoryPool,
    PinnedMemoryPool,
    Stream,
    get_current_stream,
    get_elapsed_time,
)

from . import cublas, runtime  # noqa: F401

_memory_pool = MemoryPool()
_pinned_memory_pool = PinnedMemoryPool()


def get_device_id():
    return runtime.getDevice()


def is_available():
    return True


def set_allocator(allocator=None):
    pass


def set_pinned_memory_allocator(allocator=None):
    pass


def get_cublas_handle():
    """The current device's cuBLAS handle (an opaque number in the stand-in)."""
    return 0x0B1A5

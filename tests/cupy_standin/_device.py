"""``cupy.cuda`` for the stand-in: one device with an NVIDIA H200's properties.

Streams and events keep CuPy's interface; since the host computes every
operation before it returns, ``synchronize()`` only counts (as a blocking
wait) and an event records the host clock.
"""

from __future__ import annotations

import time
from typing import Any

from ._core import DEVICE_ID, MemoryPointer, record_sync

__all__ = ["H200_PROPERTIES", "Device", "Stream", "Event", "get_current_stream",
           "get_elapsed_time", "CUDARuntimeError", "MemoryPool", "PinnedMemoryPool",
           "MemoryPointer"]

_MiB = 2**20

# cudaGetDeviceProperties of an H200 SXM as CuPy's runtime.getDeviceProperties
# returns it (bytes name, clocks in kHz).  Memory size, SM count, L2 size and
# the clocks are what this card reports (143771 MiB, 132 SMs, 60 MiB L2,
# 1980 MHz boost, 3201 MHz HBM3e); the limits are compute capability 9.0's.
H200_PROPERTIES: dict[str, Any] = {
    "name": b"NVIDIA H200",
    "totalGlobalMem": 143771 * _MiB,
    "sharedMemPerBlock": 48 * 1024,
    "regsPerBlock": 65536,
    "warpSize": 32,
    "maxThreadsPerBlock": 1024,
    "maxThreadsDim": (1024, 1024, 64),
    "maxGridSize": (2**31 - 1, 65535, 65535),
    "clockRate": 1980000,
    "totalConstMem": 65536,
    "major": 9,
    "minor": 0,
    "textureAlignment": 512,
    "texturePitchAlignment": 32,
    "multiProcessorCount": 132,
    "kernelExecTimeoutEnabled": 0,
    "integrated": 0,
    "canMapHostMemory": 1,
    "computeMode": 0,
    "maxTexture1D": 131072,
    "maxTexture2D": (131072, 65536),
    "maxTexture3D": (16384, 16384, 16384),
    "concurrentKernels": 1,
    "ECCEnabled": 1,
    "pciBusID": 25,
    "pciDeviceID": 0,
    "pciDomainID": 0,
    "tccDriver": 0,
    "memoryClockRate": 3201000,
    "memoryBusWidth": 6144,
    "l2CacheSize": 60 * _MiB,
    "maxThreadsPerMultiProcessor": 2048,
    "isMultiGpuBoard": 0,
    "cooperativeLaunch": 1,
    "cooperativeMultiDeviceLaunch": 0,
    "asyncEngineCount": 3,
    "unifiedAddressing": 1,
    "streamPrioritiesSupported": 1,
    "globalL1CacheSupported": 1,
    "localL1CacheSupported": 1,
    "sharedMemPerMultiprocessor": 228 * 1024,
    "regsPerMultiprocessor": 65536,
    "managedMemory": 1,
    "sharedMemPerBlockOptin": 227 * 1024,
    "maxBlocksPerMultiProcessor": 32,
    "reservedSharedMemPerBlock": 1024,
    "persistingL2CacheMaxSize": 0,
    "accessPolicyMaxWindowSize": 134213632,
    "uuid": bytes(16),
}
RUNTIME_VERSION = 12080
DRIVER_VERSION = 13000


class CUDARuntimeError(RuntimeError):
    """``cupy_backends.cuda.api.runtime.CUDARuntimeError``."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


def _check_device(device_id: int) -> int:
    if device_id != DEVICE_ID:
        raise CUDARuntimeError(101, "cudaErrorInvalidDevice: invalid device ordinal")
    return device_id


class Device:
    """``cupy.cuda.Device``: the stand-in has exactly one, id 0."""

    def __init__(self, device: Any = None):
        self.id = DEVICE_ID if device is None else _check_device(int(device))

    def __int__(self) -> int:
        return self.id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("Device", self.id))

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id}>"

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def use(self) -> None:
        pass

    def synchronize(self) -> None:
        record_sync("device.synchronize")

    @property
    def compute_capability(self) -> str:
        return f"{H200_PROPERTIES['major']}{H200_PROPERTIES['minor']}"

    @property
    def mem_info(self) -> tuple[int, int]:
        total = H200_PROPERTIES["totalGlobalMem"]
        return total, total

    @property
    def pci_bus_id(self) -> str:
        return f"0000:{H200_PROPERTIES['pciBusID']:02X}:00.0"


class Event:
    """``cupy.cuda.Event``: records the host clock (work is finished when recorded)."""

    def __init__(self, block: bool = False, disable_timing: bool = False,
                 interprocess: bool = False):
        self.disable_timing = disable_timing
        self._time: float | None = None

    @property
    def done(self) -> bool:
        return True

    def record(self, stream: Any = None) -> None:
        self._time = time.perf_counter()

    def synchronize(self) -> None:
        record_sync("event.synchronize")


def get_elapsed_time(start_event: Event, end_event: Event) -> float:
    """Milliseconds between two recorded events."""
    if start_event._time is None or end_event._time is None:
        raise CUDARuntimeError(600, "cudaErrorNotReady: device not ready")
    if start_event.disable_timing or end_event.disable_timing:
        raise CUDARuntimeError(6, "cudaErrorInvalidResourceHandle: invalid resource handle")
    return (end_event._time - start_event._time) * 1e3


class Stream:
    """``cupy.cuda.Stream``."""

    null: Stream

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False,
                 priority: int | None = None):
        self.ptr = 0 if null else id(self)
        self.device_id = DEVICE_ID
        self._previous: list[Stream] = []

    def __repr__(self) -> str:
        return f"<Stream {self.ptr} (device {self.device_id})>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stream) and other.ptr == self.ptr

    def __hash__(self) -> int:
        return hash(("Stream", self.ptr))

    def __enter__(self) -> Stream:
        self._previous.append(_current[0])
        _current[0] = self
        return self

    def __exit__(self, *exc: object) -> None:
        _current[0] = self._previous.pop()

    def use(self) -> Stream:
        _current[0] = self
        return self

    @property
    def done(self) -> bool:
        return True

    def synchronize(self) -> None:
        record_sync("stream.synchronize")

    def record(self, event: Event | None = None) -> Event:
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event: Event) -> None:
        pass


Stream.null = Stream(null=True)
_current = [Stream.null]


def get_current_stream(device_id: int = -1) -> Stream:
    return _current[0]


class MemoryPool:
    """``cupy.cuda.MemoryPool``: nothing is pooled, so nothing is held."""

    def __init__(self, allocator: Any = None):
        self._limit = 0

    def malloc(self, size: int) -> MemoryPointer:
        raise NotImplementedError("the CuPy stand-in allocates through NumPy only")

    def free_all_blocks(self, stream: Any = None) -> None:
        pass

    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return 0

    def free_bytes(self) -> int:
        return 0

    def n_free_blocks(self) -> int:
        return 0

    def set_limit(self, size: int | None = None, fraction: float | None = None) -> None:
        if fraction is not None:
            size = int(fraction * H200_PROPERTIES["totalGlobalMem"])
        self._limit = int(size or 0)

    def get_limit(self) -> int:
        return self._limit


class PinnedMemoryPool(MemoryPool):
    """``cupy.cuda.PinnedMemoryPool``."""

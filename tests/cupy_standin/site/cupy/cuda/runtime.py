"""``cupy.cuda.runtime`` of the CuPy stand-in."""

from cupy_standin._core import record_sync
from cupy_standin._device import (  # noqa: F401
    DRIVER_VERSION,
    H200_PROPERTIES,
    RUNTIME_VERSION,
    CUDARuntimeError,
    _check_device,
)

is_hip = False

# cudaDataType
CUDA_R_16F, CUDA_R_32F, CUDA_R_64F, CUDA_C_32F, CUDA_C_64F = 2, 0, 1, 4, 5


def getDeviceCount():  # noqa: N802 - CUDA's names
    return 1


def getDevice():  # noqa: N802
    return 0


def setDevice(device):  # noqa: N802
    _check_device(int(device))


def getDeviceProperties(device):  # noqa: N802
    _check_device(int(device))
    return dict(H200_PROPERTIES)


def deviceSynchronize():  # noqa: N802
    record_sync("runtime.deviceSynchronize")


def runtimeGetVersion():  # noqa: N802
    return RUNTIME_VERSION


def driverGetVersion():  # noqa: N802
    return DRIVER_VERSION


def memGetInfo():  # noqa: N802
    total = H200_PROPERTIES["totalGlobalMem"]
    return total, total

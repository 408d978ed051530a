"""``cupy.cuda.cublas`` of the CuPy stand-in: the strided-batched GEMM, strictly.

gpuconv's CuPy backend calls ``cublasGemmStridedBatchedEx`` itself with raw
device pointers.  This stand-in performs the call on the host arrays behind
those pointers with cuBLAS's contract (column-major, leading dimensions,
batch strides, host-pointer ``alpha``/``beta``) and refuses what cuBLAS
would: a compute type that is a data type (the pre-11 API), operand types
that do not match the compute type, leading dimensions shorter than a column,
pointers outside every live device array, overlapping outputs.
"""

from __future__ import annotations

import ctypes

import numpy as np

from cupy_standin._core import live_buffer_containing

CUBLAS_OP_N = 0
CUBLAS_OP_T = 1
CUBLAS_OP_C = 2
CUBLAS_COMPUTE_16F = 64
CUBLAS_COMPUTE_32F = 68
CUBLAS_COMPUTE_32F_FAST_TF32 = 77
CUBLAS_COMPUTE_64F = 70
CUBLAS_GEMM_DEFAULT = -1

# cudaDataType values (cupy.cuda.runtime.CUDA_*).
_DTYPES = {2: np.float16, 0: np.float32, 1: np.float64, 4: np.complex64, 5: np.complex128}
# The compute type each data type may be multiplied with, and the type of alpha/beta.
_COMPUTE = {2: {CUBLAS_COMPUTE_32F: np.float32, CUBLAS_COMPUTE_16F: np.float16},
            0: {CUBLAS_COMPUTE_32F: np.float32},
            1: {CUBLAS_COMPUTE_64F: np.float64},
            4: {CUBLAS_COMPUTE_32F: np.complex64},
            5: {CUBLAS_COMPUTE_64F: np.complex128}}


class CUBLASError(RuntimeError):
    """``cupy_backends.cuda.libs.cublas.CUBLASError``."""


calls = 0


def _scalar(ptr: int, dtype: type) -> np.generic:
    return np.frombuffer((ctypes.c_char * np.dtype(dtype).itemsize).from_address(ptr),
                         dtype=dtype)[0]


def _matrices(name: str, ptr: int, dtype: type, rows: int, cols: int, ld: int, stride: int,
              batch: int) -> np.ndarray:
    """(batch, rows, cols) view of column-major matrices at ``ptr`` (rows contiguous)."""
    if ld < max(1, rows):
        raise CUBLASError(f"CUBLAS_STATUS_INVALID_VALUE: ld{name}={ld} < {rows} rows")
    it = np.dtype(dtype).itemsize
    last = (batch - 1) * stride + (cols - 1) * ld + rows - 1
    base, size = live_buffer_containing(ptr, (last + 1) * it)
    if base is None:
        raise CUBLASError(f"{name}: {(last + 1) * it} bytes at {ptr:#x} are not inside one "
                          "live device array (an illegal address on a GPU)")
    buf = np.frombuffer((ctypes.c_char * ((last + 1) * it)).from_address(ptr), dtype=dtype)
    return np.lib.stride_tricks.as_strided(buf, shape=(batch, rows, cols),
                                           strides=(stride * it, it, ld * it))


def gemmStridedBatchedEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA,  # noqa: N802
                         B, Btype, ldb, strideB, beta, C, Ctype, ldc, strideC, batchCount,
                         computeType, algo):
    global calls
    if (transa, transb) != (CUBLAS_OP_N, CUBLAS_OP_N):
        raise NotImplementedError("the stand-in multiplies untransposed operands only")
    if not Atype == Btype == Ctype or Atype not in _DTYPES:
        raise CUBLASError(f"CUBLAS_STATUS_NOT_SUPPORTED: types {Atype}, {Btype}, {Ctype}")
    scalar_type = _COMPUTE[Atype].get(computeType)
    if scalar_type is None:
        raise CUBLASError(f"CUBLAS_STATUS_INVALID_VALUE: computeType {computeType} for data "
                          f"type {Atype} (cuBLAS 11 takes CUBLAS_COMPUTE_*, not CUDA_R_*)")
    if min(m, n, k, batchCount) < 0:
        raise CUBLASError("CUBLAS_STATUS_INVALID_VALUE: negative size")
    if 0 in (m, n, batchCount):
        return
    dtype = _DTYPES[Atype]
    a = _matrices("A", A, dtype, m, k, lda, strideA, batchCount)
    b = _matrices("B", B, dtype, k, n, ldb, strideB, batchCount)
    c = _matrices("C", C, dtype, m, n, ldc, strideC, batchCount)
    if batchCount > 1 and strideC < n * ldc:
        raise CUBLASError(f"C's batch stride {strideC} overlaps {n} columns of ld {ldc}")
    acc = np.result_type(scalar_type, np.float32)
    product = np.matmul(a.astype(acc), b.astype(acc))
    a_, b_ = _scalar(alpha, scalar_type), _scalar(beta, scalar_type)
    out = a_ * product if b_ == 0 else a_ * product + b_ * c.astype(acc)
    c[...] = out.astype(dtype)
    calls += 1

"""Bad input gets a clear error: one table for every public op.

Each row says which exception type is raised and three things its message
must contain: the argument's name, the bad value echoed back, and what is
allowed instead.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.signal

import gpuconv

X2 = np.ones((5, 6))
K2 = np.ones((2, 3))
X4 = np.ones((2, 4, 6, 6))
W4 = np.ones((8, 4, 3, 3))
Y4 = np.ones((2, 8, 4, 4))


def _case(call, exc, name, value, allowed, id):
    return pytest.param(call, exc, name, value, allowed, id=id)


CASES = [
    # -- correlate2d / convolve2d / corr2d --------------------------------
    _case(lambda: gpuconv.correlate2d(np.ones(5), K2), ValueError,
          "in1", "(5,)", "at least 2 dimensions", "in1-1d"),
    _case(lambda: gpuconv.correlate2d(X2, np.ones((2, 2, 2))), ValueError,
          "in2", "(2, 2, 2)", "2-D kernel", "in2-3d"),
    _case(lambda: gpuconv.convolve2d(X2, 3.0), ValueError,
          "in2", "()", "2-D kernel", "in2-scalar"),
    _case(lambda: gpuconv.correlate2d(np.ones((0, 4)), K2), ValueError,
          "in1", "(0, 4)", "non-empty", "in1-empty"),
    _case(lambda: gpuconv.convolve2d(X2, np.ones((2, 0))), ValueError,
          "in2", "(2, 0)", "non-empty", "in2-empty"),
    _case(lambda: gpuconv.correlate2d(np.ones((3, 6)), np.ones((5, 2)), "valid"), ValueError,
          "mode='valid'", r"(3, 6)", "at least as large as the other", "valid-neither-contains"),
    _case(lambda: gpuconv.corr2d(np.ones((3, 3)), np.ones((4, 4))), ValueError,
          "K", "(4, 4)", "no larger than X", "corr2d-kernel-larger"),
    _case(lambda: gpuconv.correlate2d(X2, K2, "vaild"), ValueError,
          "mode", "'vaild'", "'full', 'same', 'valid'", "unknown-mode"),
    _case(lambda: gpuconv.correlate2d(X2, K2, 1), TypeError,
          "mode", "1", "'full', 'same', 'valid'", "mode-not-str"),
    _case(lambda: gpuconv.convolve2d(X2, K2, "same", "reflect"), ValueError,
          "boundary", "'reflect'", "'fill', 'pad', 'wrap', 'circular', 'symm'",
          "unknown-boundary"),
    _case(lambda: gpuconv.correlate2d(X2, K2, method="karatsuba"), ValueError,
          "method", "'karatsuba'", "'auto', 'direct', 'gemm'", "unknown-method"),
    _case(lambda: gpuconv.correlate2d(X2, K2, fillvalue="zero"), TypeError,
          "fillvalue", "'zero'", "real or complex number", "fillvalue-str"),
    _case(lambda: gpuconv.correlate2d(X2, K2, fillvalue=None), TypeError,
          "fillvalue", "None", "real or complex number", "fillvalue-none"),
    _case(lambda: gpuconv.correlate2d(X2, K2, fillvalue=[1.0, 2.0]), ValueError,
          "fillvalue", "(2,)", "scalar", "fillvalue-array"),
    _case(lambda: gpuconv.correlate2d(X2, K2, fillvalue=1 + 2j), ValueError,
          "fillvalue", "(1+2j)", "real fillvalue or complex inputs", "fillvalue-complex-real"),
    _case(lambda: gpuconv.correlate2d(X2.astype(object), K2), TypeError,
          "in1", "object", "float16, float32, float64, complex64, complex128", "in1-object"),
    _case(lambda: gpuconv.convolve2d(X2, np.array([["a", "b"]])), TypeError,
          "in2", "<U1", "float16, float32, float64, complex64, complex128", "in2-str"),
    _case(lambda: gpuconv.correlate2d([[1.0, 2.0], [3.0]], K2), TypeError,
          "in1", "[[1.0, 2.0], [3.0]]", "array", "in1-ragged"),
    # -- conv2d ----------------------------------------------------------------
    _case(lambda: gpuconv.conv2d(X2, W4), ValueError,
          "input", "(5, 6)", "(N, C, H, W) or 3-D (C, H, W)", "input-2d"),
    _case(lambda: gpuconv.conv2d(np.ones((1, 2, 4, 6, 6)), W4), ValueError,
          "input", "(1, 2, 4, 6, 6)", "(N, C, H, W)", "input-5d"),
    _case(lambda: gpuconv.conv2d(X4, np.ones((8, 4, 3))), ValueError,
          "weight", "(8, 4, 3)", "(C_out, C_in / groups, kh, kw)", "weight-3d"),
    _case(lambda: gpuconv.conv2d(np.ones((2, 0, 6, 6)), W4), ValueError,
          "input", "(2, 0, 6, 6)", "non-empty", "input-empty"),
    _case(lambda: gpuconv.conv2d(X4, np.ones((0, 4, 3, 3))), ValueError,
          "weight", "(0, 4, 3, 3)", "non-empty", "weight-empty"),
    _case(lambda: gpuconv.conv2d(X4, np.ones((8, 3, 3, 3))), ValueError,
          "weight.shape[1]", "got 3", "4 / 1 = 4", "channel-mismatch"),
    _case(lambda: gpuconv.conv2d(X4, np.ones((8, 4, 3, 3)), groups=3), ValueError,
          "groups", "groups=3", "divisible", "groups-not-divisor-of-input"),
    _case(lambda: gpuconv.conv2d(X4, np.ones((6, 1, 3, 3)), groups=4), ValueError,
          "groups", "groups=4", "divisible", "groups-not-divisor-of-output"),
    _case(lambda: gpuconv.conv2d(X4, np.ones((8, 4, 3, 3)), groups=2), ValueError,
          "weight.shape[1]", "got 4", "4 / 2 = 2", "group-channel-mismatch"),
    _case(lambda: gpuconv.conv2d(X4, W4, groups=0), ValueError,
          "groups", "0", ">= 1", "groups-zero"),
    _case(lambda: gpuconv.conv2d(X4, W4, groups=1.5), TypeError,
          "groups", "1.5", "an int", "groups-float"),
    _case(lambda: gpuconv.conv2d(X4, W4, stride=0), ValueError,
          "stride", "0", ">= 1", "stride-zero"),
    _case(lambda: gpuconv.conv2d(X4, W4, stride=(1, -2)), ValueError,
          "stride", "(1, -2)", ">= 1", "stride-negative"),
    _case(lambda: gpuconv.conv2d(X4, W4, stride=(1, 2, 3)), ValueError,
          "stride", "(1, 2, 3)", "an int or a pair of ints", "stride-triple"),
    _case(lambda: gpuconv.conv2d(X4, W4, stride=1.0), TypeError,
          "stride", "1.0", "an int or a pair of ints", "stride-float"),
    _case(lambda: gpuconv.conv2d(X4, W4, dilation=0), ValueError,
          "dilation", "0", ">= 1", "dilation-zero"),
    _case(lambda: gpuconv.conv2d(X4, W4, padding=-1), ValueError,
          "padding", "-1", ">= 0", "padding-negative"),
    _case(lambda: gpuconv.conv2d(X4, W4, padding="SAME"), ValueError,
          "padding", "'SAME'", "'valid' or 'same'", "padding-unknown-str"),
    _case(lambda: gpuconv.conv2d(X4, W4, padding=("same", 1)), TypeError,
          "padding", "('same', 1)", "an int or a pair of ints", "padding-same-in-a-pair"),
    _case(lambda: gpuconv.correlate2d(X2, K2, "SAME"), ValueError,
          "mode", "'SAME'", "'full', 'same', 'valid'", "mode-uppercase-same"),
    _case(lambda: gpuconv.conv2d(X4, W4, padding=None), TypeError,
          "padding", "None", "an int or a pair of ints", "padding-none"),
    _case(lambda: gpuconv.conv2d(X4, W4, padding_mode="constant"), ValueError,
          "padding_mode", "'constant'", "'zeros', 'reflect', 'replicate', 'circular'",
          "unknown-padding-mode"),
    _case(lambda: gpuconv.conv2d(X4, W4, method="fast"), ValueError,
          "method", "'fast'", "'direct', 'gemm'", "conv2d-unknown-method"),
    _case(lambda: gpuconv.conv2d(X4, W4, padding=6, padding_mode="reflect"), ValueError,
          "padding_mode='reflect'", "(6, 6, 6, 6)", "smaller than the input size (6, 6)",
          "reflect-padding-too-large"),
    _case(lambda: gpuconv.conv2d(np.ones((1, 4, 2, 2)), np.ones((1, 4, 7, 7)), padding="same",
                                 padding_mode="reflect"), ValueError,
          "padding_mode='reflect'", "(3, 3, 3, 3)", "smaller than the input size (2, 2)",
          "same-reflect-too-large"),
    _case(lambda: gpuconv.conv2d(X4, W4, padding=7, padding_mode="circular"), ValueError,
          "padding_mode='circular'", "(7, 7, 7, 7)", "no larger than the input size",
          "circular-padding-too-large"),
    _case(lambda: gpuconv.conv2d(X4, np.ones((8, 4, 7, 7))), ValueError,
          "weight", "(7, 7)", "fit in the padded input (6, 6)", "kernel-larger-than-input"),
    _case(lambda: gpuconv.conv2d(X4, W4, dilation=4), ValueError,
          "weight", "dilation (4, 4)", "fit in the padded input", "dilated-kernel-too-large"),
    _case(lambda: gpuconv.conv2d(X4, W4, np.ones(4)), ValueError,
          "bias", "(4,)", "(8,)", "bias-shape"),
    _case(lambda: gpuconv.conv2d(X4, W4, np.ones((8, 1))), ValueError,
          "bias", "(8, 1)", "(8,)", "bias-2d"),
    _case(lambda: gpuconv.conv2d(X4, W4, "zero"), TypeError,
          "bias", "<U4", "float16, float32", "bias-str"),
    # -- conv_transpose2d ------------------------------------------------------
    _case(lambda: gpuconv.conv_transpose2d(Y4, W4, stride=2, output_padding=2), ValueError,
          "output_padding", "(2, 2)", "smaller than stride or dilation", "output-padding-large"),
    _case(lambda: gpuconv.conv_transpose2d(Y4, W4, output_padding=-1), ValueError,
          "output_padding", "-1", ">= 0", "output-padding-negative"),
    _case(lambda: gpuconv.conv_transpose2d(Y4, W4, padding="same"), ValueError,
          "padding", "'same'", "an int or a pair of ints", "transpose-padding-same"),
    _case(lambda: gpuconv.conv_transpose2d(Y4, W4[:4]), ValueError,
          "weight.shape[0]", "(4, 4, 3, 3)", "input channels 8", "transpose-channels"),
    _case(lambda: gpuconv.conv_transpose2d(Y4, W4, groups=3), ValueError,
          "groups", "groups=3", "divisible", "transpose-groups"),
    _case(lambda: gpuconv.conv_transpose2d(Y4, W4, padding=4), ValueError,
          "padding", "(4, 4)", "whole output", "transpose-padding-too-large"),
    _case(lambda: gpuconv.conv_transpose2d(Y4, W4, np.ones(8)), ValueError,
          "bias", "(8,)", "(4,)", "transpose-bias-shape"),
    _case(lambda: gpuconv.conv_transpose2d(np.ones((8, 4)), W4), ValueError,
          "input", "(8, 4)", "(N, C, H, W)", "transpose-input-2d"),
    # -- output_shape ------------------------------------------------------------
    _case(lambda: gpuconv.output_shape(0, 3), ValueError,
          "input_size", "0", ">= 1", "output-shape-empty"),
    _case(lambda: gpuconv.output_shape((4, 4), (5, 3)), ValueError,
          "kernel_size", "(5, 3)", "does not fit in input_size (4, 4)", "output-shape-too-large"),
    _case(lambda: gpuconv.output_shape(8, 3, stride=0), ValueError,
          "stride", "0", ">= 1", "output-shape-stride"),
    _case(lambda: gpuconv.output_shape(8, 3, padding="full"), ValueError,
          "padding", "'full'", "'valid' or 'same'", "output-shape-padding"),
    _case(lambda: gpuconv.output_shape("8", 3), TypeError,
          "input_size", "'8'", "an int or a pair of ints", "output-shape-str"),
    # -- backends ----------------------------------------------------------------
    _case(lambda: gpuconv.set_backend("tensorflow"), ValueError,
          "backend", "'tensorflow'", "'auto', 'numpy'", "unknown-backend"),
    _case(lambda: gpuconv.set_backend(None), TypeError,
          "backend", "None", "'auto', 'numpy'", "backend-not-str"),
    _case(lambda: gpuconv.register_backend("auto", object), ValueError,
          "name", "'auto'", "reserved", "register-auto"),
    _case(lambda: gpuconv.register_backend("numpy", object), ValueError,
          "name", "'numpy'", "replace=True", "register-duplicate"),
    _case(lambda: gpuconv.register_backend("x", 3), TypeError,
          "factory", "3", "callable", "register-not-callable"),
]


@pytest.mark.parametrize("call, exc, name, value, allowed", CASES)
def test_bad_input_message(call, exc, name, value, allowed):
    with pytest.raises(exc, match=re.escape(name)) as info:
        call()
    assert info.type is exc, f"raised {info.type.__name__}, not exactly {exc.__name__}"
    message = str(info.value)
    assert value in message, f"the bad value {value!r} is not echoed in: {message}"
    assert allowed in message, f"what is allowed ({allowed!r}) is not said in: {message}"


def test_table_has_at_least_25_cases():
    assert len(CASES) >= 25


def test_fft_method_on_a_backend_without_fft_says_what_to_use_instead():
    from gpuconv.backends import ArrayBackend

    class NoFFT(ArrayBackend):
        name = "no-fft-for-errors"
        xp = np

    gpuconv.register_backend(NoFFT.name, NoFFT, replace=True)
    with gpuconv.set_backend(NoFFT.name):
        for method in ("fft", "overlap-add"):
            with pytest.raises(NotImplementedError, match="no FFT module.*method='direct'"):
                gpuconv.correlate2d(X2, K2, method=method)
        # 'auto' never picks a method the backend cannot run.
        expected = scipy.signal.correlate2d(X2, K2)
        np.testing.assert_allclose(gpuconv.correlate2d(X2, K2), expected, rtol=1e-12)

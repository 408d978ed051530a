"""Bad arguments to :mod:`gpuconv.theory`: a sentence naming the argument, never NumPy's own error.

One table over every public function: wrong types, negative or zero sizes,
non-integers, empty or non-numeric arrays, wrong dtypes, sizes that do not fit.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpuconv import theory as t

BAD = [
    # seeds and flags
    (lambda: t.commutativity_claim(seed=-1), ValueError, r"seed must be >= 0; got -1"),
    (lambda: t.commutativity_claim(seed=1.5), TypeError, r"seed must be an int; got 1\.5"),
    (lambda: t.summed_area_claim(seed="a"), TypeError, r"seed must be an int; got 'a'"),
    (lambda: t.one_by_one_is_dense_layer_claim(seed=True), TypeError, r"seed must be an int"),
    (lambda: t.commutativity_claim("yes"), TypeError, r"nonnegative must be a bool; got 'yes'"),
    (lambda: t.commutativity_claim(backend="nope"), ValueError, r"unknown backend 'nope'"),
    (lambda: t.check(3), TypeError, r"backend must be a str"),
    (lambda: t.laplacian_claim(backend="nope"), ValueError, r"unknown backend 'nope'"),
    (lambda: t.correlation_is_flipped_convolution_claim(seed=-2), ValueError,
     r"seed must be >= 0"),
    (lambda: t.convolution_theorem_claim(seed=[1.5]), TypeError, r"seed must be an int"),
    (lambda: t.conv_matrix_claim(seed=-1), ValueError, r"seed must be >= 0"),
    (lambda: t.translation_equivariance_claim(seed=-1), ValueError, r"seed must be >= 0"),
    (lambda: t.receptive_field_claim(seed=-1), ValueError, r"seed must be >= 0"),
    # the convolution theorem's working precision
    (lambda: t.convolution_theorem_claim(dtype=np.int32), TypeError,
     r"dtype must be a real floating dtype .*got <class 'numpy\.int32'>"),
    (lambda: t.convolution_theorem_claim(dtype=np.complex128), TypeError,
     r"dtype must be a real floating dtype"),
    (lambda: t.convolution_theorem_claim(dtype="bogus"), TypeError,
     r"dtype must be a real floating dtype .*got 'bogus'"),
    # translation equivariance
    (lambda: t.translation_equivariance_claim("mirror"), ValueError, r"boundary must be one of"),
    (lambda: t.translation_equivariance_claim(shift=3), TypeError,
     r"shift must be a pair of ints; got 3"),
    (lambda: t.translation_equivariance_claim(shift=(1, 2, 3)), TypeError,
     r"shift must be a pair of ints"),
    (lambda: t.translation_equivariance_claim(shift=(1.5, 2)), TypeError,
     r"shift must be an int; got 1\.5"),
    (lambda: t.translation_equivariance_claim("fill", shift=(30, 2)), ValueError,
     r"shift \(30, 2\) leaves no output .* \[-6, 6\]"),
    # conv_matrix
    (lambda: t.conv_matrix(np.ones(3), (4, 4)), ValueError, r"kernel must be a non-empty 2-D"),
    (lambda: t.conv_matrix(np.ones((0, 2)), (4, 4)), ValueError, r"non-empty 2-D.*\(0, 2\)"),
    (lambda: t.conv_matrix([["a", "b"]], (4, 4)), TypeError, r"kernel must hold real or complex"),
    (lambda: t.conv_matrix(np.array([[None, 1]]), (4, 4)), TypeError, r"dtype object"),
    (lambda: t.conv_matrix(np.ones((2, 2)), (-4, 4)), ValueError,
     r"input_shape must be >= 1; got -4"),
    (lambda: t.conv_matrix(np.ones((2, 2)), (0, 4), "full"), ValueError,
     r"input_shape must be >= 1; got 0"),
    (lambda: t.conv_matrix(np.ones((2, 2)), (4.5, 4)), TypeError,
     r"input_shape must be an int; got 4\.5"),
    (lambda: t.conv_matrix(np.ones((2, 2)), 4), TypeError, r"input_shape must be a pair of ints"),
    (lambda: t.conv_matrix(np.ones((2, 2)), (4, 4, 4)), TypeError,
     r"input_shape must be a pair of ints"),
    (lambda: t.conv_matrix(np.ones((2, 2)), (4, 4), "wide"), ValueError, r"mode must be one of"),
    (lambda: t.conv_matrix(np.ones((3, 3)), (2, 4)), ValueError, r"mode='valid' needs the kernel"),
    (lambda: t.conv_matrix(np.ones((2, 2)), (10**5, 10**5)), ValueError,
     r"would need about .* GiB, more than this machine's .*sparse=True"),
    (lambda: t.conv_matrix_claim("wide"), ValueError, r"mode must be one of"),
    # receptive fields
    (lambda: t.receptive_field(3), TypeError, r"layers must be a sequence"),
    (lambda: t.receptive_field([()]), ValueError, r"layers\[0\] must be a tuple .* 1 to 4"),
    (lambda: t.receptive_field([(3,), (3, 1, 1, 1, 9)]), ValueError, r"layers\[1\]"),
    (lambda: t.receptive_field(["abc"]), ValueError, r"layers\[0\] must be a tuple"),
    (lambda: t.receptive_field([(-3,)]), ValueError, r"kernel must be >= 1; got -3"),
    (lambda: t.receptive_field([(3, 0)]), ValueError, r"stride must be >= 1"),
    (lambda: t.receptive_field([(3.5,)]), TypeError, r"kernel must be an int or a pair"),
    (lambda: t.receptive_field_claim(input_shape=(-3, 4)), ValueError,
     r"input_shape must be >= 1; got -3"),
    (lambda: t.receptive_field_claim(input_shape=(30, 30, 3)), TypeError,
     r"input_shape must be a pair of ints"),
    (lambda: t.receptive_field_claim(input_shape=(3, 4)), ValueError,
     r"the layers do not fit input_shape"),
    (lambda: t.receptive_field_claim(layers=[(3,), ()]), ValueError, r"layers\[1\]"),
    # derivative kernels
    (lambda: t.derivative_kernel(0), ValueError, r"order must be >= 1; got 0"),
    (lambda: t.derivative_kernel(1.5), TypeError, r"order must be an int; got 1\.5"),
    (lambda: t.derivative_kernel(2, accuracy=0), ValueError, r"accuracy must be >= 1"),
    (lambda: t.derivative_kernel(400), ValueError, r"order \+ accuracy must be <= 20"),
    (lambda: t.derivative_kernel(15, accuracy=6), ValueError, r"15 \+ 6 = 21"),
    (lambda: t.derivative_kernel_claim(0), ValueError, r"max_order must be between 1 and 16"),
    (lambda: t.derivative_kernel_claim(30), ValueError, r"max_order must be between 1 and 16"),
    (lambda: t.derivative_kernel_claim(2.5), TypeError, r"max_order must be an int"),
    # the integral image and the exercises
    (lambda: t.summed_area(np.ones(3)), ValueError, r"X must be 2-D; got shape \(3,\)"),
    (lambda: t.summed_area([["a"]]), TypeError, r"X must hold real or complex numbers"),
    (lambda: t.diagonal_edges(1), ValueError, r"n must be >= 2; got 1"),
    (lambda: t.diagonal_edges(2.0), TypeError, r"n must be an int; got 2\.0"),
    (lambda: t.diagonal_edges_claim(-5), ValueError, r"n must be >= 2; got -5"),
]


@pytest.mark.parametrize("call,exc,match", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_arguments_are_named(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_every_public_function_is_in_the_table():
    import inspect
    import re

    source = inspect.getsource(inspect.getmodule(test_bad_arguments_are_named))
    called = set(re.findall(r"\bt\.(\w+)\(", source))
    functions = {name for name in t.__all__ if inspect.isfunction(getattr(t, name))}
    assert functions - called <= {"laplacian_kernel"}   # it takes no argument


def test_edges_of_the_allowed_ranges_work():
    assert t.derivative_kernel(19).shape == (1, 20)           # 20 taps: the most allowed
    assert t.derivative_kernel_claim(16).passed               # 17 taps in 17 samples
    assert t.translation_equivariance_claim("fill", shift=(6, -6)).passed
    assert t.translation_equivariance_claim("wrap", shift=(30, -41)).passed
    assert t.summed_area(np.ones((0, 3))).shape == (0, 3)    # empty in, empty out
    assert t.conv_matrix(np.ones((2, 2)), (1, 1), "full").shape == (4, 1)
    assert t.receptive_field([])["size"] == (1, 1)             # no layer: one pixel
    assert t.commutativity_claim(seed=np.random.default_rng(3)).passed
    assert t.diagonal_edges_claim(np.int64(3)).passed

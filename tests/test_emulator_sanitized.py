"""Every CUDA kernel once more in the emulator built with AddressSanitizer and
UndefinedBehaviorSanitizer, on small shapes.

The guard zones of the emulator tests catch reads and writes just past a
buffer; the sanitizers also catch accesses far from it, uses of stale stack,
signed overflow, misaligned loads and bad shifts in the kernels' host build.
An ASan-instrumented library can only be loaded into a process that starts
with the ASan runtime, so each check runs in a subprocess under
``LD_PRELOAD`` (:func:`kernel_emulator.sanitizer_env`).  A planted
out-of-bounds read shows that the sanitizer is live.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

kernel_emulator = pytest.importorskip("kernel_emulator")

ROOT = Path(__file__).resolve().parent.parent

# Small parametrisations that together launch every kernel of every file for
# every element type.
SELECTION = " or ".join([
    "test_correlate_planes_dtypes and full",
    "test_conv2d_kernel and reflect",
    "test_conv_transpose2d_kernel",
    "test_im2col_random_geometries",
    "test_col2im_random_geometries",
])


def _env():
    if kernel_emulator.compiler() is None:
        kernel_emulator.skip_or_fail("no host C++ compiler (g++ or $CXX) to build the "
                                     "kernel emulator")
    env = kernel_emulator.sanitizer_env()
    if env is None:
        kernel_emulator.skip_or_fail("the host C++ compiler has no AddressSanitizer runtime "
                                     "(libasan)")
    return env


def _tail(proc: subprocess.CompletedProcess) -> str:
    return (proc.stdout[-3000:] + "\n" + proc.stderr[-3000:]).strip()


@pytest.mark.slow
def test_every_kernel_under_the_sanitizers():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-x", "-p", "no:cacheprovider", "-k", SELECTION,
         "tests/test_kernels_emulator.py", "tests/test_conv2d_kernel.py",
         "tests/test_im2col_emulator.py"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, _tail(proc)
    for test in ("test_correlate_planes_dtypes", "test_conv2d_kernel",
                 "test_conv_transpose2d_kernel", "test_im2col_random_geometries",
                 "test_col2im_random_geometries"):
        assert f"::{test}[" in proc.stdout and "PASSED" in proc.stdout, \
            f"{test} did not run sanitized:\n{_tail(proc)}"
    assert "SKIPPED" not in proc.stdout, _tail(proc)


CANARY = """
import sys
sys.path[:0] = [{tests!r}]
import numpy as np
import kernel_emulator
from gpuconv import kernels as K
emu = kernel_emulator.Emulator("im2col.cu", defines=("GPUCONV_PLANT_OVERREAD",))
assert emu.sanitized
x = np.ones((1, 1, 6, 6), np.float32)  # its own allocation: no guard zone after it
launch = K.im2col_launch(x.shape, (3, 3), (1, 1), (0, 0), (1, 1), (0, 4), 4, "zeros")
emu.launch("im2col", np.float32, launch, x, np.empty((1, 9, 16), np.float32))
print("the planted over-read went unnoticed")
"""


@pytest.mark.slow
def test_the_sanitizer_sees_a_planted_overread():
    code = CANARY.format(tests=str(ROOT / "tests"))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0, _tail(proc)
    assert "AddressSanitizer: heap-buffer-overflow" in proc.stderr, _tail(proc)
    assert "unnoticed" not in proc.stdout

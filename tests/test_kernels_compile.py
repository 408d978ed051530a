"""Every CUDA source compiles for real GPU targets, with no GPU present.

NVRTC (from the ``nvidia-cuda-nvrtc-cu12`` wheel, through CuPy's low-level
binding, which needs no device) compiles each translation unit for sm_80 and
sm_90 with a name expression per template instantiation, exactly as
``cupy.RawModule`` will on a device.  Where ``nvcc`` is on the PATH, ptxas's
resource report must show no spills and no stack frame for any kernel.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from gpuconv import kernels as K
from kernel_emulator import skip_or_fail

ARCHS = ["sm_80", "sm_90"]
# Every file as shipped, and with each of its compile-time variants.
BUILDS = [(f, ()) for f in sorted(K.KERNELS)] + [
    (f, (v,)) for f in sorted(K.KERNELS) for v in K.VARIANTS[f]]
BUILD_IDS = [f + "".join(f"+{d}" for d in defines) for f, defines in BUILDS]
# What cupy.RawModule adds to our options before calling NVRTC (CuPy 14's
# cupy/cuda/compiler.py), so the test compiles what a device would.
CUPY_ADDED_OPTIONS = ["-ftz=true", "--device-as-default-execution-space"]


def _nvrtc():
    try:
        from cupy_backends.cuda.libs import nvrtc
    except ImportError as exc:
        skip_or_fail(f"CuPy's NVRTC binding is not importable ({exc}); install cupy-cuda12x "
                     "and nvidia-cuda-nvrtc-cu12 (the test extra does on Linux x86_64)")
    try:
        nvrtc.getVersion()
    except Exception as exc:  # the shared library itself is missing
        skip_or_fail(f"libnvrtc could not be loaded ({exc}); install nvidia-cuda-nvrtc-cu12")
    return nvrtc


def nvrtc_compile(source: str, name: str, arch: str, expressions: list[str],
                  extra: list[str] = ()):
    """(lowered names, cubin bytes, log); a compile error fails with NVRTC's log."""
    nvrtc = _nvrtc()
    prog = nvrtc.createProgram(source, name, [], [])
    try:
        for expr in expressions:
            nvrtc.addNameExpression(prog, expr)
        try:
            nvrtc.compileProgram(prog, [*K.COMPILE_OPTIONS, *CUPY_ADDED_OPTIONS, *extra,
                                        f"--gpu-architecture={arch}"])
        except nvrtc.NVRTCError:
            pytest.fail(f"NVRTC failed to compile {name} for {arch}:\n"
                        f"{nvrtc.getProgramLog(prog)}")
        lowered = {e: nvrtc.getLoweredName(prog, e) for e in expressions}
        return lowered, nvrtc.getCUBIN(prog), nvrtc.getProgramLog(prog)
    finally:
        nvrtc.destroyProgram(prog)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("filename, defines", BUILDS, ids=BUILD_IDS)
def test_nvrtc_compiles_every_instantiation(filename, defines, arch):
    expressions = K.name_expressions(filename)
    assert len(expressions) == len(K.KERNELS[filename]) * len(K.TYPENAMES)
    lowered, cubin, log = nvrtc_compile(K.source(filename), filename, arch, expressions,
                                        [f"-D{d}" for d in defines])
    assert cubin[:4] == b"\x7fELF"
    for expr, mangled in lowered.items():
        kernel = expr.split("<")[0]
        assert mangled.startswith("_Z") and kernel in mangled, (expr, mangled)
        assert mangled.encode() in cubin, f"{expr} ({mangled}) missing from the cubin"
    assert "warning" not in log.lower(), log


def test_nvrtc_reports_compile_errors():
    """A broken source fails the compile test with the compiler's own message."""
    broken = K.source("correlate_planes.cu").replace("tr::zero();", "tr::zero()", 1)
    with pytest.raises(pytest.fail.Exception, match=r"(?s)NVRTC failed.*expected a \";\""):
        nvrtc_compile(broken, "broken.cu", "sm_90", K.name_expressions("correlate_planes.cu"))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on the PATH")
@pytest.mark.parametrize("filename, defines", BUILDS, ids=BUILD_IDS)
def test_ptxas_no_spills_no_stack(filename, defines, tmp_path):
    # nvcc has no name expressions: taking each instantiation's address
    # makes it emit exactly the kernels NVRTC built above.
    addresses = ", ".join(f"(void*)&{e}" for e in K.name_expressions(filename))
    src = tmp_path / filename
    src.write_text(K.source(filename) + f"\nvoid* gc_instantiate[] = {{{addresses}}};\n")
    proc = subprocess.run(
        ["nvcc", "-cubin", "-arch=sm_90", *K.COMPILE_OPTIONS, "-ftz=true",
         *(f"-D{d}" for d in defines), "-Xptxas", "-v", str(src),
         "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = proc.stderr
    kernels = re.findall(r"Function properties for (\S+)\n\s*(\d+) bytes stack frame, "
                         r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert len(kernels) == len(K.name_expressions(filename)), report
    bad = [k for k in kernels if k[1:] != ("0", "0", "0")]
    assert not bad, f"stack frame or spills (name, stack, stores, loads): {bad}"

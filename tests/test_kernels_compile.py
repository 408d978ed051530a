"""Every CUDA source compiles for real GPU targets, with no GPU present.

NVRTC (from the ``nvidia-cuda-nvrtc-cu12`` wheel, through CuPy's low-level
binding, which needs no device) compiles each translation unit for sm_80 and
sm_90 with a name expression per template instantiation, exactly as
``cupy.RawModule`` will on a device.  ptxas (from the ``nvidia-cuda-nvcc-cu12``
wheel of the test extra, or the PATH) assembles that PTX for sm_90: every
kernel must stay under its register budget with no spills and no stack frame.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

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


# Registers per thread ptxas may use for sm_90, per kernel (largest over the
# element types), and why that many:
# - correlate_planes: 256-thread blocks, shared-memory bound (two blocks per SM
#   at 48 KiB of tile); 128 registers still fit two blocks in the register file.
# - conv2d_nchw / conv_transpose2d_nchw: GC_COB accumulators (complex128: 32
#   registers of them) per thread; 128 keeps four 128-thread blocks per SM.
# - im2col / col2im: memory-bound copies that need every warp an SM can hold
#   to hide latency; 32 registers is full occupancy (2048 threads x 32 = 64K).
REGISTER_BUDGETS = {
    "correlate_planes": 128,
    "im2col": 32,
    "col2im": 32,
    # The implicit-GEMM kernels hold a 4x4 micro-tile per thread: float and half must stay
    # at 128 (two 256-thread blocks per SM, their launch bounds); the wide types run one
    # block per SM and may use what a thread can have.
    "conv2d_igemm": {"float": 128, "gc_half": 128, "*": 255},
    "conv2d_igemm_padded": {"float": 128, "gc_half": 128, "*": 255},
    "conv_transpose2d_igemm": {"float": 128, "gc_half": 128, "*": 255},
    "conv2d_splitk_reduce": 32,
}


def register_budget(expr: str) -> int:
    kernel, typename = expr[:-1].split("<")
    budget = REGISTER_BUDGETS[kernel]
    return budget if isinstance(budget, int) else budget.get(typename, budget["*"])


def ptxas_path() -> str | None:
    """ptxas from the ``nvidia-cuda-nvcc-cu12`` wheel, else from the PATH."""
    try:
        import nvidia.cuda_nvcc as wheel
    except ImportError:
        pass
    else:
        for root in wheel.__path__:
            candidate = Path(root) / "bin" / "ptxas"
            if os.access(candidate, os.X_OK):
                return str(candidate)
    return shutil.which("ptxas")


def nvrtc_ptx(source: str, name: str, arch: str, expressions: list[str],
              extra: list[str] = ()) -> tuple[dict[str, str], bytes]:
    """(mangled name -> name expression, PTX) as NVRTC builds it for ``cupy.RawModule``."""
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
        lowered = {nvrtc.getLoweredName(prog, e): e for e in expressions}
        ptx = nvrtc.getPTX(prog)
    finally:
        nvrtc.destroyProgram(prog)
    return lowered, ptx if isinstance(ptx, bytes) else ptx.encode()


_RESOURCES = re.compile(
    r"Compiling entry function '(?P<name>[^']+)' for 'sm_90'.*?"
    r"(?P<stack>\d+) bytes stack frame, (?P<stores>\d+) bytes spill stores, "
    r"(?P<loads>\d+) bytes spill loads.*?Used (?P<regs>\d+) registers", re.S)


def ptxas_resources(filename: str, defines: tuple[str, ...], tmp_path: Path) -> dict[str, dict]:
    """Name expression -> {'regs', 'stack', 'stores', 'loads'} from ``ptxas -v`` for sm_90."""
    ptxas = ptxas_path()
    if ptxas is None:
        skip_or_fail("ptxas not found: install nvidia-cuda-nvcc-cu12 (the test extra does "
                     "on Linux x86_64) or put a CUDA toolkit's ptxas on the PATH")
    lowered, ptx = nvrtc_ptx(K.source(filename), filename, "compute_90",
                             K.name_expressions(filename), [f"-D{d}" for d in defines])
    src = tmp_path / (Path(filename).stem + ".ptx")
    src.write_bytes(ptx)
    proc = subprocess.run([ptxas, "-v", "-arch=sm_90", str(src), "-o",
                           str(tmp_path / "k.cubin")], capture_output=True, text=True,
                          timeout=300)
    if proc.returncode and "Unsupported .version" in proc.stderr:
        skip_or_fail(f"{ptxas} is older than NVRTC's PTX: {proc.stderr.strip()}; install "
                     "nvidia-cuda-nvcc-cu12 of the same CUDA version as nvidia-cuda-nvrtc-cu12")
    assert proc.returncode == 0, proc.stderr
    # Each function's report starts at its "Compiling entry function" line.
    blocks = re.split(r"(?=ptxas info\s*: Compiling entry function)", proc.stderr)
    found = {}
    for block in blocks:
        m = _RESOURCES.search(block)
        if m:
            found[lowered.get(m["name"], m["name"])] = {
                k: int(m[k]) for k in ("regs", "stack", "stores", "loads")}
    return found


@pytest.mark.parametrize("filename, defines", BUILDS, ids=BUILD_IDS)
def test_ptxas_registers_within_budget_no_spills_no_stack(filename, defines, tmp_path):
    found = ptxas_resources(filename, defines, tmp_path)
    assert set(found) == set(K.name_expressions(filename)), found
    bad = {expr: r for expr, r in found.items()
           if (r["stack"], r["stores"], r["loads"]) != (0, 0, 0)}
    assert not bad, f"stack frame or spills: {bad}"
    over = {expr: r["regs"] for expr, r in found.items() if r["regs"] > register_budget(expr)}
    assert not over, f"registers over budget {REGISTER_BUDGETS}: {over}"


def test_every_kernel_has_a_register_budget():
    assert set(REGISTER_BUDGETS) == {k for names in K.KERNELS.values() for k in names}


def test_ptxas_report_parsing_sees_spills(tmp_path):
    """The parser reads what ptxas reports: capping the registers forces spills."""
    ptxas = ptxas_path()
    if ptxas is None:
        skip_or_fail("ptxas not found: install nvidia-cuda-nvcc-cu12")
    lowered, ptx = nvrtc_ptx(K.source("correlate_planes.cu"), "correlate_planes.cu",
                             "compute_90", ["correlate_planes<gc_complex128>"])
    src = tmp_path / "k.ptx"
    # __launch_bounds__ (.maxntid) takes precedence over --maxrregcount: drop it.
    src.write_bytes(re.sub(rb"\n\.maxntid[^\n]*", b"", ptx))
    proc = subprocess.run([ptxas, "-v", "-arch=sm_90", "--maxrregcount=24", str(src), "-o",
                           str(tmp_path / "k.cubin")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    m = _RESOURCES.search(proc.stderr)
    assert m and lowered[m["name"]] == "correlate_planes<gc_complex128>", proc.stderr
    assert int(m["regs"]) <= 24 and int(m["stores"]) > 0 and int(m["loads"]) > 0

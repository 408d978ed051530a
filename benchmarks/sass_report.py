"""Static SASS report of gpuconv's CUDA kernels: the hottest loop of each kernel.

    python benchmarks/sass_report.py                  # float kernels, sm_90
    python benchmarks/sass_report.py --arch sm_80 --dtype all
    python benchmarks/sass_report.py --listing conv2d_igemm   # print that loop

No GPU is needed.  Each ``.cu`` file is compiled exactly as ``cupy.RawModule``
compiles it (NVRTC, the same options, one name expression per instantiation)
to a CUBIN for the chosen architecture, with ``-Xptxas -v`` so that ptxas
reports registers and spills; ``nvdisasm`` turns the CUBIN into SASS.

The *hottest loop* of a kernel is found statically: every backward branch
(a branch to an address at or before itself) closes a loop spanning the
addresses from its target to the branch.  Among the innermost loops (those
containing no other backward branch) the one with the most floating-point
multiply-adds is reported; its fused multiply-add share is the fraction of
the SASS instructions issued per trip that do useful arithmetic, an upper
bound on the fraction of the FP32 (or FP64) peak the kernel can reach.

Tools: NVRTC from the ``nvidia-cuda-nvrtc-cu12`` wheel (or any
``libnvrtc`` the dynamic loader finds), ``nvdisasm`` from the
``nvidia-cuda-nvdisasm`` wheel, ``$NVDISASM`` or the ``PATH``.  CuPy's own
NVRTC binding is not used for the CUBIN: CuPy 14's ``getCUBIN`` drops the
image's last byte, which ``nvdisasm`` rejects.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from gpuconv import kernels as K  # noqa: E402

# What cupy.RawModule adds to gpuconv's options (CuPy 14's cupy/cuda/compiler.py).
CUPY_ADDED_OPTIONS = ("-ftz=true", "--device-as-default-execution-space")
FMA_OPCODES = ("FFMA", "DFMA", "HFMA2")
# Opcodes that move data through local memory: spills (or a stack array).
LOCAL_OPCODES = ("LDL", "STL")


class ToolMissing(RuntimeError):
    """NVRTC or nvdisasm is not installed here (the message says which and how)."""


# -- NVRTC through ctypes ------------------------------------------------------------

def _nvrtc_candidates() -> list[str]:
    found: list[str] = []
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path}
    for root in roots:
        if root and os.path.isdir(root):
            found += sorted(glob.glob(os.path.join(root, "nvidia", "cuda_nvrtc", "lib",
                                                   "libnvrtc.so*")))
            found += sorted(glob.glob(os.path.join(root, "nvidia", "cu*", "lib",
                                                   "libnvrtc.so*")))
    name = ctypes.util.find_library("nvrtc")
    if name:
        found.append(name)
    # Only the real library (libnvrtc.so.12), not its builtins companion.
    return [f for f in found if "builtins" not in os.path.basename(f)]


class _Nvrtc:
    def __init__(self) -> None:
        errors = []
        for path in _nvrtc_candidates():
            try:
                self.lib = ctypes.CDLL(path)
                self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p
                self.path = path
                return
            except OSError as exc:
                errors.append(f"{path}: {exc}")
        raise ToolMissing("libnvrtc not found; install nvidia-cuda-nvrtc-cu12"
                          + (f" ({'; '.join(errors)})" if errors else ""))

    def _check(self, status: int, what: str) -> None:
        if status:
            raise RuntimeError(f"{what}: {self.lib.nvrtcGetErrorString(status).decode()}")

    def compile(self, source: str, name: str, expressions: list[str],
                options: list[str]) -> tuple[bytes, dict[str, str], str]:
        """(cubin, name expression -> lowered name, log); RuntimeError with the log."""
        lib = self.lib
        prog = ctypes.c_void_p()
        self._check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(),
                                           0, None, None), "nvrtcCreateProgram")
        try:
            for expr in expressions:
                self._check(lib.nvrtcAddNameExpression(prog, expr.encode()), expr)
            opts = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
            status = lib.nvrtcCompileProgram(prog, len(options), opts)
            size = ctypes.c_size_t()
            self._check(lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "log size")
            log_buf = ctypes.create_string_buffer(size.value)
            self._check(lib.nvrtcGetProgramLog(prog, log_buf), "log")
            log = log_buf.value.decode(errors="replace")
            if status:
                raise RuntimeError(f"NVRTC failed to compile {name}:\n{log}")
            self._check(lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "cubin size")
            cubin = ctypes.create_string_buffer(size.value)
            self._check(lib.nvrtcGetCUBIN(prog, cubin), "cubin")
            lowered = {}
            for expr in expressions:
                out = ctypes.c_char_p()
                self._check(lib.nvrtcGetLoweredName(prog, expr.encode(), ctypes.byref(out)),
                            expr)
                lowered[expr] = out.value.decode()
            return cubin.raw, lowered, log
        finally:
            lib.nvrtcDestroyProgram(ctypes.byref(prog))


def nvdisasm_path() -> str:
    """The nvdisasm executable, or :class:`ToolMissing` saying how to install it."""
    env = os.environ.get("NVDISASM")
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise ToolMissing(f"$NVDISASM={env} is not an executable file")
        return env
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path}
    for root in sorted(r for r in roots if r and os.path.isdir(r)):
        hits = sorted(glob.glob(os.path.join(root, "nvidia", "*", "bin", "nvdisasm")))
        if hits:
            return hits[-1]
    found = shutil.which("nvdisasm")
    if found:
        return found
    raise ToolMissing("nvdisasm not found; install the nvidia-cuda-nvdisasm wheel "
                      "(or set $NVDISASM)")


# -- compile and disassemble ------------------------------------------------------------

@dataclass
class Resources:
    registers: int
    stack: int
    spill_stores: int
    spill_loads: int


def compile_file(filename: str, arch: str, defines: tuple[str, ...] = (),
                 typenames: tuple[str, ...] | None = None
                 ) -> tuple[bytes, dict[str, str], dict[str, Resources]]:
    """Compile one kernel file as CuPy would: (cubin, lowered names, resources by mangled name).

    ``typenames`` limits the instantiations (e.g. ``("float",)``); default all.
    """
    options = [*K.COMPILE_OPTIONS, *CUPY_ADDED_OPTIONS, *(f"-D{d}" for d in defines),
               f"--gpu-architecture={arch}", "-Xptxas=-v"]
    expressions = [e for e in K.name_expressions(filename)
                   if typenames is None or e.split("<", 1)[1][:-1] in typenames]
    cubin, lowered, log = _Nvrtc().compile(K.source(filename), filename, expressions, options)
    return cubin, lowered, parse_ptxas_log(log)


def parse_ptxas_log(log: str) -> dict[str, Resources]:
    """Registers, stack frame and spills per function from ptxas's ``-v`` report."""
    out = {}
    pattern = (r"Function properties for (\S+)\n.*?(\d+) bytes stack frame, (\d+) bytes spill "
               r"stores, (\d+) bytes spill loads\n.*?Used (\d+) registers")
    for name, stack, stores, loads, regs in re.findall(pattern, log, re.S):
        out[name] = Resources(int(regs), int(stack), int(stores), int(loads))
    return out


def disassemble(cubin: bytes) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "module.cubin"
        path.write_bytes(cubin)
        proc = subprocess.run([nvdisasm_path(), "-c", str(path)], capture_output=True,
                              text=True, timeout=300)
    if proc.returncode:
        raise RuntimeError(f"nvdisasm failed: {proc.stderr.strip()}")
    return proc.stdout


# -- SASS parsing -------------------------------------------------------------------------

_INSTR = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;?\s*$")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_TARGET = re.compile(r"`\((\.L_x_\d+)\)")


@dataclass
class Instruction:
    address: int
    text: str

    @property
    def opcode(self) -> str:
        words = self.text.split()
        if words and words[0].startswith("@"):  # predicate guard
            words = words[1:]
        return words[0].split(".")[0] if words else ""

    @property
    def is_fma(self) -> bool:
        # "HFMA2.MMA Rd, -RZ, RZ, imm, imm" is ptxas's idiom for moving a
        # constant (often zero) into a register, not arithmetic.
        return self.opcode in FMA_OPCODES and ", -RZ, RZ," not in self.text


@dataclass
class Loop:
    start: int       # address of the branch target (loop head)
    end: int         # address of the backward branch
    instructions: list[Instruction] = field(default_factory=list)

    def count(self, *opcodes: str) -> int:
        return sum(1 for i in self.instructions if i.opcode in opcodes)

    @property
    def size(self) -> int:
        """Instructions per trip, NOPs (alignment padding) excluded."""
        return sum(1 for i in self.instructions if i.opcode != "NOP")

    @property
    def fma(self) -> int:
        return sum(1 for i in self.instructions if i.is_fma)


def functions(sass: str) -> dict[str, list[tuple[str, Instruction | str]]]:
    """Mangled name -> its lines, each ("instr", Instruction) or ("label", name)."""
    out: dict[str, list] = {}
    current = None
    for line in sass.splitlines():
        head = re.match(r"^\s*\.text\.(\S+):", line)
        if head:
            current = out.setdefault(head.group(1), [])
            continue
        if current is None:
            continue
        label = _LABEL.match(line)
        if label:
            current.append(("label", label.group(1)))
            continue
        m = _INSTR.match(line)
        if m:
            current.append(("instr", Instruction(int(m.group(1), 16), m.group(2))))
    return out


def loops(lines: list[tuple[str, Instruction | str]]) -> list[Loop]:
    """Every loop closed by a backward branch, innermost first by size."""
    labels: dict[str, int] = {}
    instrs: list[Instruction] = []
    pending: list[str] = []
    for kind, item in lines:
        if kind == "label":
            pending.append(item)
        else:
            for name in pending:
                labels[name] = item.address
            pending = []
            instrs.append(item)
    found = []
    for ins in instrs:
        if ins.opcode not in ("BRA", "JMP", "BRX"):
            continue
        target = _TARGET.search(ins.text)
        # A branch to itself is the trap after EXIT that pads a function, not a loop.
        if (target and target.group(1) in labels
                and labels[target.group(1)] < ins.address):
            start = labels[target.group(1)]
            body = [i for i in instrs if start <= i.address <= ins.address]
            found.append(Loop(start, ins.address, body))
    return sorted(found, key=lambda lp: lp.end - lp.start)


def innermost(all_loops: list[Loop]) -> list[Loop]:
    return [lp for lp in all_loops
            if not any(o is not lp and lp.start <= o.start and o.end <= lp.end
                       and (o.start, o.end) != (lp.start, lp.end) for o in all_loops)]


def hottest_loop(lines: list[tuple[str, Instruction | str]]) -> Loop | None:
    """The innermost loop with the most multiply-adds (ties: the smallest)."""
    inner = innermost(loops(lines))
    if not inner:
        return None
    return max(inner, key=lambda lp: (lp.fma, -lp.size))


# -- the report -------------------------------------------------------------------------------

@dataclass
class KernelReport:
    expression: str          # e.g. "conv2d_igemm<float, 0>"
    mangled: str
    resources: Resources | None
    loop: Loop | None
    local_memory_ops: int    # LDL/STL anywhere in the kernel

    @property
    def fma_share(self) -> float:
        return self.loop.fma / self.loop.size if self.loop and self.loop.size else 0.0

    @property
    def spills(self) -> int:
        r = self.resources
        return (r.spill_stores + r.spill_loads + r.stack) if r else 0


def report(filename: str, arch: str = "sm_90", defines: tuple[str, ...] = (),
           typenames: tuple[str, ...] | None = None) -> list[KernelReport]:
    """One :class:`KernelReport` per instantiation in ``filename`` (of ``typenames``)."""
    cubin, lowered, resources = compile_file(filename, arch, defines, typenames)
    funcs = functions(disassemble(cubin))
    out = []
    for expr, mangled in lowered.items():
        lines = funcs.get(mangled, [])
        local = sum(1 for kind, i in lines if kind == "instr" and i.opcode in LOCAL_OPCODES)
        out.append(KernelReport(expr, mangled, resources.get(mangled), hottest_loop(lines),
                                local))
    return out


def _format(rows: list[KernelReport]) -> str:
    head = (f"{'kernel':44s} {'loop instr':>10s} {'FMA':>5s} {'FMA share':>9s} "
            f"{'regs':>5s} {'spill B':>7s} {'LDL/STL':>7s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        size = r.loop.size if r.loop else 0
        fma = r.loop.fma if r.loop else 0
        regs = r.resources.registers if r.resources else -1
        lines.append(f"{r.expression:44s} {size:10d} {fma:5d} {r.fma_share:9.2f} "
                     f"{regs:5d} {r.spills:7d} {r.local_memory_ops:7d}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--dtype", default="float",
                        help="template argument to compile and report (float, double, "
                             "gc_half, gc_complex64, gc_complex128) or 'all'")
    parser.add_argument("--file", action="append", choices=sorted(K.KERNELS),
                        help="kernel file (repeatable; default every file)")
    parser.add_argument("--listing", metavar="KERNEL",
                        help="also print the hottest loop's SASS of kernels whose name "
                             "expression starts with KERNEL")
    args = parser.parse_args(argv)
    typenames = None if args.dtype == "all" else (args.dtype,)
    try:
        rows = []
        for filename in args.file or sorted(K.KERNELS):
            rows += report(filename, args.arch, typenames=typenames)
    except ToolMissing as exc:
        print(f"sass_report: {exc}", file=sys.stderr)
        return 2
    print(f"# {args.arch}: hottest innermost loop per kernel (FMA = FFMA/DFMA/HFMA2)")
    print(_format(rows))
    if args.listing:
        for r in rows:
            if r.expression.startswith(args.listing) and r.loop:
                print(f"\n## {r.expression}: {r.loop.size} instructions, "
                      f"{hex(r.loop.start)}..{hex(r.loop.end)}")
                for ins in r.loop.instructions:
                    print(f"  {ins.address:05x}  {ins.text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Static instruction budget of the conv kernels' hottest loops (sm_90 SASS).

``benchmarks/sass_report.py`` compiles ``conv2d.cu`` with NVRTC exactly as
CuPy does, disassembles the CUBIN with nvdisasm and finds each kernel's
hottest loop by its backward branch.  The float instantiations must spend at
least half of that loop's instructions on FFMA (the loop bounds the fraction
of the FP32 peak a kernel can reach whatever the memory system does), and no
kernel may spill to local memory.  The loop finder itself is checked on a
hand-written listing, so it cannot pass by finding nothing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from kernel_emulator import skip_or_fail

ROOT = Path(__file__).parent.parent
FFMA_SHARE_MIN = 0.5
FLOAT_KERNELS = ["conv2d_igemm<float>", "conv2d_igemm_padded<float>",
                 "conv_transpose2d_igemm<float>"]


def _load_report_module():
    spec = importlib.util.spec_from_file_location("sass_report",
                                                  ROOT / "benchmarks" / "sass_report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sass_report"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


sass_report = _load_report_module()

LISTING = """
//--------------------- .text._Z1kv --------------------------
.text._Z1kv:
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_0:
        /*0010*/                   IADD3 R2, R2, 0x1, RZ ;
.L_x_1:
        /*0020*/                   FFMA R3, R4, R5, R3 ;
        /*0030*/                   FFMA R6, R4, R5, R6 ;
        /*0040*/                   ISETP.GE.AND P0, PT, R2, 0x10, PT ;
        /*0050*/               @!P0 BRA `(.L_x_1) ;
        /*0060*/                   FFMA R7, R4, R5, R7 ;
        /*0070*/                   NOP ;
        /*0080*/               @P1 BRA `(.L_x_0) ;
        /*0090*/                   BRA `(.L_x_2) ;
.L_x_2:
        /*00a0*/                   EXIT ;
"""


def test_loop_finder_on_a_known_listing():
    funcs = sass_report.functions(LISTING)
    assert list(funcs) == ["_Z1kv"]
    loops = sass_report.loops(funcs["_Z1kv"])
    # Two backward branches (the forward BRA to .L_x_2 is not a loop).
    assert [(lp.start, lp.end) for lp in loops] == [(0x20, 0x50), (0x10, 0x80)]
    hot = sass_report.hottest_loop(funcs["_Z1kv"])
    assert (hot.start, hot.end) == (0x20, 0x50)  # the inner loop, not the outer one
    assert hot.size == 4 and hot.fma == 2
    outer = loops[1]
    assert outer.size == 7 and outer.fma == 3  # the NOP is padding, not an instruction


def test_ptxas_log_parser():
    log = ("ptxas info    : Function properties for _Z1kv\n"
           "ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n"
           "ptxas info    : Used 80 registers, used 1 barriers, 22016 bytes smem\n")
    r = sass_report.parse_ptxas_log(log)["_Z1kv"]
    assert (r.registers, r.stack, r.spill_stores, r.spill_loads) == (80, 8, 4, 12)


def conv_report(typenames):
    try:
        sass_report.nvdisasm_path()
        rows = sass_report.report("conv2d.cu", "sm_90", typenames=typenames)
    except sass_report.ToolMissing as exc:
        skip_or_fail(str(exc))
    return {r.expression: r for r in rows}


@pytest.fixture(scope="module")
def float_report():
    return conv_report(("float",))


@pytest.mark.parametrize("kernel", FLOAT_KERNELS)
def test_hot_loop_is_mostly_ffma(float_report, kernel):
    row = float_report[kernel]
    assert row.loop is not None, f"{kernel}: no loop found"
    ffma = row.loop.count("FFMA")
    assert ffma == row.loop.fma >= 256  # at least a whole 16-deep slice of 4 x 4 products
    assert ffma / row.loop.size >= FFMA_SHARE_MIN, (
        f"{kernel}: {ffma} FFMA in {row.loop.size} instructions "
        f"({ffma / row.loop.size:.2f} < {FFMA_SHARE_MIN})")


def _spills(rows):
    return {e: (r.resources, r.local_memory_ops) for e, r in rows.items()
            if r.resources is None or r.spills or r.local_memory_ops}


def test_float_kernels_do_not_spill(float_report):
    assert len(float_report) == 4
    bad = _spills(float_report)
    assert not bad, f"spills, stack or local memory (resources, LDL/STL count): {bad}"


@pytest.mark.slow
def test_no_instantiation_spills():
    rows = conv_report(None)
    assert len(rows) == 4 * 5
    bad = _spills(rows)
    assert not bad, f"spills, stack or local memory (resources, LDL/STL count): {bad}"

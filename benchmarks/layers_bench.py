"""Conv layers against PyTorch, every cell timed in its own process.

``python benchmarks/layers_bench.py [--rounds 3] [--repeat 10] [--threads N] [--out FILE.json]``

Every (case, dtype, column) runs in a fresh subprocess, so that no library's threads
(OpenBLAS's and OpenMP's keep spinning after a call), caches or allocator state leak
into another's timing; the subprocesses of a case run in rounds, each round in a new
seeded order, and a column's time is its best sample over all rounds.  Ratios are to
PyTorch (``torch.nn.functional``, no autograd) in the same run.  ``--threads`` sets
BLAS's, OpenMP's, PyTorch's and gpuconv's threads; by default each library keeps its own.

Cases:

* ``conv2d``: the layers of the benchmark grid (``gpuconv.bench._cases.CONV_LAYERS``,
  stride 1, no padding) and three 3x3 layers with padding 1;
* ``conv_transpose2d``: stride-2 layers (the input gradient of a strided conv);
* ``train``: one training step of a conv layer (forward, input and weight gradients)
  with ``gpuconv.nn.Conv2D`` against ``torch.nn.Conv2d`` with autograd.

Columns: ``auto`` and each applicable method of gpuconv, and ``torch``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gpuconv.bench._cases import CONV_LAYERS  # noqa: E402

# (op, N, C_in, H, W, C_out, k, stride, padding)
CASES = ([("conv2d", N, C, H, W, O, k, 1, 0) for N, C, H, W, O, k in CONV_LAYERS]
         + [("conv2d", 32, 64, 28, 28, 64, 3, 1, 1), ("conv2d", 32, 64, 56, 56, 64, 3, 1, 1),
            ("conv2d", 8, 256, 14, 14, 256, 3, 1, 1)]
         + [("conv_transpose2d", 32, 64, 14, 14, 64, 3, 2, 1),
            ("conv_transpose2d", 8, 128, 28, 28, 64, 4, 2, 1)]
         + [("train", N, C, H, W, O, k, 1, k // 2) for N, C, H, W, O, k in CONV_LAYERS])


def _methods(op: str, k: int, stride: int) -> tuple[str, ...]:
    if op == "train":
        return ("auto",)
    methods = ["auto", "direct", "gemm", "fft"]
    if k == 3 and stride == 1:
        methods.append("winograd")
    return tuple(methods)


def _child(column: str, case: tuple, dtype: str, repeat: int) -> dict[str, float]:
    import numpy as np

    op, N, C, H, W, O, k, s, p = case
    rng = np.random.default_rng(0)
    if op == "conv_transpose2d":
        x = rng.standard_normal((N, C, H, W)).astype(dtype)       # C: the transpose's input
        w = rng.standard_normal((C, O, k, k)).astype(dtype)
    else:
        x = rng.standard_normal((N, C, H, W)).astype(dtype)
        w = rng.standard_normal((O, C, k, k)).astype(dtype)
    if column == "torch":
        import torch

        if op == "train":
            layer = torch.nn.Conv2d(C, O, k, padding=p, dtype=getattr(torch, dtype))
            xt = torch.from_numpy(x).requires_grad_(True)
            g = torch.from_numpy(rng.standard_normal((N, O, H, W)).astype(dtype))

            def call():
                layer.zero_grad(set_to_none=True)
                xt.grad = None
                layer(xt).backward(g)
        else:
            xt, wt = torch.from_numpy(x), torch.from_numpy(w)
            fn = getattr(torch.nn.functional, op)

            def call():
                with torch.no_grad():
                    fn(xt, wt, stride=s, padding=p)
    else:
        import gpuconv

        if op == "train":
            from gpuconv import nn

            layer = nn.Conv2D(C, O, k, padding=p, dtype=dtype, seed=0)
            g = rng.standard_normal((N, O, H, W)).astype(dtype)

            def call():
                layer.zero_grad()
                layer(x)
                layer.backward(g)
        else:
            fn = getattr(gpuconv, op)

            def call():
                fn(x, w, stride=s, padding=p, method=column)
    call()
    call()
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t)
    samples.sort()
    return {"best": samples[0], "median": samples[len(samples) // 2]}


def _label(case: tuple) -> str:
    op, N, C, H, W, O, k, s, p = case
    extra = f" s{s}" if s != 1 else ""
    extra += f" p{p}" if p else ""
    return f"{op} ({N},{C},{H},{W})->{O} {k}x{k}{extra}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", action="append", choices=("float32", "float64"))
    parser.add_argument("--op", action="append", choices=("conv2d", "conv_transpose2d", "train"))
    parser.add_argument("--out", help="also write the results as JSON to this file")
    parser.add_argument("--child", nargs=4, metavar=("COLUMN", "CASE", "DTYPE", "REPEAT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        column, case, dtype, repeat = args.child
        print(json.dumps(_child(column, tuple(json.loads(case)), dtype, int(repeat))))
        return 0
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    if args.threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "GPUCONV_NUM_THREADS"):
            env[var] = str(args.threads)
    import numpy
    import torch

    import gpuconv
    record = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or
              platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
              "numpy": numpy.__version__, "torch": torch.__version__,
              "gpuconv": gpuconv.__version__, "threads": args.threads,
              "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
              "loadavg_start": os.getloadavg()[0], "rounds": args.rounds,
              "repeat": args.repeat, "cells": []}
    order = random.Random(0)
    print(f"threads: {args.threads or 'library defaults'}; best of {args.rounds} rounds x "
          f"{args.repeat} calls, each column in its own process; load average "
          f"{record['loadavg_start']:.2f} at start\n")
    print("| case | dtype | columns (ms) | best gpuconv / torch | auto / torch |")
    print("|---|---|---|---:|---:|")
    for dtype in args.dtype or ["float32", "float64"]:
        for case in CASES:
            if args.op and case[0] not in args.op:
                continue
            columns = _methods(case[0], case[6], case[7]) + ("torch",)
            best: dict[str, float] = {}
            for _ in range(args.rounds):
                shuffled = list(columns)
                order.shuffle(shuffled)
                for column in shuffled:
                    cmd = [sys.executable, __file__, "--child", column, json.dumps(case),
                           dtype, str(args.repeat)]
                    try:
                        out = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                             check=True).stdout
                    except subprocess.CalledProcessError as exc:
                        print(f"{column} failed on {case} {dtype}: {exc.stderr.strip()}",
                              file=sys.stderr)
                        continue
                    t = json.loads(out)["best"]
                    best[column] = min(best.get(column, t), t)
            ours = {c: t for c, t in best.items() if c != "torch"}
            fastest = min(ours, key=ours.get) if ours else None
            ratio = (best[fastest] / best["torch"]) if fastest and "torch" in best else None
            auto = (best["auto"] / best["torch"]) if "auto" in best and "torch" in best else None
            record["cells"].append({"case": list(case), "dtype": dtype, "seconds": best,
                                    "best": fastest, "best_vs_torch": ratio,
                                    "auto_vs_torch": auto})
            cells = ", ".join(f"{c} {t * 1e3:.3g}" for c, t in best.items())
            print(f"| {_label(case)} | {dtype} | {cells} | "
                  f"{'-' if ratio is None else f'{ratio:.2f} ({fastest})'} | "
                  f"{'-' if auto is None else f'{auto:.2f}'} |", flush=True)
    record["loadavg_end"] = os.getloadavg()[0]
    print(f"\nload average {record['loadavg_end']:.2f} at the end")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(record, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

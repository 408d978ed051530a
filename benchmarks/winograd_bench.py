"""Time ``method="winograd"`` against gpuconv's other methods and PyTorch on 3x3 layers.

``python benchmarks/winograd_bench.py [--rounds 3] [--repeat 10] [--threads N] [--dtype float32]``

Every (layer, dtype, column) is timed in its own subprocess, so that no library's
threads, caches or allocator state leak into another's timing; the subprocesses of
one layer run in rounds, each round in a new seeded order, and a column's time is
the best sample over all its rounds.  The table gives milliseconds and the ratio to
``torch.nn.functional.conv2d`` (``--threads`` sets both BLAS's and PyTorch's threads;
by default each library keeps its own default).  On a shared machine compare ratios,
and rerun: a burst of load hits whichever column runs at the time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time

LAYERS = [
    # N, C_in, H, W, C_out: 3x3, stride 1, padding 1
    (32, 64, 28, 28, 64),
    (32, 64, 56, 56, 64),
    (8, 256, 14, 14, 256),
]
COLUMNS = ("winograd", "direct", "gemm", "torch")


def _child(column: str, layer: tuple[int, ...], dtype: str, repeat: int,
           threads: int | None) -> dict[str, float]:
    import numpy as np

    N, C, H, W, O = layer
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((O, C, 3, 3)).astype(dtype)
    if column == "torch":
        import torch

        if threads:
            torch.set_num_threads(threads)
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)

        def call():
            with torch.no_grad():
                torch.nn.functional.conv2d(xt, wt, padding=1)
    else:
        import gpuconv

        def call():
            gpuconv.conv2d(x, w, padding=1, method=column)
    call()
    call()
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t)
    samples.sort()
    return {"best": samples[0], "median": samples[len(samples) // 2]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", action="append", choices=("float32", "float64"))
    parser.add_argument("--child", nargs=4, metavar=("COLUMN", "LAYER", "DTYPE", "REPEAT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        column, layer, dtype, repeat = args.child
        result = _child(column, tuple(json.loads(layer)), dtype, int(repeat), args.threads)
        print(json.dumps(result))
        return 0
    env = dict(os.environ)
    # The children import the gpuconv of this checkout.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    if args.threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "GPUCONV_NUM_THREADS"):
            env[var] = str(args.threads)
    order = random.Random(0)
    print(f"threads: {args.threads or 'library defaults'}; best of {args.rounds} rounds x "
          f"{args.repeat} calls; load average {os.getloadavg()[0]:.2f} at start\n")
    print("| layer (N, C, H, W) -> C_out | dtype | "
          + " | ".join(COLUMNS) + " | winograd / torch |")
    print("|---|---|" + "---|" * (len(COLUMNS) + 1))
    for dtype in args.dtype or ["float32", "float64"]:
        for layer in LAYERS:
            best: dict[str, float] = {}
            for _ in range(args.rounds):
                columns = list(COLUMNS)
                order.shuffle(columns)
                for column in columns:
                    cmd = [sys.executable, __file__, "--child", column, json.dumps(layer),
                           dtype, str(args.repeat)]
                    if args.threads:
                        cmd[2:2] = ["--threads", str(args.threads)]
                    try:
                        out = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                             check=True).stdout
                    except subprocess.CalledProcessError as exc:
                        print(f"{column} failed on {layer} {dtype}: {exc.stderr.strip()}",
                              file=sys.stderr)
                        continue
                    t = json.loads(out)["best"]
                    best[column] = min(best.get(column, t), t)
            cells = [f"{best[c] * 1e3:.1f}" if c in best else "-" for c in COLUMNS]
            ratio = (f"{best['winograd'] / best['torch']:.2f}"
                     if "winograd" in best and "torch" in best else "-")
            N, C, H, W, O = layer
            print(f"| ({N}, {C}, {H}, {W}) -> {O} | {dtype} | " + " | ".join(cells)
                  + f" | {ratio} |")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())

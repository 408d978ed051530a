"""The GPU benchmark: gpuconv's GPU grids on the CuPy backend, written to OUTDIR.

    python benchmarks/gpu_bench.py --out OUTDIR [--quick] [--budget SECONDS]

The harness of ``gpuconv bench`` (:mod:`gpuconv.bench`) with the grids of
``GPU_GRIDS`` in ``gpuconv/bench/_cases.py`` in that order (bandwidth,
batched, conv2d, planes), the card's copy bandwidth and float32
matrix-product rate measured first, and fixed file names:
``OUTDIR/gpu_bench.json`` and ``OUTDIR/gpu_bench.md``, rewritten after every
case so that a run stopped early keeps what it measured.  ``--budget``
seconds stops starting new cases (the rest are listed as not run).  Prints the
targets of the CuPy backend and how many are met.  Exit status 0 when the run
completed (met or not, the targets are results, not errors), 1 when the
backend cannot run here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument("--quick", action="store_true", help="tiny cases, for a smoke test")
    parser.add_argument("--budget", type=float, default=50.0, metavar="SECONDS",
                        help="start no case after this many seconds (default 50)")
    parser.add_argument("--backend", default="cupy", help="gpuconv backend (default cupy)")
    args = parser.parse_args(argv)

    import gpuconv
    from gpuconv.bench import Settings, run
    from gpuconv.bench._cases import GPU_GRIDS
    from gpuconv.bench._targets import targets_markdown

    status = gpuconv.available_backends().get(args.backend)
    if status is None:
        parser.error(f"unknown backend {args.backend!r}; registered: "
                     f"{', '.join(gpuconv.available_backends())}")
    if not status.usable:
        reason = " ".join(status.reason.split())
        print(f"gpu_bench: backend {args.backend!r} cannot run here: {reason}", file=sys.stderr)
        return 1
    if args.quick:
        settings = Settings(repeat=3, min_sample=0.002, cap=0.5, case_budget=1.0,
                            budget=args.budget)
    else:
        settings = Settings(repeat=5, min_sample=0.02, cap=1.0, case_budget=5.0,
                            budget=args.budget)
    report = run(backend=args.backend, grids=GPU_GRIDS, quick=args.quick, settings=settings,
                 out=args.out, stem="gpu_bench", ceilings=True,
                 progress=lambda line: print(line, flush=True),
                 notes=["benchmarks/gpu_bench.py: the GPU grids, ceilings first"])
    rows = report["targets"]
    print(targets_markdown(rows))
    met = sum(r["met"] is True for r in rows)
    missed = sum(r["met"] is False for r in rows)
    print(f"{met}/{len(rows)} targets met, {missed} missed, "
          f"{len(rows) - met - missed} not measured")
    for path in report.get("files", []):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

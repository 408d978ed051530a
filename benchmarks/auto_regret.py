"""The regret of method="auto" in a benchmark result: its time over the fastest gpuconv method.

    python benchmarks/auto_regret.py benchmarks/results/<device>-<date>.json [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gpuconv.bench._fftcols import regret_markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a JSON file written by gpuconv bench")
    parser.add_argument("--out", help="also write the table to this markdown file")
    parser.add_argument("--target", type=float, default=1.15, help="regret target (1.15)")
    args = parser.parse_args(argv)
    report = json.loads(Path(args.results).read_text())
    text = (f"# Regret of method='auto' ({report.get('device')}, {report.get('date')})\n\n"
            f"Source: `{Path(args.results).name}`. Regret = auto's median time / the fastest "
            f"gpuconv method's (direct, gemm, fft, overlap-add) in the same run.\n\n"
            + regret_markdown(report, args.target) + "\n")
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run gpuconv's benchmark grid: ``python benchmarks/run.py [--quick] [--out DIR] ...``.

The same as ``gpuconv bench``; ``--help`` lists the options.
"""

import sys

from gpuconv.bench import main

if __name__ == "__main__":
    sys.exit(main())

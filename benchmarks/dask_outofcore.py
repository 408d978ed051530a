"""Out-of-core correlation on a dask LocalCluster: 16384² float32 with a 15x15 kernel.

Same as ``gpuconv bench --dask``; ``--help`` lists the options.  Needs the
``dask`` extra (``pip install ".[dask]"``).
"""

import sys

from gpuconv.bench._dask import main

if __name__ == "__main__":
    sys.exit(main())

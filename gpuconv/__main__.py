"""``python -m gpuconv`` is the ``gpuconv`` command."""

import sys

from .cli import main

sys.exit(main())

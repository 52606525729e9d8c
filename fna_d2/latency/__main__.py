"""``python -m fna_d2.latency``: see :mod:`fna_d2.latency.cli`."""
import sys

from .cli import main

sys.exit(main())

"""``python -m fna_d2.pipeline``: see :mod:`fna_d2.pipeline.cli`."""
import sys

from .cli import main

sys.exit(main())

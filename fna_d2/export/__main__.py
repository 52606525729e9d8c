"""``python -m fna_d2.export``: see :mod:`fna_d2.export.cli`."""
import sys

from .cli import main

sys.exit(main())

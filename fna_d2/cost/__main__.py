"""``python -m fna_d2.cost``: see :mod:`fna_d2.cost.cli`."""
import sys

from .cli import main

sys.exit(main())

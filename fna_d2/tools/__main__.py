"""``python -m fna_d2.tools``: see :mod:`fna_d2.tools.cli`."""
import sys

from .cli import main

sys.exit(main())

"""``python -m fna_d2.quant``: see :mod:`fna_d2.quant.cli`."""
import sys

from .cli import main

sys.exit(main())

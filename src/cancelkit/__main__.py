"""``python -m cancelkit``: the command line (``cancelkit.demo._cli``)."""

import sys

from .demo._cli import main

sys.exit(main())

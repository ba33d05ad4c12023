"""``python -m qff_core.cli``: the ``qff`` command."""

import sys

from qff_core.cli import main

sys.exit(main())

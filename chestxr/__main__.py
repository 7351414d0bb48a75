"""``python -m chestxr`` is the same as the ``chestxr`` command."""

import sys

from chestxr.cli import main

sys.exit(main())

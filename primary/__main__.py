"""``python -m primary``: the same as ``uptane-primary``."""

import sys

from primary.cli import main

sys.exit(main())

"""``python -m secondary``: the same as ``uptane-secondary``."""

import sys

from secondary.cli import main

sys.exit(main())

"""``python -m timeserver``: the ``uptane-time-server`` command."""

import sys

from timeserver.cli import main

sys.exit(main())

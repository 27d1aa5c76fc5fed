"""The vehicle process of the offline test (issue 18): the Primary imports an offline
bundle (``uptane-primary import-bundle ARGS``) while this process also powers the CAN
Secondary on python-can's ``virtual`` bus (which only reaches within one process, as in
``demo.vehicle``).

    python tests/e2e/offline_vehicle.py CAN_SECONDARY_TOML import-bundle --config F ...
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from demo.vehicle import power_secondary
from primary.cli import main


def run(argv: list[str]) -> int:
    stop = threading.Event()
    thread = power_secondary(Path(argv[0]), stop)
    try:
        return main(argv[1:])
    finally:
        stop.set()
        thread.join(timeout=5)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))

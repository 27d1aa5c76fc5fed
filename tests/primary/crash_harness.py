"""Run one Primary cycle in this process, with the vehicle's Secondary agents rebuilt from
their directories on in-process links (``python crash_harness.py CAR_DIR``). The crash
tests run it with ``UPTANE_PRIMARY_CRASH_AT`` set, so the whole vehicle dies by SIGKILL."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from ecu_support import boot_agent

from primary.agent import Primary
from primary.config import load_config


def main(car: Path) -> int:
    cfg = load_config(car / "primary.toml")
    for s in cfg.secondaries:
        boot_agent(s.serial, s.hardware_id, car / "ecus" / s.serial, s.mode, cfg.vin)
    result = Primary(cfg, say=lambda m: print(m, flush=True)).run_cycle()
    return 0 if result.error is None else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))

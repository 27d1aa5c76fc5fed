"""Run one Primary cycle in this process, with the vehicle's Secondary agents rebuilt from
their directories on in-process links: the whole vehicle on one power supply.

    python crash_harness.py CAR_DIR [--kill-at SPEC | --count FILE]

Every durable write of the vehicle (the Primary's state, downloads and own flash, each
Secondary's store and flash) goes through one :class:`storage.FileSystem`. With
``--kill-at`` it is a :class:`storage.faults.FaultyFileSystem` over
:class:`storage.faults.KillAt` (``SPEC`` as :meth:`KillAt.parse` reads it: a write point
number, or words and ``#n`` for the n-th point containing them): the process SIGKILLs
itself there. With ``--count`` it names every write point of a clean cycle, in order, and
writes them to ``FILE`` as JSON. The agents carry no crash hook: the file system is the
only seam."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from ecu_support import boot_agent

from primary.agent import Primary
from primary.config import load_config
from storage import LOCAL, FileSystem
from storage.faults import FaultyFileSystem, KillAt, WritePointCounter


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("car", type=Path)
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--kill-at")
    how.add_argument("--count", type=Path)
    args = parser.parse_args(argv)
    fs: FileSystem = LOCAL
    counter = WritePointCounter()
    if args.kill_at is not None:
        fs = FaultyFileSystem(KillAt.parse(args.kill_at))
    elif args.count is not None:
        fs = FaultyFileSystem(counter)
    cfg = load_config(args.car / "primary.toml")
    for s in cfg.secondaries:
        boot_agent(s.serial, s.hardware_id, args.car / "ecus" / s.serial, s.mode, cfg.vin, fs=fs)
    result = Primary(cfg, say=lambda m: print(m, flush=True), fs=fs).run_cycle()
    if args.count is not None:
        args.count.write_text(json.dumps(counter.points))
    return 0 if result.error is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

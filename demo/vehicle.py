"""The vehicle process of the demo: the Primary runs one update cycle (what
``uptane-primary run --once --config F`` does, with finer progress lines).

    python -m demo.vehicle --config primary.toml [--can-secondary secondary.toml]

With ``--can-secondary``, this process also powers that Secondary (``uptane-secondary run``
on python-can's ``virtual`` bus, which only reaches within one process): the machine gives
no private network namespace in which ``udp_multicast`` could carry CAN frames between
processes. Killing this process is then a power cut of the Primary and that Secondary; both
come back from their files. Exit status: 0, or 1 when the cycle ended with an error.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from pathlib import Path

from hardware.server import serve
from primary.agent import Primary
from primary.config import load_config
from secondary.agent import SecondaryAgent
from secondary.cli import open_transport
from secondary.config import SecondaryConfig


def _say(message: str) -> None:
    print(message, flush=True)


def power_secondary(config: Path, stop: threading.Event) -> threading.Thread:
    """Boot the Secondary described by ``config`` and serve its link in a thread."""
    cfg = SecondaryConfig.load(config)
    agent = SecondaryAgent.from_config(cfg)
    agent.start()
    transport = open_transport(cfg)
    endpoint = agent.endpoint(max_frame=transport.max_frame)

    def run() -> None:
        try:
            serve(transport, endpoint, stop)
        finally:
            with contextlib.suppress(Exception):
                transport.close()

    thread = threading.Thread(target=run, name=f"secondary-{cfg.ecu_serial}", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.vehicle", description=__doc__)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--can-secondary", type=Path)
    args = parser.parse_args(argv)
    stop = threading.Event()
    thread = power_secondary(args.can_secondary, stop) if args.can_secondary else None
    try:
        cfg = load_config(args.config)
        result = Primary(cfg, say=_say, progress_step=5).run_cycle()
        if result.error is not None:
            _say(f"cycle ended with an error: {result.error}")
        return 0 if result.error is None else 1
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=5)


if __name__ == "__main__":
    sys.exit(main())

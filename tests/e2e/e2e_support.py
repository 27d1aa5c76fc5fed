"""The scenario of `make demo` as a fixture: a fresh OEM backend and vehicle built by
:class:`demo.stack.Stack`, every part a real process (the CAN Secondary on python-can's
virtual bus inside the vehicle process: the test process is not in a private network
namespace), and a bound on the whole test so it can never hang CI."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo.stack import CAN_ECU, SERIAL_ECU, Image, Stack, firmware
from hardware.flash import Flash
from hardware.slots import SlotManager
from secondary.config import SecondaryConfig

#: seconds one end-to-end test may take before it is stopped (and its processes with it)
BOUND = 150


class Overran(Exception):
    """The test went past its bound."""


@contextlib.contextmanager
def bounded(seconds: int = BOUND) -> Iterator[None]:
    """Raise :class:`Overran` in the test after ``seconds`` (SIGALRM, main thread)."""

    def expired(signum: int, frame: Any) -> None:
        raise Overran(f"end-to-end test still running after {seconds}s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class Vehicle:
    """A running stack with the vehicle registered: keys by ECU serial."""

    stack: Stack
    keys: dict[str, Any]


@contextlib.contextmanager
def running_stack(work: Path, *, serial_rate: float | None = None) -> Iterator[Vehicle]:
    """Both services up, the vehicle provisioned and registered, the serial Secondary's
    process running; everything stopped on the way out."""
    with bounded(), Stack(work, can="virtual", serial_rate=serial_rate) as stack:
        try:
            stack.create_image_repo()
            stack.start_image_repo()
            stack.create_director()
            stack.start_director()
            keys = stack.provision_vehicle()
            stack.start_secondaries()
            yield Vehicle(stack, keys)
        except BaseException:
            show_logs(stack)  # captured by pytest, shown with the failure
            raise


def show_logs(stack: Stack, lines: int = 40) -> None:
    """The end of every part's log file."""
    for log in stack.logs():
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"===== {log}\n" + "\n".join(tail))


def images(version: str, counter: int, brake_size: int, door_size: int) -> dict[str, Image]:
    """One image per Secondary, by ECU serial."""
    return {
        SERIAL_ECU[0]: Image(
            f"brake/brake-{version}.bin",
            firmware("brake", version, brake_size),
            SERIAL_ECU[1],
            counter,
        ),
        CAN_ECU[0]: Image(
            f"door/door-{version}.bin", firmware("door", version, door_size), CAN_ECU[1], counter
        ),
    }


def _slots(stack: Stack, serial: str) -> SlotManager:
    cfg = SecondaryConfig.load(stack.ecu_dir(serial) / "secondary.toml")
    return SlotManager(Flash(cfg.flash_dir, cfg.slot_size), limits=cfg.limits)


def installed(stack: Stack, serial: str) -> Any:
    """What the ECU's boot record says its active slot holds (None: nothing)."""
    return _slots(stack, serial).status().installed


def slot_bytes(stack: Stack, serial: str) -> tuple[Any, bytes]:
    """What the ECU's boot record says its active slot holds, and those bytes of flash."""
    slots = _slots(stack, serial)
    st = slots.status()
    assert st.installed is not None, f"{serial} runs nothing"
    return st.installed, slots.flash.read(st.active, 0, st.installed.length)

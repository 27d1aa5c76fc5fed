"""``uptane-flash``: the bench tool. It flashes one Secondary over its link, acting as a
Primary for that ECU, and shows what the ECU runs.

    uptane-flash --port /dev/ttyUSB0 [--link-key link.key] info
    uptane-flash --port /dev/ttyUSB0 [--link-key link.key] install --metadata DIR --image FILE

``install`` sends the current time, the Director-signed metadata found in ``DIR`` and the
image (with a progress bar on stderr: redrawn in place on a terminal, ten lines in a log,
none with ``--quiet``), asks the ECU to install it, and prints the ECU's new
signed version report. The tool has no bypass: the ECU verifies the metadata, the image and
every §5.4.3.4 check itself, and any refusal comes back as the error naming the attack.

An ECU with a link key talks only to a tool given that key (``--link-key``, the file
``uptane-secondary provision`` made; the OEM decides which workshop tools get it). An ECU
provisioned with time server keys takes only signed time: the tool's unsigned time is
refused (``time-unsigned``, noted on stderr) and the ECU keeps its own verified time.

Metadata directory layouts (DER ``.der`` or JSON ``.json`` files):

- partial verification: ``N.root.der`` (Director root versions, optional: sent in order,
  for key rotation) or ``root.der``, and ``targets.der`` (the Director's targets);
- full verification: ``director/`` and ``image/`` subdirectories holding each repository's
  ``N.root``, ``timestamp``, ``snapshot`` and ``targets`` (and delegated roles), plus an
  optional ``map.json``. The Director's targets is sent last: it starts verification.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hardware.client import LinkClient
from hardware.messages import HelloInfo, Status
from hardware.progress import progress_bar
from hardware.secure_link import LinkKey
from uptane.codec import for_filename, sniff
from uptane.errors import MalformedInput, UnsignedTime, UptaneError
from uptane.limits import PRIMARY, Limits
from uptane.manifest import SignedManifest, decode_report

#: a metadata file's name without its encoding's suffix: ``3.root``, ``targets``
_STEM = re.compile(r"^(?:(\d+)\.)?([A-Za-z0-9_.-]+)$")
_ORDER = {"root": 0, "timestamp": 1, "snapshot": 2, "targets": 3}


@dataclass(frozen=True)
class MetadataFile:
    """One file to send: which repository and role, its encoding and bytes."""

    repository: str
    role: str
    encoding: str
    data: bytes


def _parse_name(name: str) -> tuple[int, str, str] | None:
    """``(version or -1, role, encoding)`` of a metadata file name (``3.root.der``,
    ``targets.json``: any registered codec's suffix); ``None`` for any other file and for
    the map file."""
    try:
        codec = for_filename(name)
    except MalformedInput:
        return None
    m = _STEM.match(name[: -len(codec.suffix)])
    if not m or (m.group(1) is None and m.group(2) == "map"):
        return None
    return (-1 if m.group(1) is None else int(m.group(1))), m.group(2), codec.name


def _repo_files(directory: Path, repository: str, max_bytes: int) -> list[MetadataFile]:
    """A repository's files in the order a Secondary applies them: every root version
    ascending, then timestamp, snapshot, targets, then delegated roles."""
    roots: list[tuple[int, MetadataFile]] = []
    latest: dict[str, tuple[int, MetadataFile]] = {}
    for p in sorted(directory.iterdir()):
        parsed = _parse_name(p.name) if p.is_file() else None
        if parsed is None:
            continue
        version, role, encoding = parsed
        if p.stat().st_size > max_bytes:
            raise ValueError(f"{p} is larger than {max_bytes} bytes")
        f = MetadataFile(repository, role, encoding, p.read_bytes())
        if role == "root":
            if version >= 0 or not roots:
                roots.append((version, f))
            continue
        # the newest version of each other role (the unversioned file wins: it is current)
        prev = latest.get(role)
        if prev is None or version == -1 or (prev[0] != -1 and version > prev[0]):
            latest[role] = (version, f)
    if len(roots) > 1:
        roots = [r for r in roots if r[0] >= 0]
    out = [f for _, f in sorted(roots, key=lambda r: r[0])]
    rest = sorted(latest.values(), key=lambda vf: (_ORDER.get(vf[1].role, 9), vf[1].role))
    return out + [f for _, f in rest]


def load_metadata(
    directory: str | os.PathLike[str],
    *,
    director: str = "director",
    image: str = "image",
    max_bytes: int = PRIMARY.bytes_for_role("targets"),
) -> list[MetadataFile]:
    """The files of a metadata directory in sending order (see the module doc)."""
    d = Path(directory)
    if not d.is_dir():
        raise ValueError(f"{d} is not a directory")
    if (d / "director").is_dir():
        out: list[MetadataFile] = []
        for name in ("map.json",):
            if (d / name).is_file():
                out.append(
                    MetadataFile(director, "map", for_filename(name).name, (d / name).read_bytes())
                )
        if (d / "image").is_dir():
            out += _repo_files(d / "image", image, max_bytes)
        dfiles = _repo_files(d / "director", director, max_bytes)
        out += [f for f in dfiles if f.role != "targets"]
        out += [f for f in dfiles if f.role == "targets"]
        return out
    files = _repo_files(d, director, max_bytes)
    if not any(f.role == "targets" for f in files):
        raise ValueError(f"{d} holds no Director targets file (targets.der or targets.json)")
    return [f for f in files if f.role in ("root", "targets")]


# --- operations ---------------------------------------------------------------------------


def describe_report(data: bytes, limits: Limits = PRIMARY) -> dict[str, Any]:
    """Decode a signed ECU version report (any encoding, told by its first byte) into its
    JSON shape."""
    encoding = sniff(data).name
    report: SignedManifest[Any] = decode_report(data, limits, encoding)
    return {"encoding": encoding, **report.to_dict()}


def info(client: LinkClient) -> dict[str, Any]:
    """What the ECU says about itself: HELLO, STATUS and a fresh signed report."""
    hello: HelloInfo = client.hello()
    st: Status = client.status()
    report = describe_report(client.get_report(secrets.token_bytes(16)))
    return {
        "ecu_serial": hello.ecu_serial,
        "hardware_id": hello.hardware_id,
        "mode": hello.mode,
        "slot_size": hello.slot_size,
        "slot": report["signed"].get("slot"),
        "state": st.state,
        "installed": st.installed,
        "last_error_code": st.attack,
        "report": report,
    }


def install(
    client: LinkClient,
    metadata: list[MetadataFile],
    image: str | os.PathLike[str],
    *,
    now: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    filename: str | None = None,
) -> dict[str, Any]:
    """Send the time, the metadata and the image, install it, return the new report.

    ``filename`` is the image's name in the Director's targets (default: the file's name).
    Every refusal raises the :mod:`uptane.errors` error the ECU named.
    """
    path = Path(image)
    name = filename or path.name
    client.hello()
    try:
        client.put_time(int(time.time()) if now is None else now)
    except UnsignedTime as e:  # the ECU keeps its own verified time
        print(f"uptane-flash: note: {e}", file=sys.stderr)
    for f in metadata:
        client.put_metadata(f.role, f.encoding, f.data, repository=f.repository)
    length = path.stat().st_size
    with open(path, "rb") as stream:
        started = client.put_image(name, stream, length, progress=progress)
    status = client.install(name)
    report = client.get_report(secrets.token_bytes(16))
    return {
        "status": status.state,
        "installed": status.installed,
        "resumed_from": started,
        **describe_report(report),
    }


# --- command line -------------------------------------------------------------------------


class CanLink:
    """A :class:`hardware.can_link.CanTransport` that owns its python-can bus (closing it
    shuts the bus down). Used by the bench tool and by ``uptane-secondary run``."""

    def __init__(self, bus: Any, transport: Any) -> None:
        self.bus = bus
        self.transport = transport

    @property
    def max_frame(self) -> int:
        return int(self.transport.max_frame)

    def negotiate(self, frame_size: int) -> None:
        self.transport.negotiate(frame_size)

    def send(self, message: bytes, timeout: float | None = None) -> None:
        self.transport.send(message, timeout)

    def recv(self, timeout: float) -> bytes | None:
        data: bytes | None = self.transport.recv(timeout)
        return data

    def close(self) -> None:
        try:
            self.transport.close()
        finally:
            self.bus.shutdown()


def open_can(
    interface: str,
    channel: str,
    *,
    txid: int,
    rxid: int,
    fd: bool = False,
    bitrate: int | None = None,
    limits: Limits = PRIMARY,
) -> CanLink:
    """Open a python-can bus and an ISO-TP transport on it (``txid`` is the id this end
    sends on, ``rxid`` the one it listens to)."""
    import can

    from hardware.can_link import CanTransport

    kwargs: dict[str, Any] = {"interface": interface, "channel": channel, "fd": fd}
    if bitrate is not None:
        kwargs["bitrate"] = bitrate
    bus = can.Bus(**kwargs)
    try:
        transport = CanTransport(bus, txid=txid, rxid=rxid, fd=fd, limits=limits)
    except Exception:
        bus.shutdown()
        raise
    return CanLink(bus, transport)


def open_client(args: argparse.Namespace) -> LinkClient:
    """A client over serial (``--port`` is the device) or CAN (``--can-interface`` given:
    ``--port`` is the python-can channel), with the link key of ``--link-key``."""
    key = None
    if args.link_key is not None:
        try:
            key = LinkKey.load(Path(args.link_key))
        except MalformedInput as e:  # a local problem (exit 2), not the ECU's refusal
            raise ValueError(f"{args.link_key}: {e.message}") from None
    transport: Any
    if args.can_interface:
        transport = open_can(
            args.can_interface, args.port, txid=args.txid, rxid=args.rxid, fd=args.fd
        )
    else:
        from hardware.serial_link import SerialTransport

        transport = SerialTransport(args.port, baudrate=args.baudrate, max_frame=args.max_frame)
    return LinkClient(transport, PRIMARY, timeout=args.timeout, retries=args.retries, link_key=key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="uptane-flash", description="Flash and inspect one Uptane Secondary on the bench."
    )
    parser.add_argument("--port", required=True, help="serial port (device, pty or URL)")
    parser.add_argument("--baudrate", type=int, default=115200)
    parser.add_argument("--max-frame", type=int, default=1024)
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per attempt")
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument(
        "--can-interface", help="use CAN: python-can interface; --port is the channel"
    )
    parser.add_argument("--txid", type=lambda v: int(v, 0), default=0x7E0, help="CAN id we send on")
    parser.add_argument("--rxid", type=lambda v: int(v, 0), default=0x7E8, help="CAN id we read")
    parser.add_argument("--fd", action="store_true", help="CAN FD frames")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--link-key", help="the ECU's link key file (made by `uptane-secondary provision`)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="show the ECU's identity, slot, image and version report")
    i = sub.add_parser("install", help="send metadata and an image, install, show the report")
    i.add_argument("--metadata", required=True, help="directory of Director-signed metadata")
    i.add_argument("--image", required=True, help="the image file")
    i.add_argument("--name", help="the image's file name in the targets (default: its name)")
    args = parser.parse_args(argv)
    try:
        with open_client(args) as client:
            if args.command == "info":
                out = info(client)
            else:
                files = load_metadata(args.metadata)
                bar = progress_bar("image", quiet=args.quiet, log_steps=10)
                out = install(client, files, args.image, progress=bar, filename=args.name)
    except UptaneError as e:
        print(f"uptane-flash: refused: {e} (code {e.code}, attack {e.attack})", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"uptane-flash: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

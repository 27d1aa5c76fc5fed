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
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hardware.bench_files import (
    ImageSource,
    MetadataFile,
    _parse_name,
    assigned_entry,
    load_metadata,
)
from hardware.bench_session import BenchSession, Delivery, SessionError
from hardware.client import LinkClient, NoAnswer
from hardware.messages import HelloInfo, Status
from hardware.progress import progress_bar
from hardware.secure_link import LinkKey
from uptane.codec import sniff
from uptane.errors import LinkError, LinkTimeout, MalformedInput, UnsignedTime, UptaneError
from uptane.identity import same_image
from uptane.limits import PRIMARY, Limits
from uptane.manifest import EcuVersionReport, InstalledImage, SignedManifest, decode_report
from uptane.metadata import TargetFile

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


def _installed(report: bytes, encoding: str | None) -> InstalledImage:
    enc = encoding or sniff(report).name
    signed: SignedManifest[EcuVersionReport] = decode_report(report, PRIMARY, enc)
    return signed.signed.installed


def send_time(client: LinkClient, now: int | None = None) -> None:
    """The laptop's time, unsigned: an ECU with time keys refuses it and keeps its own
    verified time (noted on stderr)."""
    try:
        client.put_time(int(time.time()) if now is None else now)
    except UnsignedTime as e:
        print(f"uptane-flash: note: {e}", file=sys.stderr)


def install(
    client: LinkClient,
    metadata: list[MetadataFile],
    image: str | os.PathLike[str] | ImageSource,
    *,
    now: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    filename: str | None = None,
) -> dict[str, Any]:
    """Send the time and the metadata; unless the ECU already runs the image they name for
    it (same identity: :func:`uptane.identity.same_image`; then nothing more is sent and
    the status is "already installed"), send the image, install it; return the ECU's new
    signed report. ``filename`` is the image's name in the Director's targets (default:
    their entry for this ECU, else the file's name). Every refusal raises the
    :mod:`uptane.errors` error the ECU named."""
    hello = client.hello()
    send_time(client, now)
    for f in metadata:
        client.put_metadata(f.role, f.encoding, f.data, repository=f.repository)
    entry = assigned_entry(metadata, hello.ecu_serial)
    source = image if isinstance(image, ImageSource) else ImageSource.of_file(image)
    name = filename or (entry.path if entry is not None else source.name)
    encoding = hello.codecs[0] if hello.codecs else None
    before = client.get_report(secrets.token_bytes(16))
    if entry is not None and entry.path == name and same_image(_installed(before, encoding), entry):
        return {
            "status": "already installed",
            "installed": name,
            "resumed_from": None,
            **describe_report(before),
        }
    with source.open() as stream:
        started = client.put_image(name, stream, source.length, progress=progress)
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


#: seconds the first HELLO may take before the port is said to have no ECU behind it
PROBE_SECONDS = 6.0


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


def link_settings(args: argparse.Namespace) -> str:
    """The port's settings as tried, for an error that names them."""
    if args.can_interface:
        frames = "CAN FD" if args.fd else "classic"
        where = (
            f"CAN {args.can_interface} channel {args.port}, txid {args.txid:#x}, "
            f"rxid {args.rxid:#x}, {frames} frames"
        )
    else:
        where = f"serial, {args.baudrate} baud, frames up to {args.max_frame} bytes"
    key = f"link key {args.link_key}" if args.link_key else "no link key"
    return f"{where}, {key}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uptane-flash", description="Flash and inspect one Uptane Secondary on the bench."
    )
    parser.add_argument("--port", help="serial port (device, pty or URL), or the CAN channel")
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
    i.add_argument("--metadata", help="directory of Director-signed metadata")
    i.add_argument(
        "--session", help="bench session directory: the Director's metadata, report sent back"
    )
    i.add_argument("--bundle", help="an offline update bundle (uptane-director workshop bundle)")
    i.add_argument("--vin", help="the vehicle of the bundle to flash from (default: its only one)")
    i.add_argument("--image", help="the image file (default with --bundle: from the bundle)")
    i.add_argument("--name", help="the image's file name in the targets (default: the ECU's)")
    _session_parsers(sub)
    return parser


def _session_parsers(sub: Any) -> None:
    s = sub.add_parser("session", help="create a bench session: the laptop's key and settings")
    s.add_argument("--dir", required=True, help="the session directory to create")
    s.add_argument("--vin", required=True, help="the bench vehicle's VIN at the Director")
    s.add_argument("--director", help="the Director's URL (its vehicle-facing service)")
    s.add_argument("--image-repo", help="the Image repository's URL (full verification ECUs)")
    s.add_argument("--primary-serial", default="bench", help="the laptop's ECU serial")
    s.add_argument("--hardware-id", default="uptane-bench", help="the laptop's hardware id")
    s.add_argument(
        "--ecu", action="append", default=[], help="another ECU of the bench vehicle (repeat)"
    )
    s.add_argument("--force", action="store_true", help="replace an existing session")
    u = sub.add_parser("upload", help="send the manifests a session kept while offline")
    u.add_argument("--session", required=True)


def _session_metadata(session: BenchSession, hello: HelloInfo) -> list[MetadataFile]:
    """The Director's metadata for the bench vehicle, fetched now (with the Image
    repository's for a full-verification ECU), in the codec the ECU reads."""
    encoding = hello.codecs[0] if hello.codecs else "der"
    full = hello.mode == "full"
    director = _named(session.repository_files(session.director_base(), encoding, full=full))
    if not full:
        return [f for f in director if f.role in ("root", "targets")]
    if not session.image_url:
        raise SessionError("a full verification ECU needs the session's --image-repo URL")
    base = session.image_url.rstrip("/") + "/metadata/"
    image = _named(session.repository_files(base, encoding, full=True), "image")
    return (
        image
        + [f for f in director if f.role != "targets"]
        + [f for f in director if f.role == "targets"]
    )


#: how long a session waits for the Director to serve targets naming the image given (its
#: service may serve the previous targets for ``cache_seconds``, 2 s, after an assignment)
ASSIGNED_WAIT = 6.0


def _assigned_metadata(
    session: BenchSession, hello: HelloInfo, image: ImageSource
) -> list[MetadataFile]:
    """The Director's metadata once its targets name ``image`` for this ECU. A file the
    Director did not assign is refused here, before the ECU would have to refuse it (and
    keep that as its attack indicator): a bench mistake is not an attack."""
    deadline = time.monotonic() + ASSIGNED_WAIT
    while True:
        files = _session_metadata(session, hello)
        entry = assigned_entry(files, hello.ecu_serial)
        if entry is not None and same_image(image.identity(entry), entry):
            return files
        if time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    named = f"names {entry.path!r}" if entry is not None else "name no image"
    raise ValueError(
        f"the Director's targets for {session.vin} {named} for ECU {hello.ecu_serial}, not "
        f"{image.name}: assign it first (uptane-director assign DIR {session.vin} "
        f"{hello.ecu_serial}=PATH), or give --image the file that was assigned"
    )


def _named(files: list[tuple[str, bytes]], repository: str = "director") -> list[MetadataFile]:
    out = []
    for name, data in files:
        parsed = _parse_name(name)
        if parsed is not None:
            out.append(MetadataFile(repository, parsed[1], parsed[2], data))
    return out


def _flash(args: argparse.Namespace, client: LinkClient) -> dict[str, Any]:
    """``install``: from a metadata directory, a bench session or an offline bundle; the
    ECU's new report goes back to the Director when a session is given."""
    session = BenchSession.load(args.session) if args.session else None
    hello = client.hello()
    image: str | ImageSource | None = args.image
    bar = progress_bar("image", quiet=args.quiet, log_steps=10)
    if args.bundle:
        from hardware.bench_bundle import bundle_files

        files, from_bundle = bundle_files(Path(args.bundle), args.vin, hello)
        out = install(client, files, image or from_bundle, progress=bar, filename=args.name)
    elif args.metadata:
        if image is None:
            raise ValueError("install needs --image FILE (the image the Director assigned)")
        files = load_metadata(args.metadata)
        out = install(client, files, image, progress=bar, filename=args.name)
    elif session is not None:
        if args.image is None:
            raise ValueError("install needs --image FILE (the image the Director assigned)")
        source = ImageSource.of_file(args.image)
        out = _already_runs(client, source, hello) or install(
            client,
            _assigned_metadata(session, hello, source),
            source,
            progress=bar,
            filename=args.name,
        )
    else:
        raise ValueError("install needs --metadata DIR, --session DIR or --bundle FILE")
    if session is not None:
        report = client.get_report(secrets.token_bytes(16))
        encoding = hello.codecs[0] if hello.codecs else sniff(report).name
        body = session.manifest(report, encoding)
        delivery = session.deliver(body, encoding, label=hello.ecu_serial)
        out["director"] = delivery.to_dict()
        _say_delivery(delivery, session)
    return out


def _already_runs(
    client: LinkClient, image: ImageSource, hello: HelloInfo
) -> dict[str, Any] | None:
    """The ECU's report when it already runs ``image`` (the same length and hashes as the
    image its signed report names: :func:`uptane.identity.same_image`), else None. The
    Director's targets name nothing once the bundle is confirmed, so a flash run again
    after it succeeded is answered from the ECU's own word, with nothing sent but the
    time (its report then carries a current one for the Director)."""
    send_time(client)
    report = client.get_report(secrets.token_bytes(16))
    runs = _installed(report, hello.codecs[0] if hello.codecs else None)
    if not runs.filename:
        return None
    like = TargetFile(runs.filename, runs.length, dict(runs.hashes))
    if not same_image(runs, image.identity(like)):
        return None
    return {
        "status": "already installed",
        "installed": runs.filename,
        "resumed_from": None,
        **describe_report(report),
    }


def _say_delivery(d: Delivery, session: BenchSession) -> None:
    if d.refused is not None:
        print(
            f"uptane-flash: the Director refused the report: {d.refused}; it is kept in "
            f"{d.saved} (the OEM can take it with `uptane-director workshop upload`)",
            file=sys.stderr,
        )
    elif d.saved is not None:
        print(
            f"uptane-flash: the Director cannot be reached; the ECU's report is kept in "
            f"{d.saved}: send it with `uptane-flash upload --session {session.directory}`",
            file=sys.stderr,
        )


def _session(args: argparse.Namespace) -> dict[str, Any]:
    s = BenchSession.create(
        Path(args.dir),
        args.vin,
        force=args.force,
        primary_serial=args.primary_serial,
        hardware_id=args.hardware_id,
        director_url=args.director,
        image_url=args.image_repo,
        ecus=tuple(args.ecu),
    )
    pub = s.directory / "bench.pub.json"
    return {
        "session": str(s.directory),
        "vin": s.vin,
        "public_key": json.loads(pub.read_text()),
        "register": f"uptane-director vehicle add DIRECTOR {s.vin} "
        f"--ecu {s.primary_serial}:{s.hardware_id}:{pub}:primary "
        "--ecu SERIAL:HARDWARE_ID:ecu/ecu_key.pub.json",
    }


def _run(args: argparse.Namespace) -> tuple[int, Any]:
    """The command; its exit status and what to print."""
    if args.command == "session":
        return 0, _session(args)
    if args.command == "upload":
        results = BenchSession.load(args.session).upload_outbox()
        return (0 if all(r["uploaded"] for r in results) else 1), results
    if not args.port:
        raise ValueError(f"{args.command} needs --port (the serial port, or the CAN channel)")
    with open_client(args) as client:
        try:
            client.probe(PROBE_SECONDS)
        except NoAnswer:
            raise NoAnswer(
                f"no ECU answered on {args.port} within {PROBE_SECONDS:.0f} s "
                f"({link_settings(args)}): check the cable and the port, the baud rate or CAN "
                "ids, that the ECU runs `uptane-secondary run`, and its link key (an ECU "
                "provisioned with --no-link-key answers no tool given --link-key)"
            ) from None
        if args.command == "info":
            return 0, info(client)
        out = _flash(args, client)
        refused = out.get("director", {}).get("refused")
        return (1 if refused else 0), out


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done (also "already installed"), 1 refused (by the ECU, or the
    Director refused its report), 2 a local problem (files, arguments, the port cannot be
    opened), 3 the link (no ECU answered, or it stopped answering: run again to resume)."""
    args = _parser().parse_args(argv)
    try:
        status, out = _run(args)
    except NoAnswer as e:
        print(f"uptane-flash: {e.message}", file=sys.stderr)
        return 3
    except LinkTimeout as e:
        print(
            f"uptane-flash: the ECU on {args.port} stopped answering ({e.message}); check the "
            "cable and run the same command again: an image transfer resumes where the ECU "
            "stopped acknowledging",
            file=sys.stderr,
        )
        return 3
    except UptaneError as e:
        if type(e) is LinkError:  # the port itself failed (an OS error), not the ECU
            print(
                f"uptane-flash: the link on {args.port} failed ({e.message}): check the cable "
                "and the port, then run the same command again",
                file=sys.stderr,
            )
            return 3
        print(f"uptane-flash: refused: {e} (code {e.code}, attack {e.attack})", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"uptane-flash: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2, sort_keys=True))
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

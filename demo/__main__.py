"""`make demo`: a real update across every part of the system, on this machine.

In a temporary directory it creates an OEM setup (Image repository with offline and online
keys, Director with an SQLite inventory, a Roughtime time server), starts each in its own
process on 127.0.0.1, provisions a vehicle (a Primary, a Secondary on a serial pty in its
own process, a Secondary on CAN; every link authenticated with its link key, every ECU
taking only signed time), releases firmware the offline way, assigns it through the
Director's admin API and runs the Primary's update cycles, then shows a man in the middle
being refused. Every process it starts is stopped on the way out, also on Ctrl-C.

    python -m demo [--keep]        # --keep: leave the work directory for a look around

The no-network walkthrough of the core alone is ``python -m demo.inprocess``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from demo.stack import (
    CAN_ECU,
    PRIMARY,
    PROGRESS,
    SERIAL_ECU,
    VIN,
    Cycle,
    Image,
    Stack,
    StackError,
    enter_private_netns,
    firmware,
    in_private_netns,
    setup_netns_loopback,
    swap,
)
from hardware.progress import Progress, progress_bar

#: the width of a progress bar's label (the longest: "send to brake-1 (brake/...)")
LABEL = 40
#: the serial line's pace: about a 1 Mbit/s UART, so the transfer can be watched
SERIAL_RATE = 100_000
#: the Primary's step lines shown during an update cycle, as (prefix in the line, label)
KEEP = (
    "report received",
    "report returned",
    "manifest sent",
    "manifest refused",
    "Director metadata verified",
    "Image repository metadata verified",
    "approved",
    "downloaded",
    "download of",
    "encrypted for",
    "metadata file(s)",
    "verified time",
    "resumed",
    "installed",
    "refused",
    "unreachable",
    "verification failed",
    "report refused",
)


def rebuilt(data: bytes) -> bytes:
    """``data`` with about 5 % of its bytes rewritten in runs, as a firmware rebuild."""
    import random

    rnd = random.Random(len(data))
    out = bytearray(data)
    for _ in range(len(data) // 20 // 256):
        off = rnd.randrange(0, len(out) - 256)
        out[off : off + 256] = rnd.randbytes(256)
    return bytes(out)


def last(cycle: Cycle) -> str:
    """The Primary's last step line (its whole output is in its log file)."""
    return cycle.lines[-1].strip() if cycle.lines else "no output"


def kib(n: int) -> str:
    return f"{n / 1024:.0f} KiB"


@dataclass
class Ecu:
    """One row of the before/after table."""

    serial: str
    hardware_id: str
    link: str
    before: str = "-"
    after: str = "-"
    result: str = ""


class Output:
    """Short lines for people: numbered steps, ticks, progress bars (hardware.progress)
    drawn in place on a terminal (one final bar line per transfer otherwise)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.n = 0
        self._bar: Progress | None = None
        self._bar_label = ""
        self.t0 = time.monotonic()

    def write(self, text: str) -> None:
        if self._bar is not None:
            self._bar.close()  # a transfer that stopped short stays on screen where it was
            self._bar = None
        self.out.write(text + "\n")
        self.out.flush()

    def step(self, title: str) -> None:
        self.n += 1
        self.write(f"\n{self.n}. {title}")

    def ok(self, text: str) -> None:
        self.write(f"   ✓ {text}")

    def info(self, text: str) -> None:
        self.write(f"     {text}")

    def bad(self, text: str) -> None:
        self.write(f"   ✗ {text}")

    def bar(self, label: str, done: int, total: int) -> None:
        """One progress step of a transfer; a new label (or a restart) is a new bar."""
        bar = self._bar
        if bar is None or label != self._bar_label or (bar.closed and done < total):
            if bar is not None:
                bar.close()
            # the Primary's own lines drive it: their timing is their arrival's, so none shown
            bar = self._bar = progress_bar(f"     {label:<{LABEL}}", stream=self.out, timing=False)
            self._bar_label = label
        bar(done, total)


class Demo:
    """One run: the steps below, in order, on a :class:`~demo.stack.Stack`."""

    def __init__(self, stack: Stack, out: Output) -> None:
        self.s = stack
        self.o = out
        self.keys: dict[str, Any] = {}
        self.ecus = {
            PRIMARY[0]: Ecu(PRIMARY[0], PRIMARY[1], "Primary"),
            SERIAL_ECU[0]: Ecu(SERIAL_ECU[0], SERIAL_ECU[1], "serial"),
            CAN_ECU[0]: Ecu(CAN_ECU[0], CAN_ECU[1], "CAN"),
        }
        self.images: dict[str, Image] = {}

    # --- helpers ------------------------------------------------------------------------

    def image(self, ecu: str, version: str, counter: int, size: int) -> Image:
        short = ecu.split("-")[0]
        hw = self.ecus[ecu].hardware_id
        img = Image(
            f"{short}/{short}-fw-{version}.bin", firmware(short, version, size), hw, counter
        )
        self.images[img.path] = img
        return img

    def show_line(self, line: str) -> None:
        """One step line of the Primary, as people read it."""
        m = PROGRESS.match(line)
        if m:
            kind, path, ecu, _pct, done, total = m.groups()
            label = f"download {path}" if kind == "download" else f"send to {ecu} ({path})"
            self.o.bar(label, int(done), int(total))
            return
        text = line.strip()
        if not text or not any(k in text for k in KEEP):
            return
        if "refused" in text or "failed" in text or "stopped" in text:
            self.o.bad(text)
        elif "metadata file(s)" in text:
            self.o.info(text)
        else:
            self.o.ok(text)

    def cycle(self, title: str | None, *, quiet: bool = False) -> Cycle:
        """One Primary run; step lines shown unless ``quiet``."""
        if title:
            self.o.step(title)
        cycle = self.s.run_primary(None if quiet else self.show_line)
        if cycle.returncode not in (0, 1):
            raise StackError(f"the Primary exited with {cycle.returncode}: {last(cycle)}")
        return cycle

    def runs(self) -> dict[str, str]:
        """What each ECU runs, from its signed report in the last manifest (each report
        checked with the key that ECU was registered with)."""
        out = {}
        for serial, body in self.s.checked_reports(self.keys).items():
            name = body.installed.filename
            rc = body.release_counter
            out[serial] = "-" if not name else f"{name} (r{rc if rc is not None else 0})"
        return out

    # --- the steps ------------------------------------------------------------------------

    def run(self) -> int:
        self.intro()
        self.oem_setup()
        self.vehicle()
        self.factory()
        update = self.release_2()
        eavesdrop = self.listen()
        before = self.update_cycle()
        self.confirm(update, before)
        self.eavesdropper(update[0], eavesdrop)
        self.clocks()
        self.table()
        self.attack()
        return 0

    def intro(self) -> None:
        o, s = self.o, self.s
        where = (
            "CAN frames cross processes on udp_multicast in a private network namespace"
            if s.can == "udp"
            else "no private network namespace here: the CAN Secondary runs on python-can's "
            "virtual bus inside the vehicle process"
        )
        o.write("Uptane demo: a real OEM backend and a vehicle, all on 127.0.0.1")
        o.write(f"work directory {s.work}")
        o.write(where)

    def oem_setup(self) -> None:
        o, s = self.o, self.s
        o.step("OEM setup")
        s.create_image_repo()
        o.ok(
            "Image repository keys: root and targets offline "
            f"({s.image_dir.name}.offline-keys), snapshot and timestamp online"
        )
        s.start_image_repo()
        o.ok(f"uptane-image-repo serve: {s.image_url} (own process)")
        s.create_director()
        o.ok("Director keys: root offline; targets, snapshot, timestamp online")
        s.start_director()
        o.ok(f"uptane-director serve: {s.director_url} (own process, inventory in SQLite)")
        s.create_time_server()
        s.start_time_server()
        o.ok(
            f"uptane-time-server serve: udp {s.time_address} (own process, Roughtime "
            "draft 11; long-term key offline, a 30-day delegation online)"
        )

    def vehicle(self) -> None:
        o, s = self.o, self.s
        o.step(f"Vehicle {VIN}")
        self.keys = s.provision_vehicle()
        s.start_secondaries()
        assert s.wire is not None
        o.ok(
            f"{SERIAL_ECU[0]} ({SERIAL_ECU[1]}): Secondary on a serial line "
            f"{s.wire.primary_end} <-> {s.wire.secondary_end}, own process"
        )
        can_where = "own process" if s.can == "udp" else "in the vehicle process"
        o.ok(f"{CAN_ECU[0]} ({CAN_ECU[1]}): Secondary on CAN, ISO-TP, {can_where}")
        o.ok(f"{PRIMARY[0]} ({PRIMARY[1]}): Primary, trusts both repositories' roots")
        o.ok("each Secondary's link key made at provisioning and given to the Primary")
        o.ok("every ECU takes only time signed by the OEM's time server (its key provisioned)")
        o.ok(
            "vehicle and its 3 ECU keys registered, with each Secondary's encryption key:"
            " POST /api/vehicles"
        )

    def factory(self) -> None:
        o, s = self.o, self.s
        o.step("Factory software (the first update cycle, quietly)")
        factory = [
            self.image(SERIAL_ECU[0], "1.0", 1, 128 * 1024),
            self.image(CAN_ECU[0], "1.0", 1, 64 * 1024),
        ]
        s.release(factory)
        s.assign({SERIAL_ECU[0]: factory[0].path, CAN_ECU[0]: factory[1].path})
        first = self.cycle(None, quiet=True)
        if first.returncode != 0:
            raise StackError(f"the factory cycle failed: {last(first)}")
        for line in first.lines:
            if ": installed " in line:
                o.ok(line.strip())

    def release_2(self) -> list[Any]:
        o, s = self.o, self.s
        o.step("Release 2.0, signed the offline way, assigned through the admin API")
        door1 = self.images["door/door-fw-1.0.bin"]
        door2 = Image(
            "door/door-fw-2.0.bin", rebuilt(door1.data), door1.hardware_id, 2
        )  # 1.0 rebuilt with about 5 % of its bytes changed
        self.images[door2.path] = door2
        update = [self.image(SERIAL_ECU[0], "2.0", 2, 256 * 1024), door2]
        version = s.release(update)
        for img in update:
            o.ok(
                f"uploaded {img.path} ({kib(len(img.data))}, {img.hardware_id}, "
                f"release counter {img.release_counter}): PUT /api/images"
            )
        o.ok(f"targets v{version} signed with the offline key, uploaded: PUT /api/metadata")
        path, size = s.release_delta(door1, door2)
        o.ok(
            f"delta 1.0 -> 2.0 for {CAN_ECU[0]}: {kib(size)} instead of {kib(len(door2.data))}"
            f" (detools), uploaded and signed as a target of its own: {path}"
        )
        s.assign({SERIAL_ECU[0]: update[0].path, CAN_ECU[0]: door2.path}, encrypt={SERIAL_ECU[0]})
        o.ok(f"POST /api/vehicles/{VIN}/assignments: {len(update)} assignments, one bundle")
        o.ok(
            f"{SERIAL_ECU[0]} gets brake 2.0 encrypted: the Director encrypts it once and wraps"
            f" its key to {SERIAL_ECU[0]}'s own encryption key (made at provisioning)"
        )
        o.ok(f"{CAN_ECU[0]} runs 1.0, the delta's base: the Director sends it the delta")
        return update

    def listen(self) -> list[bytearray]:
        """An eavesdropper on the serial line and on the Primary's two connections."""
        s = self.s
        assert s.wire is not None and s.image_mitm is not None and s.director_mitm is not None
        s.wire.capture = bytearray()
        return [s.wire.capture, s.image_mitm.start_capture(), s.director_mitm.start_capture()]

    def eavesdropper(self, brake: Image, heard: list[bytearray]) -> None:
        """What crossed the serial line and the Primary's connections, and what the
        Primary keeps, holds none of the encrypted image's plaintext."""
        o, s = self.o, self.s
        o.step("The eavesdropper's view (§4.3)")
        samples = [brake.data[i : i + 16] for i in range(64, len(brake.data) - 16, 4096)]
        line, downloads = heard[0], heard[1] + heard[2]
        kept = b"".join(
            p.read_bytes() for p in (s.vehicle_dir / "primary").rglob("*") if p.is_file()
        )
        found = sum(x in line for x in samples) + sum(x in downloads for x in samples)
        found += sum(x in kept for x in samples)
        o.ok(
            f"serial line: {kib(len(line))} heard, the Primary's downloads {kib(len(downloads))},"
            f" its files {kib(len(kept))}"
        )
        if found:
            raise StackError(f"{found} pieces of {brake.path}'s plaintext were heard")
        o.ok(
            f"none of {len(samples)} samples of {brake.path}'s plaintext in any of them:"
            f" only {SERIAL_ECU[0]} can decrypt it"
        )

    def update_cycle(self) -> dict[str, str]:
        """The cycle that installs 2.0; returns what each ECU ran before it. Its manifest
        reports 1.0 (the factory bundle is confirmed); the Director then signs the 2.0
        bundle for the vehicle."""
        cycle = self.cycle("Update cycle (the Primary, §5.4.2)")
        before = self.runs()
        if cycle.returncode != 0:
            raise StackError(f"the update cycle failed: {last(cycle)}")
        return before

    def confirm(self, update: list[Any], before: dict[str, str]) -> None:
        o, s = self.o, self.s
        o.step("Confirmed: the next manifest carries the signed reports")
        self.cycle(None, quiet=True)
        after = self.runs()
        for serial in self.s.checked_reports(self.keys):
            o.ok(f"{serial}: signed report verifies with its registered key")
        status = s.status()
        for a in status["assignments"]:
            if a["target"] in {i.path for i in update}:
                o.ok(f"Director: {a['ecu']} <- {a['target']}: {a['state']}")
                self.ecus[a["ecu"]].result = (
                    "verified, installed, confirmed" if a["state"] == "installed" else a["state"]
                )
        self.ecus[PRIMARY[0]].result = "nothing assigned"
        for serial, e in self.ecus.items():
            e.before, e.after = before.get(serial, "-"), after.get(serial, "-")

    def clocks(self) -> None:
        """Each Secondary's clock: set only from time the OEM's server signed for its
        own nonce (its state's time record)."""
        import json
        from datetime import UTC, datetime

        o, s = self.o, self.s
        o.step("Signed time: each Secondary's clock, as its own checks set it")
        for serial in (SERIAL_ECU[0], CAN_ECU[0]):
            rec = json.loads((s.ecu_dir(serial) / "state" / "time").read_text())
            when = datetime.fromtimestamp(rec["latest"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            how = "verified time token" if rec.get("source") == "signed" else rec.get("source")
            o.ok(f"{serial}: clock {when} ({how}: the server's signature, this ECU's nonce)")

    def table(self) -> None:
        o = self.o
        o.step("Before and after")
        rows = [("ECU", "link", "before", "after", "result")]
        rows += [(e.serial, e.link, e.before, e.after, e.result) for e in self.ecus.values()]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for i, r in enumerate(rows):
            o.write("   " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
            if i == 0:
                o.write("   " + "  ".join("-" * w for w in widths))

    def attack(self) -> None:
        o, s = self.o, self.s
        o.step("Attack: a man in the middle swaps the images")
        release = {
            SERIAL_ECU[0]: self.image(SERIAL_ECU[0], "3.0", 3, 64 * 1024),
            CAN_ECU[0]: self.image(CAN_ECU[0], "3.0", 3, 32 * 1024),
        }
        s.release(list(release.values()))
        s.assign({ecu: img.path for ecu, img in release.items()})
        o.ok("release 3.0 for both Secondaries, signed and assigned as before")
        self.primary_refuses_swapped_images()
        self.secondary_refuses_a_forwarded_swap(release[SERIAL_ECU[0]])
        self.director_records_the_attacks(release)

    def primary_refuses_swapped_images(self) -> None:
        from primary.cli import status_dict
        from primary.config import load_config
        from uptane.errors import error_from_code

        o, s = self.o, self.s
        assert s.image_mitm is not None
        s.image_mitm.swap_images = True
        o.info("the vehicle's traffic to the Image repository now passes a hostile proxy:")
        o.info("it serves every image with the same length and other bytes")
        cycle = self.cycle(None, quiet=True)
        state = status_dict(load_config(s.primary_config_path))
        attacks = state["attacks_to_report"]
        assert isinstance(attacks, list)
        seen = [a for a in attacks if str(a["where"]).startswith("download")]
        if not seen or cycle.returncode == 0:
            raise StackError(f"the swapped images were not refused: {last(cycle)}")
        for a in seen:
            name = type(error_from_code(int(a["code"]))).__name__
            o.bad(f"REFUSED by the Primary: {name} ({a['attack']}) at {a['where']}")
        message, prefix = str(seen[0]["message"]), f"{seen[0]['attack']}: "
        o.info(message[len(prefix) :] if message.startswith(prefix) else message)

    def secondary_refuses_a_forwarded_swap(self, brake: Any) -> None:
        """A compromised Primary would forward the swapped image anyway: the Secondary
        checks for itself."""
        from uptane.errors import error_from_code

        o, s = self.o, self.s
        o.info(f"and if a compromised Primary forwarded the swapped image to {SERIAL_ECU[0]}?")
        o.info("(played by uptane-flash with brake-1's link key, and the Director's real targets)")
        attacker = s.work / "attacker"
        s.director_targets(attacker)
        bad = attacker / "swapped.bin"
        bad.write_bytes(swap(brake.data))
        proc = s.flash_serial(
            ["install", "--metadata", str(attacker), "--image", str(bad), "--name", brake.path]
        )
        m = re.search(r"\(code (\d+), attack ([\w-]+)\)", proc.stderr)
        if proc.returncode != 1 or m is None:
            raise StackError(f"{SERIAL_ECU[0]} did not refuse the swapped image")
        name = type(error_from_code(int(m.group(1)))).__name__
        o.bad(f"REFUSED by {SERIAL_ECU[0]} itself: {name} ({m.group(2)}), nothing installed")
        stranger = s.flash_serial(
            ["install", "--metadata", str(attacker), "--image", str(bad), "--name", brake.path],
            link_key=False,
        )
        m = re.search(r"\(code (\d+), attack ([\w-]+)\)", stranger.stderr)
        if stranger.returncode != 1 or m is None:
            raise StackError(f"{SERIAL_ECU[0]} took a message from a peer without its link key")
        name = type(error_from_code(int(m.group(1)))).__name__
        o.bad(f"a peer without {SERIAL_ECU[0]}'s link key: {name}, not one message taken")

    def director_records_the_attacks(self, release: dict[str, Any]) -> None:
        """The next manifest tells the Director, with every ECU's report of what it runs."""
        o, s = self.o, self.s
        self.cycle(None, quiet=True)
        now = self.runs()
        for ecu in release:
            o.ok(f"{ecu} keeps {now[ecu]} (its signed report)")
        status = s.status()
        who = sorted({str(a["ecu"]) for a in status.get("attacks", [])})
        if who:
            o.ok(f"the Director recorded the attacks reported by {', '.join(who)}")
        for a in status["assignments"]:
            if a["target"] in {img.path for img in release.values()}:
                o.ok(f"Director: {a['ecu']} <- {a['target']}: {a['state']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    # CAN across processes needs a private network namespace: re-run inside one when the
    # machine allows it (does not return then); inside, loopback must carry multicast
    enter_private_netns([sys.executable, "-m", "demo", *(argv or sys.argv[1:])])
    if in_private_netns() and not setup_netns_loopback():
        print("demo: no usable loopback in the network namespace", file=sys.stderr)
        return 2
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    out = Output(sys.stdout)
    work = Path(tempfile.mkdtemp(prefix="uptane-demo-"))
    stack = Stack(work, serial_rate=SERIAL_RATE)
    ok = False
    try:
        code = Demo(stack, out).run()
        ok = code == 0
    except KeyboardInterrupt:
        out.write("\ninterrupted")
        code = 130
    except (StackError, OSError) as e:
        out.write(f"\ndemo failed: {e}")
        code = 1
    finally:
        stack.close()
    if not ok and code != 130:
        out.write("logs of the parts:")
        for log in stack.logs():
            out.write(f"  {log}")
    elapsed = time.monotonic() - out.t0
    if ok:
        out.write(f"\nevery process stopped; done in {elapsed:.0f}s")
    if (ok or code == 130) and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    elif ok:
        out.write(f"work directory kept: {work}")
    return code


if __name__ == "__main__":
    sys.exit(main())

"""The in-process demonstration behind `make demo` (until the multi-process demo exists).

Everything runs in one process with no network: an Image repository and a Director are
built and signed in memory, a Primary runs full verification (§5.4.4.2) over both, streams
each image through the hash check, "installs" it on simulated ECUs, and then a man in the
middle tries to swap an image's bytes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from hardware.progress import progress_bar
from uptane.errors import UptaneError
from uptane.keys import PrivateKey
from uptane.limits import Limits
from uptane.metadata import JSON, DelegatedRole, MapFile, TargetFile
from uptane.repository import RepositoryBuilder
from uptane.trust import RepositoryTrust
from uptane.verify import ApprovedImage, VehicleContext, full_verification

VIN = "VIN-DEMO-0001"
ROLES = ("root", "targets", "snapshot", "timestamp")


@dataclass
class Ecu:
    """A simulated ECU: what it is and what it runs (its active slot)."""

    ecu_id: str
    hardware_id: str
    kind: str
    image: str
    release_counter: int
    entry: TargetFile | None = None


def _firmware(name: str, version: str, size: int) -> bytes:
    """Deterministic stand-in firmware of ``size`` bytes."""
    seed = f"{name} firmware {version}\n".encode()
    return (seed * (size // len(seed) + 1))[:size]


class Demo:
    """One run of the demonstration, printing to ``out``."""

    def __init__(self, out: TextIO, now: datetime) -> None:
        self.out = out
        self.now = now
        self.limits = Limits.primary()
        self.step_no = 0

    # --- printing ---------------------------------------------------------------------

    def step(self, title: str) -> None:
        self.step_no += 1
        self.out.write(f"[{self.step_no}] {title}\n")

    def line(self, text: str = "") -> None:
        self.out.write(f"    {text}\n" if text else "\n")

    # --- the story --------------------------------------------------------------------

    def build(self) -> None:
        self.step("Generate keys")
        keys = {f"director-{r}": PrivateKey.generate() for r in ROLES}
        keys |= {f"image-{r}": PrivateKey.generate() for r in ROLES}
        keys["supplier-brakes"] = PrivateKey.generate()
        self.keys = keys
        self.line(f"{len(keys)} ed25519 keys: 4 per repository, 1 for the brake supplier")
        self.build_image_repo()
        self.build_director()

    def build_image_repo(self) -> None:
        keys = self.keys
        self.step("Build the Image repository")
        image = RepositoryBuilder(
            "image",
            {r: [keys[f"image-{r}"]] for r in ROLES},
            self.now,
            encodings=(JSON,),
        )
        image.delegate(
            "targets",
            DelegatedRole(
                "acme-brakes", [], 1, terminating=True, paths=["brake/*"], hardware_ids=["brake-v2"]
            ),
            [keys["supplier-brakes"]],
        )
        self.blobs: dict[str, bytes] = {}
        releases = [
            ("brake/fw-1.0.bin", "brake-v2", 1, 40_000, "acme-brakes"),
            ("brake/fw-2.0.bin", "brake-v2", 2, 48_000, "acme-brakes"),
            ("engine/fw-3.1.bin", "engine-v1", 7, 64_000, "targets"),
            ("engine/fw-3.2.bin", "engine-v1", 8, 66_000, "targets"),
        ]
        self.entries: dict[str, TargetFile] = {}
        for path, hw, counter, size, role in releases:
            data = _firmware(path, str(counter), size)
            self.blobs[path] = data
            entry = TargetFile.from_data(
                path, data, ("sha256", "sha512"), hardware_ids=[hw], release_counter=counter
            )
            self.entries[path] = entry
            image.add_target(entry, role)
        image.publish(self.now)
        self.image = image
        self.line("brake/*  signed by supplier role 'acme-brakes' (hardware brake-v2 only)")
        self.line("engine/* signed by the repository's targets key (offline in production)")

        self.ecus = {
            "primary": Ecu("primary", "gateway-v1", "Primary", "gateway/fw-1.0.bin", 1),
            "ecu-brake": Ecu("ecu-brake", "brake-v2", "Secondary", "brake/fw-1.0.bin", 1),
            "ecu-engine": Ecu("ecu-engine", "engine-v1", "Secondary", "engine/fw-3.1.bin", 7),
        }
        for ecu in self.ecus.values():
            ecu.entry = self.entries.get(ecu.image)

    def build_director(self) -> None:
        keys = self.keys
        self.step("Build the Director for one vehicle")
        director = RepositoryBuilder(
            "director",
            {r: [keys[f"director-{r}"]] for r in ROLES},
            self.now,
            vehicle_id=VIN,
            encodings=(JSON,),
        )
        for ecu_id, path in (
            ("ecu-brake", "brake/fw-2.0.bin"),
            ("ecu-engine", "engine/fw-3.2.bin"),
        ):
            self._assign(director, ecu_id, path)
        director.publish(self.now)
        self.director = director
        self.line(f"vehicle {VIN}: a Primary and two Secondaries")
        for e in self.ecus.values():
            self.line(f"  {e.ecu_id:<11} {e.kind:<10} hardware {e.hardware_id}")
        self.line("assigns brake/fw-2.0.bin -> ecu-brake, engine/fw-3.2.bin -> ecu-engine")

    def _assign(self, director: RepositoryBuilder, ecu_id: str, path: str) -> None:
        src = self.entries[path]
        ecu = self.ecus[ecu_id]
        entry = TargetFile(
            path,
            src.length,
            dict(src.hashes),
            hardware_ids=[ecu.hardware_id],
            release_counter=src.release_counter,
            ecu_ids={ecu_id: ecu.hardware_id},
        )
        director.add_target(entry)

    def provision(self) -> None:
        """The Primary's provisioned state (§5.4.1): both roots, the map file, its ECUs."""
        self.vehicle = VehicleContext(
            VIN,
            "primary",
            {e.ecu_id: e.hardware_id for e in self.ecus.values()},
            {e.ecu_id: e.release_counter for e in self.ecus.values()},
        )
        self.director_trust = RepositoryTrust(
            "director",
            self.director.trusted_root(JSON),
            self.limits,
            vehicle_id=VIN,
            ecu_ids=list(self.vehicle.ecus),
        )
        self.image_trust = RepositoryTrust("image", self.image.trusted_root(JSON), self.limits)
        self.map_file = MapFile.default()

    def verify(self) -> list[ApprovedImage]:
        self.vehicle.installed_release_counters = {
            e.ecu_id: e.release_counter for e in self.ecus.values()
        }
        self.vehicle.installed_images = {
            e.ecu_id: e.entry for e in self.ecus.values() if e.entry is not None
        }
        sources = {"director": self.director.source(JSON), "image": self.image.source(JSON)}
        result = full_verification(
            self.director_trust,
            self.image_trust,
            self.map_file,
            sources,
            self.now,
            self.vehicle,
            self.limits,
        )
        return result.images

    def download_and_install(self, approved: ApprovedImage, tamper: bool = False) -> str:
        """Stream the image through the hash check, then switch the ECU to it."""
        data = self.blobs[approved.path]
        if tamper:  # the man in the middle: same length, different bytes
            data = data[: len(data) // 2] + b"\xcc" * (len(data) - len(data) // 2)
        verifier = approved.verifier(self.limits)
        chunk = self.limits.chunk_size // 8
        # drawn in place on a terminal; the final line only, with the hash verdict, otherwise
        bar = progress_bar(
            f"    {approved.ecu_id:<11}", stream=self.out, auto_close=False, timing=False
        )
        try:
            for i in range(0, len(data), chunk):
                verifier.update(data[i : i + chunk])
                bar(verifier.received, approved.length)
            verifier.finish()
        except UptaneError as e:
            bar.close("REFUSED")
            self.line(f"{'':<11} {type(e).__name__} ({e.attack}): {e.message}")
            return f"REFUSED: {type(e).__name__}"
        bar.close("+".join(sorted(approved.hashes)) + " ok")
        ecu = self.ecus[approved.ecu_id]
        ecu.image = approved.path
        ecu.release_counter = approved.release_counter or 0
        ecu.entry = approved.director_target
        return "installed"

    def table(self, before: dict[str, tuple[str, int]], results: dict[str, str]) -> None:
        head = f"    {'ECU':<11} {'before':<25} {'after':<25} result"
        self.out.write(head + "\n")
        self.out.write("    " + "-" * (len(head) - 4 + 12) + "\n")
        for ecu in self.ecus.values():
            b_img, b_rc = before[ecu.ecu_id]
            was = f"{b_img} (r{b_rc})"
            now = f"{ecu.image} (r{ecu.release_counter})"
            res = results.get(ecu.ecu_id, "up to date")
            self.out.write(f"    {ecu.ecu_id:<11} {was:<25} {now:<25} {res}\n")

    def snapshot_state(self) -> dict[str, tuple[str, int]]:
        return {e.ecu_id: (e.image, e.release_counter) for e in self.ecus.values()}

    def run(self) -> int:
        self.out.write("Uptane in-process demo: one process, no network, JSON metadata.\n\n")
        self.build()
        self.provision()

        self.step("Full verification, Director + Image repository")
        approved = self.verify()
        self.line("root, timestamp, snapshot, targets of both; the brake supplier's delegation")
        self.line(f"{len(approved)} images approved (map file: both repositories must agree)")
        for a in approved:
            self.line(f"{a.ecu_id:<11} {a.path:<18} r{a.release_counter}  Director = Image repo")

        self.step("Download, check every hash, install")
        before = self.snapshot_state()
        results = {a.ecu_id: self.download_and_install(a) for a in approved}
        self.out.write("\n")
        self.table(before, results)
        self.out.write("\n")

        self.step("Attack: man in the middle swaps image bytes")
        # a fresh release so there is something new: the brake supplier ships 3.0
        data = _firmware("brake/fw-3.0.bin", "3", 50_000)
        self.blobs["brake/fw-3.0.bin"] = data
        entry = TargetFile.from_data(
            "brake/fw-3.0.bin",
            data,
            ("sha256", "sha512"),
            hardware_ids=["brake-v2"],
            release_counter=3,
        )
        self.entries[entry.path] = entry
        self.image.add_target(entry, "acme-brakes")
        self.image.publish(self.now)
        self.director.clear_targets()
        self._assign(self.director, "ecu-brake", "brake/fw-3.0.bin")
        self.director.publish(self.now)
        self.line("brake/fw-3.0.bin released; on the way to the car an attacker rewrites it")
        approved = self.verify()
        before = self.snapshot_state()
        results = {a.ecu_id: self.download_and_install(a, tamper=True) for a in approved}
        self.out.write("\n")
        self.table(before, results)
        brake = self.ecus["ecu-brake"]
        ok = brake.image == before["ecu-brake"][0] and all(
            r.startswith("REFUSED") for r in results.values()
        )
        self.out.write("\n")
        self.line(f"ecu-brake keeps {brake.image}: the swapped image was never installed.")
        self.out.write("\n")
        ok = self.compromised_director() and ok
        self.out.write("\nDone.\n")
        return 0 if ok else 1

    def compromised_director(self) -> bool:
        """A stolen Director key alone cannot install anything the Image repository does
        not vouch for: full verification refuses before a byte is downloaded."""
        self.step("Attack: a stolen Director key assigns the attacker's firmware")
        evil = _firmware("brake/fw-9.9.bin", "evil", 30_000)
        self.blobs["brake/fw-9.9.bin"] = evil
        self.entries["brake/fw-9.9.bin"] = TargetFile.from_data(
            "brake/fw-9.9.bin", evil, ("sha256", "sha512"), release_counter=99
        )
        self.director.clear_targets()
        self._assign(self.director, "ecu-brake", "brake/fw-9.9.bin")
        self.director.publish(self.now)
        self.line("the Director's metadata is validly signed and names brake/fw-9.9.bin")
        before = self.snapshot_state()
        try:
            self.verify()
        except UptaneError as e:
            self.line(f"full verification: {type(e).__name__} ({e.attack})")
            self.line(f"  {e.message}")
            self.line("nothing downloaded; ecu-brake keeps " + self.ecus["ecu-brake"].image)
            return self.snapshot_state() == before
        self.line("NOT refused")
        return False


def main(out: TextIO | None = None) -> int:
    """Run the demo; returns the process exit code."""
    stream = out or sys.stdout
    try:
        return Demo(stream, datetime.now(UTC).replace(microsecond=0)).run()
    except UptaneError as e:
        stream.write(f"\nunexpected refusal: {e}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The Primary's update cycle (Uptane §5.4.2), in the Standard's order.

:class:`Primary` ``.run_cycle()`` does one cycle:

1. collect a signed version report from every Secondary with a fresh nonce (an
   unreachable one is named in the manifest and skipped for the rest of the cycle), add
   the Primary's own report, sign the vehicle version manifest and upload it;
2. load the time from the :class:`~primary.timesource.TimeSource`;
3. full verification of the Director and the Image repository
   (:func:`uptane.verify.full_verification` over :class:`~primary.fetcher.HttpMetadataSource`);
4. download every approved image (free-space check, at most its length, every hash, a
   ``.part`` file resumed next cycle); nothing goes to any ECU until every image of the
   bundle is here (§4.3 partial bundle);
5. for each Secondary: the time, the metadata it needs (partial: Director root updates and
   targets in DER; full: everything), then the image, resumed from what it acknowledged;
6. install the Primary's own image through :class:`hardware.slots.SlotManager`, the
   same slot interface as the Secondaries (imported lazily, only when there is one);
7. collect the results: the next manifest carries them, and the attacks seen here.

Every step that changes something is recorded in :class:`~primary.state.PrimaryState`
before the next begins, so a ``kill -9`` at any point is recovered by the next cycle: an
image already downloaded is not fetched again, a Secondary that already holds or runs its
image is not sent or installed again (its status is asked first).

No verification logic lives here: every decision is :mod:`uptane`'s.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import urllib3

from hardware.flash import PowerCut, PowerLoss
from primary.config import DIRECTOR, IMAGE, PrimaryConfig, SecondaryConfig
from primary.fetcher import Fetcher, HttpMetadataSource, file_holds, target_url
from primary.secondaries import (
    MetadataFile,
    SecondaryPort,
    is_unreachable,
    status_has,
    transfer_of,
)
from primary.state import CycleRecord, Pending, PrimaryState
from primary.timesource import SystemTime, TimeSource
from uptane.errors import (
    DropRequestAttack,
    FetchError,
    InsufficientSpace,
    LinkTimeout,
    UptaneError,
)
from uptane.keys import PrivateKey
from uptane.limits import Limits
from uptane.manifest import (
    EcuVersionReport,
    InstalledImage,
    SignedManifest,
    build_vehicle_manifest,
    check_report,
    decode_report,
)
from uptane.metadata import DER, JSON, TargetFile
from uptane.trust import RepositoryTrust
from uptane.verify import NO_NEW_TARGETS, ImageVerifier, VehicleContext, full_verification

#: environment variable naming a step at which the process kills itself with SIGKILL
#: (crash tests only: it is how the tests cut the power at every step)
CRASH_ENV = "UPTANE_PRIMARY_CRASH_AT"

#: an empty installed image (an ECU that runs nothing the Director knows yet)
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

Say = Callable[[str], None]

#: how many times one image is offered to an ECU that refuses it (its reports say why)
MAX_REFUSALS = 3


def _crash_point(step: str) -> None:
    if os.environ.get(CRASH_ENV) == step:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class CycleResult:
    """What one cycle did, for the CLI and tests."""

    manifest_sent: bool = False
    manifest_error: str | None = None
    unreachable: list[str] = field(default_factory=list)
    verified: bool = False
    stopped_early: str | None = None
    error: UptaneError | None = None
    downloaded: list[str] = field(default_factory=list)
    installed: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    attacks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed


class Primary:
    """The Primary agent: configuration, state, transports and one :meth:`run_cycle`."""

    def __init__(
        self,
        config: PrimaryConfig,
        *,
        time_source: TimeSource | None = None,
        fetcher: Fetcher | None = None,
        say: Say | None = None,
        progress_step: int = 25,
        fault: PowerCut | None = None,
    ) -> None:
        """``fault`` (tests only) cuts the Primary's power at one write point: one
        :class:`hardware.flash.PowerCut` shared by its state stores, image downloads and own
        flash; :class:`hardware.flash.PowerLoss` then leaves :meth:`run_cycle`."""
        self.config = config
        self.fault = fault
        self.limits: Limits = config.limits
        self.time = time_source or SystemTime()
        fc = config.fetcher
        self.fetcher = fetcher or Fetcher(
            self.limits,
            connect_timeout=fc.connect_timeout,
            read_timeout=fc.read_timeout,
            retries=fc.retries,
            backoff=fc.backoff,
            min_bytes_per_second=fc.min_bytes_per_second,
            speed_window=fc.speed_window,
        )
        self.state = PrimaryState(config.storage_dir, self.limits, fault=fault)
        self.say: Say = say or (lambda msg: None)
        self.progress_step = progress_step
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=fc.connect_timeout, read=fc.read_timeout),
            retries=False,
        )
        self._key: PrivateKey | None = None

    # --- helpers ------------------------------------------------------------------------

    @property
    def key(self) -> PrivateKey:
        if self._key is None:
            self._key = PrivateKey.from_pem(self.config.key_file.read_bytes())
        return self._key

    def _progress(self, what: str, step: str) -> Callable[[int, int], None]:
        shown = [-1]

        def cb(done: int, total: int) -> None:
            if 0 < done < total:
                _crash_point(f"{step}-progress")
            pct = 100 if total == 0 else done * 100 // total
            mark = pct - pct % self.progress_step
            if mark > shown[0]:
                shown[0] = mark
                self.say(f"  {what}: {pct:3d}% ({done}/{total} bytes)")

        return cb

    def _record_attack(
        self, record: CycleRecord, result: CycleResult, error: UptaneError, where: str
    ) -> None:
        entry = {
            "where": where,
            "code": error.code,
            "attack": error.attack,
            "message": str(error)[:300],
        }
        record.attacks.append(entry)
        del record.attacks[:-16]  # bounded
        result.attacks.append(entry)

    def load_trust(self) -> tuple[RepositoryTrust, RepositoryTrust]:
        """Both repositories' trusted state, re-verified from the stored files."""
        cfg = self.config
        director = RepositoryTrust.load(
            DIRECTOR,
            self.state.read_metadata(DIRECTOR),
            self.limits,
            director=True,
            vehicle_id=cfg.vin,
            ecu_ids=cfg.ecus,
        )
        image = RepositoryTrust.load(IMAGE, self.state.read_metadata(IMAGE), self.limits)
        return director, image

    # --- the cycle ------------------------------------------------------------------------

    def run_cycle(self) -> CycleResult:
        """One update cycle (§5.4.2); never raises for a network, link or attack failure:
        those are in the result and in the state's ``last_error`` and ``attacks``."""
        cfg = self.config
        result = CycleResult()
        try:
            record = self.state.load_cycle()
        except UptaneError as e:
            # a damaged record (a disk fault: writes are atomic) must not stop the vehicle
            # for good: start afresh; the ECUs' reports and the Director rebuild it
            self.say(f"the stored cycle record is unusable, starting afresh: {e}")
            record = CycleRecord(last_error=str(e)[:500])
        ports = {s.serial: SecondaryPort(s, self.limits) for s in cfg.secondaries}
        try:
            self._cycle(record, result, ports)
        except PowerLoss:  # a test's power cut: the Primary is off, nothing more happens
            raise
        except UptaneError as e:  # from storage or a peer, outside the steps' own handling
            result.error = result.error or e
            self.say(f"cycle stopped: {e}")
        except Exception as e:  # an unattended agent keeps going; status shows the error
            result.error = UptaneError(f"unexpected {type(e).__name__}: {e}")
            self.say(f"cycle stopped by an unexpected error: {type(e).__name__}: {e}")
        finally:
            for p in ports.values():
                p.close()
        record.cycles += 1
        record.last_cycle = self.time.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        record.last_error = None if result.error is None else str(result.error)[:500]
        self.state.save_cycle(record)
        return result

    def _cycle(
        self, record: CycleRecord, result: CycleResult, ports: dict[str, SecondaryPort]
    ) -> None:
        cfg = self.config
        # §5.4.2 step 1: version reports and the vehicle version manifest
        reports = self._collect_reports(record, result, ports)
        self._send_manifest(record, result, reports)
        _crash_point("manifest")

        # §5.4.2 step 2: the time
        now = self.time.now()

        # §5.4.2 step 3: full verification of both repositories
        try:
            director, image = self._verify(record, result, now)
        except UptaneError as e:
            result.error = e
            if not _transport_failure(e):
                self._record_attack(record, result, e, "full verification")
            self.say(f"verification failed: {e}")
            self.state.save_cycle(record)
            return
        _crash_point("verified")

        # §5.4.2 step 4: images
        self._download(record, result)
        _crash_point("downloaded")
        missing = sorted(p.target.path for p in record.pending.values() if p.step == "approved")
        if missing:
            # §4.3 partial bundle: no ECU gets its image until every image of the bundle
            # is here (the next cycle resumes the rest)
            self.say(f"bundle incomplete, nothing sent: waiting for {', '.join(missing)}")
            self.state.save_cycle(record)
            return

        # §5.4.2 steps 5–6: Secondaries, then the Primary itself
        trusts = {DIRECTOR: director, IMAGE: image}
        cache: dict[tuple[str, str], list[MetadataFile]] = {}
        for ecu_id, pending in sorted(record.pending.items()):
            if ecu_id == cfg.ecu_serial:
                continue
            if ecu_id in result.unreachable:
                self.say(f"{ecu_id}: unreachable this cycle, its update waits")
                continue
            self._deliver(record, result, ports[ecu_id], pending, trusts, cache, now)
        own = record.pending.get(cfg.ecu_serial)
        if own is not None:
            self._install_own(record, result, own)

        # §5.4.2 step 7: results; keep only the images still needed
        self.state.prune_images([p.target for p in record.pending.values()])
        self.state.save_cycle(record)
        self._results(record, result, ports)
        for ecu_id, path in sorted(result.installed.items()):
            self.say(f"{ecu_id}: installed {path}")
        if not record.pending:
            self.say("nothing pending")

    def _results(
        self, record: CycleRecord, result: CycleResult, ports: dict[str, SecondaryPort]
    ) -> None:
        """Each Secondary that installed or refused an image this cycle returns a signed
        report of what it runs now (checked like the manifest's); the next manifest asks
        again with its own nonce."""
        for ecu_id in sorted(set(result.installed) | set(result.failed)):
            port = ports.get(ecu_id)
            if port is None:
                continue
            nonce = secrets.token_bytes(16)
            try:
                raw = port.report(nonce)
                signed = decode_report(raw, self.limits, JSON if raw[:1] == b"{" else DER)
                body = check_report(
                    signed, port.cfg.public_key, expected_ecu_id=ecu_id, expected_nonce=nonce
                )
            except UptaneError as e:
                self.say(f"{ecu_id}: no report returned ({e})")
                continue
            self._note_installed(record, ecu_id, body)
            record.results.setdefault(ecu_id, {})["reported"] = body.installed.filename
            self.say(
                f"{ecu_id}: report returned (runs {body.installed.filename or 'nothing'}"
                + (f"; attack indicator: {body.attack}" if body.attack else "")
                + ")"
            )
        self.state.save_cycle(record)

    # --- step 1 -----------------------------------------------------------------------------

    def _collect_reports(
        self, record: CycleRecord, result: CycleResult, ports: dict[str, SecondaryPort]
    ) -> list[SignedManifest[EcuVersionReport]]:
        """A fresh-nonce report from every Secondary (the time is sent first, so the
        report's time is current), checked against the ECU's configured key."""
        reports: list[SignedManifest[EcuVersionReport]] = []
        now_s = int(self.time.now().timestamp())
        for serial, port in ports.items():
            nonce = secrets.token_bytes(16)
            try:
                port.put_time(now_s)
                raw = port.report(nonce)
                enc = JSON if raw[:1] == b"{" else DER
                signed = decode_report(raw, self.limits, enc)
                check_report(
                    signed, port.cfg.public_key, expected_ecu_id=serial, expected_nonce=nonce
                )
            except UptaneError as e:
                if is_unreachable(e):
                    result.unreachable.append(serial)
                    record.results[serial] = {
                        "outcome": "unreachable",
                        "reason": str(e)[:200],
                        **self._sending_entry(record, serial),
                    }
                    self.say(f"{serial}: unreachable ({e.message})")
                else:
                    self._record_attack(record, result, e, f"report of {serial}")
                    self.say(f"{serial}: report refused ({e})")
                continue
            reports.append(signed)
            body = signed.signed
            self._note_installed(record, serial, body)
            self.say(
                f"{serial}: report received (runs {body.installed.filename or 'nothing'}"
                + (f"; attack indicator: {body.attack}" if body.attack else "")
                + ")"
            )
        return reports

    @staticmethod
    def _note_installed(record: CycleRecord, serial: str, body: EcuVersionReport) -> None:
        """What the ECU's signed report says it runs is what it runs."""
        img = body.installed
        if not img.filename:
            record.installed.pop(serial, None)
            return
        reported = TargetFile(img.filename, img.length, dict(img.hashes))
        reported.release_counter = body.release_counter
        if not _same_image(record.installed.get(serial), reported):
            record.installed[serial] = reported

    def _own_slots(self) -> Any:
        from hardware.flash import Flash
        from hardware.slots import SlotManager

        assert self.config.flash_dir is not None
        flash = Flash(self.config.flash_dir, self.config.slot_size, fault=self.fault)
        return SlotManager(flash, limits=self.limits)

    def _own_report(self, record: CycleRecord, encoding: str) -> SignedManifest[EcuVersionReport]:
        cfg = self.config
        if cfg.flash_dir is not None:
            # what the Primary's own boot record says it runs is what it runs
            info = self._own_slots().status().installed
            if info is None:
                record.installed.pop(cfg.ecu_serial, None)
            elif not _same_image(record.installed.get(cfg.ecu_serial), info.to_target()):
                record.installed[cfg.ecu_serial] = info.to_target()
        target = record.installed.get(cfg.ecu_serial)
        if target is not None:
            installed = InstalledImage.from_target(target)
            counter = target.release_counter
        else:
            installed = InstalledImage("", 0, {"sha256": EMPTY_SHA256})
            counter = None
        attack = None
        if record.attacks:
            last = record.attacks[-1]
            more = f" (+{len(record.attacks) - 1} more)" if len(record.attacks) > 1 else ""
            attack = (f"{last['attack']}: {last['where']}: {last['message']}"[:900]) + more
        report = SignedManifest(
            EcuVersionReport(
                cfg.ecu_serial,
                installed,
                self.time.now().replace(microsecond=0),
                nonce=secrets.token_bytes(16),
                release_counter=counter,
                attack=attack,
            ),
            encoding=encoding,
        )
        report.sign(self.key)
        return report

    def build_manifest(
        self,
        record: CycleRecord,
        result: CycleResult,
        reports: list[SignedManifest[EcuVersionReport]],
    ) -> tuple[bytes, str]:
        """The signed vehicle version manifest and its encoding: every Secondary's report
        as it was signed (the manifest takes the encoding of the first one, JSON if none),
        the Primary's own report, and an attack indicator naming the attacks the Primary
        saw and the Secondaries that did not answer (drop-request)."""
        cfg = self.config
        encoding = reports[0].encoding if reports else JSON
        kept = []
        for r in reports:
            if r.encoding == encoding:
                kept.append(r)
            else:
                self.say(
                    f"{r.signed.ecu_id}: report in {r.encoding}, manifest in {encoding}: left out"
                )
        kept.append(self._own_report(record, encoding))
        notes = [f"{a['attack']}: {a['where']}" for a in record.attacks]
        notes += [f"drop-request: ECU {e} unreachable" for e in result.unreachable]
        attack = "; ".join(notes)[:900] if notes else None
        vvm = build_vehicle_manifest(
            cfg.vin, cfg.ecu_serial, kept, self.key, encoding=encoding, attack=attack
        )
        return vvm.to_bytes(encoding), encoding

    def _send_manifest(
        self,
        record: CycleRecord,
        result: CycleResult,
        reports: list[SignedManifest[EcuVersionReport]],
    ) -> None:
        body, encoding = self.build_manifest(record, result, reports)
        url = self.config.manifest_url
        ctype = "application/json" if encoding == JSON else "application/octet-stream"
        try:
            resp = self._http.request(
                "POST",
                url,
                body=body,
                headers={"Content-Type": ctype},
                preload_content=False,
                redirect=False,
            )
            try:
                answer = resp.read(4096)
            finally:
                resp.release_conn()
        except Exception as e:  # transport failure: the cycle goes on with the metadata
            result.manifest_error = f"{url}: {e}"
            self.say(f"manifest not sent: {e}")
            return
        if 200 <= resp.status < 300:
            result.manifest_sent = True
            record.attacks.clear()  # reported: the Director has them now
            self.state.save_cycle(record)
            self.say(f"manifest sent ({len(reports) + 1} ECU reports, {encoding})")
        else:
            result.manifest_error = f"HTTP {resp.status}: {answer[:300].decode('utf-8', 'replace')}"
            self.say(f"manifest refused by the Director: {result.manifest_error}")

    # --- step 3 -----------------------------------------------------------------------------

    def _verify(
        self, record: CycleRecord, result: CycleResult, now: datetime
    ) -> tuple[RepositoryTrust, RepositoryTrust]:
        cfg = self.config
        director, image = self.load_trust()
        sources = {
            DIRECTOR: HttpMetadataSource(
                self.fetcher, cfg.director_metadata_url, JSON, repository=DIRECTOR
            ),
            IMAGE: HttpMetadataSource(self.fetcher, cfg.image_metadata_url, JSON, repository=IMAGE),
        }
        vehicle = VehicleContext(
            cfg.vin,
            cfg.ecu_serial,
            cfg.ecus,
            installed_release_counters={
                e: t.release_counter
                for e, t in record.installed.items()
                if t.release_counter is not None
            },
            installed_images=dict(record.installed),
        )
        fv = full_verification(
            director, image, cfg.load_map_file(), sources, now, vehicle, self.limits
        )
        result.verified = True
        result.stopped_early = fv.stopped_early
        dv = director.targets.signed.version if director.targets else 0
        d_state, i_state = director.state(), image.state()
        self.say(
            f"Director metadata verified (root v{d_state['root']}, targets v{d_state['targets']})"
            + (f"; {fv.stopped_early}" if fv.stopped_early else "")
        )
        if fv.image is not None:
            self.say(
                f"Image repository metadata verified (root v{i_state['root']}, "
                f"targets v{i_state['targets']})"
            )

        if fv.director.stopped_early is None and fv.stopped_early == NO_NEW_TARGETS:
            # every image the Director lists is installed already (§5.4.4.2 step 6)
            record.pending.clear()
        elif fv.stopped_early is None:
            consistent = image.root.signed.consistent_snapshot
            fresh: dict[str, Pending] = {}
            for a in fv.images:
                old = record.pending.get(a.ecu_id)
                if old is not None and _same_image(old.target, a.director_target):
                    old.director_version = dv
                    fresh[a.ecu_id] = old
                    continue
                if _same_image(record.installed.get(a.ecu_id), a.director_target):
                    continue
                refused = record.results.get(a.ecu_id, {})
                if (
                    refused.get("outcome") == "failed"
                    and refused.get("image") == _image_key(a.director_target)
                    and refused.get("refusals", 0) >= MAX_REFUSALS
                ):
                    self.say(
                        f"{a.ecu_id}: refused {a.path} {refused['refusals']} times; "
                        "waiting for the Director to change its assignment"
                    )
                    continue
                p = Pending(a.ecu_id, a.director_target, "approved", dv)
                p.url = self._image_url(a.director_target, a.image_target, consistent)
                fresh[a.ecu_id] = p
                self.say(f"{a.ecu_id}: {a.path} approved ({a.length} bytes)")
            record.pending = fresh
        else:
            # the Director's targets did not change (its refresh stopped early: "timestamp
            # unchanged" or "no new targets"): pending work from that same targets version
            # stays valid, and was just found fresh by the refresh
            record.pending = {e: p for e, p in record.pending.items() if p.director_version == dv}
        # Only now, with every check passed, does the new metadata become trusted state. The
        # work it approves is recorded first: a crash between the writes below leaves an
        # early stop ("timestamp unchanged") next cycle, which keeps that work.
        self.state.save_cycle(record)
        _crash_point("approved")
        self.state.write_metadata(DIRECTOR, director.raw)
        _crash_point("director-saved")
        self.state.write_metadata(IMAGE, image.raw)
        return director, image

    def _image_url(self, d: TargetFile, i: TargetFile | None, consistent: bool) -> str:
        if d.url:
            return d.url
        entry = i if i is not None else d
        prefix = next(iter(entry.hashes.values())) if consistent else None
        return target_url(self.config.image_targets_url, d.path, prefix)

    # --- step 4 -----------------------------------------------------------------------------

    def _download(self, record: CycleRecord, result: CycleResult) -> None:
        for ecu_id, p in sorted(record.pending.items()):
            if p.step != "approved":
                continue
            dest = self.state.image_path(p.target)
            if self._have_image(p.target, dest):
                p.step = "downloaded"
                self.state.save_cycle(record)
                continue
            self.say(f"downloading {p.target.path} for {ecu_id} ({p.target.length} bytes)")
            try:
                self.fetcher.download_to(
                    p.url or "",
                    dest,
                    p.target.length,
                    ImageVerifier(p.target, self.limits),
                    progress=self._progress(f"download {p.target.path}", "download"),
                    fault=self.fault,
                )
            except UptaneError as e:
                p.attempts += 1
                if not _transport_failure(e):
                    self._record_attack(record, result, e, f"download of {p.target.path}")
                result.error = result.error or e
                self.say(f"download of {p.target.path} stopped: {e}")
                self.state.save_cycle(record)
                continue
            p.step = "downloaded"
            result.downloaded.append(p.target.path)
            self.state.save_cycle(record)
            self.say(f"downloaded {p.target.path}: length and every hash verified")

    def _have_image(self, target: TargetFile, path: Path) -> bool:
        """Whether ``path`` holds exactly ``target`` (a download finished before a crash)."""
        return file_holds(target, path, self.limits)

    # --- step 5 -----------------------------------------------------------------------------

    def _metadata_for(
        self,
        cfg: SecondaryConfig,
        trusts: dict[str, RepositoryTrust],
        cache: dict[tuple[str, str], list[MetadataFile]],
    ) -> list[MetadataFile]:
        """The metadata a Secondary needs, in the encoding it reads (§5.4.2 step 6):

        - partial: the Director's root versions after the first (key rotation) and its
          targets;
        - full: the map file, then for the Image repository and then the Director the
          root versions after the first, timestamp, snapshot, every delegated role the
          Primary resolved and targets.

        The Director's targets comes last: its arrival starts the Secondary's verification.

        JSON files are the verified ones. DER files are fetched once at the versions the
        verified JSON names; the Director's DER targets is checked here (signatures of the
        trusted targets keys, same version), everything else is verified by the full-
        verification Secondary itself."""
        key = (cfg.mode, cfg.encoding)
        if key not in cache:
            # the Director's targets goes last: its arrival starts the Secondary's check
            repos = (DIRECTOR,) if cfg.mode == "partial" else (IMAGE, DIRECTOR)
            files: list[MetadataFile] = []
            if cfg.mode == "full":
                files.append(
                    MetadataFile("map", "map", JSON, self.config.load_map_file().to_json())
                )
            for repo in repos:
                trust = trusts[repo]
                files += self._roots(trust, cfg.encoding)
                roles = ["targets"] if cfg.mode == "partial" else self._roles(trust)
                for role in roles:
                    files.append(self._role_file(trust, role, cfg.encoding))
            cache[key] = files
        return cache[key]

    @staticmethod
    def _roles(trust: RepositoryTrust) -> list[str]:
        top = [r for r in ("timestamp", "snapshot") if r in trust.raw]
        return top + sorted(trust.delegated) + ["targets"]

    def _roots(self, trust: RepositoryTrust, encoding: str) -> list[MetadataFile]:
        out = []
        for v in range(2, trust.root.signed.version + 1):
            if encoding == JSON and v == trust.root.signed.version:
                data: bytes | None = trust.raw["root"]
            else:
                data = self._fetch_forward(trust, "root", v, encoding)
            assert data is not None
            out.append(MetadataFile(trust.name, "root", encoding, data))
        return out

    def _role_file(self, trust: RepositoryTrust, role: str, encoding: str) -> MetadataFile:
        if encoding == JSON:
            return MetadataFile(trust.name, role, JSON, trust.raw[role])
        md = trust.targets if role == "targets" else getattr(trust, role, None)
        if md is None:
            md = trust.delegated[role]
        version = md.signed.version
        consistent = trust.root.signed.consistent_snapshot and role != "timestamp"
        check = None
        if trust.is_director and role == "targets":

            def check(data: bytes) -> None:
                # the forwarded encoding must be the verified targets (a partial
                # Secondary checks it again)
                trust.verify_targets_encoding(data, encoding, self.time.now())

        data = self._fetch_forward(
            trust, role, version if consistent else None, encoding, version, check=check
        )
        return MetadataFile(trust.name, role, encoding, data)

    def _fetch_forward(
        self,
        trust: RepositoryTrust,
        role: str,
        version: int | None,
        encoding: str,
        label: int | None = None,
        *,
        check: Callable[[bytes], None] | None = None,
    ) -> bytes:
        """A file to forward, from the forward store or fetched once, checked by ``check``
        and then stored."""
        name = f"{trust.name}.{role}.{version if version is not None else label}.{encoding}"
        data = self.state.read_forward(name)
        if data is not None:
            return data
        base = (
            self.config.director_metadata_url
            if trust.name == DIRECTOR
            else self.config.image_metadata_url
        )
        source = HttpMetadataSource(self.fetcher, base, encoding, repository=trust.name)
        data = source.fetch_metadata(role, version, self.limits.bytes_for_role(role))
        if data is None:
            raise FetchError(
                f"{role} v{version or label} in {encoding} not found",
                repository=trust.name,
                role=role,
            )
        if check is not None:
            check(data)
        if role != "timestamp":
            self.state.write_forward(name, data)
        return data

    def _deliver(
        self,
        record: CycleRecord,
        result: CycleResult,
        port: SecondaryPort,
        p: Pending,
        trusts: dict[str, RepositoryTrust],
        cache: dict[tuple[str, str], list[MetadataFile]],
        now: datetime,
    ) -> None:
        ecu_id, path = p.ecu_id, p.target.path
        if p.step == "approved":
            return  # not downloaded yet
        try:
            files = self._metadata_for(port.cfg, trusts, cache)
        except UptaneError as e:
            # the repository did not give what the Secondary needs: retry next cycle
            result.error = result.error or e
            if not _transport_failure(e):
                self._record_attack(record, result, e, f"metadata for {ecu_id}")
            self.say(f"{ecu_id}: metadata to forward unavailable: {e}")
            return
        try:
            # idempotence: ask first, so a restart never sends or installs twice
            status = port.status()
            if status_has(status, path):
                self.say(f"{ecu_id}: already has {path}")
                self._installed(record, result, p)
                return
            held = transfer_of(status, path, p.target.length)
            resume = self._sending(record, ecu_id) == _image_key(p.target)
            if held and not resume:
                # STATUS names only the file and its length: a partial of another image
                # under the same name (the Director changed the content, or this Primary
                # has no record of sending it) is not continued: the metadata goes again
                # and the image restarts at byte 0
                self.say(f"{ecu_id}: its partial {path} is of another image: starting again")
                held = 0
            if held:
                # the Secondary still holds the verified metadata and part of the image (a
                # dropped link): resending metadata would restart it, so only continue
                self.say(f"{ecu_id}: continuing the transfer at byte {held}")
                port.put_time(int(now.timestamp()))
            else:
                self.say(f"{ecu_id}: sending time and {len(files)} metadata file(s)")
                port.send_metadata(int(now.timestamp()), files)
            if held < p.target.length:
                # remember which image this transfer is before any byte of it goes, so that
                # a later cycle resumes only this very image (path, length and hashes)
                self._set_sending(record, ecu_id, _image_key(p.target))
                start = port.send_image(
                    self.state.image_path(p.target),
                    path,
                    p.target.length,
                    progress=self._progress(f"send {path} to {ecu_id}", "send"),
                    resume=resume,
                )
                if start:
                    self.say(f"{ecu_id}: resumed the image transfer at byte {start}")
            p.step = "sent"
            self.state.save_cycle(record)
            _crash_point("sent")
            port.install(path)
            _crash_point("install-answered")
        except UptaneError as e:
            if is_unreachable(e):
                result.unreachable.append(ecu_id)
                record.results[ecu_id] = {
                    "outcome": "unreachable",
                    "reason": str(e)[:200],
                    **self._sending_entry(record, ecu_id),
                }
                self.say(f"{ecu_id}: unreachable ({e.message}); will retry next cycle")
                self.state.save_cycle(record)
                return
            self._failed(record, result, p, e)
            return
        # INSTALL answered without an error: the image is in the Secondary's new slot
        self._installed(record, result, p)

    @staticmethod
    def _sending(record: CycleRecord, ecu_id: str) -> str | None:
        """The image key (:func:`_image_key`) of the last image transfer this Primary
        started to ``ecu_id`` (kept in the cycle record's ``results``), or None."""
        key = record.results.get(ecu_id, {}).get("sending")
        return key if isinstance(key, str) else None

    def _sending_entry(self, record: CycleRecord, ecu_id: str) -> dict[str, str]:
        key = self._sending(record, ecu_id)
        return {"sending": key} if key is not None else {}

    def _set_sending(self, record: CycleRecord, ecu_id: str, key: str) -> None:
        entry = record.results.setdefault(ecu_id, {})
        entry.setdefault("outcome", "sending")
        if entry.get("sending") != key:
            entry["sending"] = key
            self.state.save_cycle(record)

    def _installed(self, record: CycleRecord, result: CycleResult, p: Pending) -> None:
        record.installed[p.ecu_id] = p.target
        record.pending.pop(p.ecu_id, None)
        record.results[p.ecu_id] = {"outcome": "installed", "filename": p.target.path}
        result.installed[p.ecu_id] = p.target.path
        self.state.save_cycle(record)
        _crash_point("installed")

    def _failed(self, record: CycleRecord, result: CycleResult, p: Pending, e: UptaneError) -> None:
        """A Secondary refused the image or its metadata: that is its verdict (its next
        report carries the attack indicator). The update is dropped; the same image is
        offered again at most ``MAX_REFUSALS`` times in all, not on every cycle forever."""
        record.pending.pop(p.ecu_id, None)
        key = _image_key(p.target)
        before = record.results.get(p.ecu_id, {})
        refusals = before.get("refusals", 0) if before.get("image") == key else 0
        record.results[p.ecu_id] = {
            "outcome": "failed",
            "filename": p.target.path,
            "image": key,
            "refusals": refusals + 1,
            "code": e.code,
            "attack": e.attack,
            "reason": str(e)[:200],
            # a refused transfer may stay resumable (a slow-retrieval refusal keeps the
            # partial): what it was is still known
            **self._sending_entry(record, p.ecu_id),
        }
        result.failed[p.ecu_id] = str(e)
        self.state.save_cycle(record)
        self.say(f"{p.ecu_id}: refused {p.target.path}: {e}")

    # --- step 6 -----------------------------------------------------------------------------

    def _install_own(self, record: CycleRecord, result: CycleResult, p: Pending) -> None:
        cfg = self.config
        if p.step == "approved":
            return
        if cfg.flash_dir is None:
            self._failed(record, result, p, UptaneError("this Primary has no slots configured"))
            return
        try:
            slots = self._own_slots()
            slots.boot()
            st = slots.status()
            if p.target.same_image(st.installed):
                self._installed(record, result, p)
                return
            self.say(
                f"{cfg.ecu_serial}: installing {p.target.path} into slot {slots.inactive_slot()}"
            )
            writer = slots.begin_install(p.target.length, p.target)
            verifier = ImageVerifier(p.target, self.limits)
            with self.state.image_path(p.target).open("rb") as f:
                while chunk := f.read(self.limits.chunk_size):
                    verifier.update(chunk)
                    writer.write(chunk)
            slots.finish_install(writer, verifier)
            # the simulated reboot into the new slot, confirmed once it runs
            slots.boot()
            slots.confirm()
        except UptaneError as e:
            self._failed(record, result, p, e)
            return
        self._installed(record, result, p)


def _transport_failure(e: UptaneError) -> bool:
    """A repository that could not be reached or answered unusably (an outage looks the
    same as a drop-request attack): kept as the last error and retried, but not reported
    as an attack, so that a backend outage does not fail the vehicle's updates. Slow
    retrieval is reported (§5.4)."""
    return isinstance(e, (FetchError, InsufficientSpace, DropRequestAttack)) and not isinstance(
        e, LinkTimeout
    )


def _image_key(t: TargetFile) -> str:
    """One string naming an image: its path, length and hashes."""
    hashes = ",".join(f"{k}:{v.lower()}" for k, v in sorted(t.hashes.items()))
    return f"{t.path}|{t.length}|{hashes}"


def _same_image(a: TargetFile | None, b: TargetFile | None) -> bool:
    if a is None or b is None:
        return False
    ha = {k: v.lower() for k, v in a.hashes.items()}
    hb = {k: v.lower() for k, v in b.hashes.items()}
    return a.path == b.path and a.length == b.length and ha == hb


__all__ = ["CRASH_ENV", "CycleResult", "Primary"]

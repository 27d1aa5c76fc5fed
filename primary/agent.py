"""The Primary's update cycle (Uptane §5.4.2), in the Standard's order.

:class:`Primary` ``.run_cycle()`` runs one cycle as a straight line of stages, each one
call into the next module:

    manifest -> verify -> download -> deliver -> report

0. :meth:`primary.timekeeping.Timekeeper.sync`: the cycle's time (step 2), verified from
   the OEM's time servers when ``[time]`` is configured, and each Secondary's clock set
   from a token it checks itself (step 5, first, so that every report carries fresh
   verified time); without ``[time]``, the :class:`~primary.timesource.TimeSource`'s,
   unsigned;
1. :func:`primary.manifest.send_manifest`: a signed version report from every Secondary
   with a fresh nonce (one without a report is represented in the manifest by an
   ``unreachable_ecus`` entry, and an unreachable one is skipped for the rest of the
   cycle), the Primary's own report, the signed vehicle version manifest, uploaded (a
   refused or failed upload is the cycle's error, after any a later stage finds);
2. :func:`primary.verify.verify`: full verification of the Director and the Image
   repository through the core, and the pending updates it approves (step 3);
3. :func:`primary.download.download`: every approved image, bounded, hash-checked,
   resumable; nothing goes to any ECU until the whole bundle is here (step 4, §4.3);
4. :func:`primary.deliver.deliver`: metadata and image to each Secondary over its link,
   INSTALL, and the Primary's own image into its own slots (steps 5-6);
5. :func:`primary.manifest.collect_results`: the signed reports the ECUs return (step 7;
   the next manifest carries them, and the attacks seen here).

Each pending update moves through the table in :mod:`primary.lifecycle`; every move is
recorded in :class:`~primary.state.PrimaryState` before the next begins, so a ``kill -9``
at any point is recovered by the next cycle: an image already downloaded is not fetched
again, a Secondary that already holds or runs its image is not sent or installed again (its
status is asked first).

No verification logic lives here: every decision is :mod:`uptane`'s.
"""

from __future__ import annotations

from collections.abc import Callable

import urllib3

from primary.config import DIRECTOR, IMAGE, PrimaryConfig
from primary.cycle import TIME_FORMAT, Cycle, CycleResult, ProgressFactory, Say
from primary.deliver import deliver
from primary.download import download
from primary.fetcher import Fetcher
from primary.manifest import collect_results, send_manifest, sync_time
from primary.own import OwnSlots, load_encryption_key
from primary.secondaries import SecondaryPort
from primary.state import CycleRecord, PrimaryState
from primary.timekeeping import Timekeeper
from primary.timesource import SystemTime, TimeSource
from primary.verify import load_trust, verify
from storage import LOCAL, FileSystem
from uptane.errors import FetchError, UptaneError
from uptane.keys import Signer
from uptane.limits import Limits
from uptane.trust import RepositoryTrust


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
        progress: ProgressFactory | None = None,
        fs: FileSystem = LOCAL,
    ) -> None:
        """``say`` gets one line per step. Transfers report progress through ``progress``
        (a factory of ``(done, total)`` callbacks, e.g. progress bars); by default they
        are ``say`` lines every ``progress_step`` percent.

        Every durable write of the Primary (its state stores, image downloads and their
        ``.part`` files, prunes, its own flash) goes through ``fs``: the real disk unless
        a test wraps it (:mod:`storage.faults`)."""
        self.config = config
        self.fs = fs
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
            **(config.tls.fetcher_kwargs() if config.tls else {}),
        )
        self.state = PrimaryState(config.storage_dir, self.limits, fs=fs)
        self.say: Say = say or (lambda msg: None)
        self.progress: ProgressFactory = progress or self._progress_lines(progress_step)
        self.own = (
            None
            if config.flash_dir is None
            else OwnSlots(
                config.flash_dir,
                config.slot_size,
                self.limits,
                fs=fs,
                ecu_id=config.ecu_serial,
                encryption_key=load_encryption_key(config),
            )
        )
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=fc.connect_timeout, read=fc.read_timeout),
            retries=False,
            **(config.tls.pool_kwargs() if config.tls else {}),
        )
        self._key: Signer | None = None

    @property
    def key(self) -> Signer:
        """The ECU's signer: a key file, or a key inside a PKCS#11 token (``primary.key``)."""
        if self._key is None:
            self._key = self.config.open_key()
        return self._key

    def load_trust(self) -> tuple[RepositoryTrust, RepositoryTrust]:
        """The Director's and the Image repository's trusted state, re-verified from the
        stored files."""
        trusts = load_trust(self.config, self.state)
        return trusts[DIRECTOR], trusts[IMAGE]

    def _progress_lines(self, step: int) -> ProgressFactory:
        def factory(what: str) -> Callable[[int, int], None]:
            shown = [-1]

            def cb(done: int, total: int) -> None:
                pct = 100 if total == 0 else done * 100 // total
                mark = pct - pct % step
                if mark > shown[0]:
                    shown[0] = mark
                    self.say(f"  {what}: {pct:3d}% ({done}/{total} bytes)")

            return cb

        return factory

    # --- the cycle ------------------------------------------------------------------------

    def run_cycle(self) -> CycleResult:
        """One update cycle (§5.4.2); never raises for a network, link or attack failure:
        those are in the result and in the state's ``last_error`` and ``attacks``."""
        result = CycleResult()
        try:
            record = self.state.load_cycle()
        except UptaneError as e:
            # a damaged record (a disk fault: writes are atomic) must not stop the vehicle
            # for good: start afresh; the ECUs' reports and the Director rebuild it
            self.say(f"the stored cycle record is unusable, starting afresh: {e}")
            record = CycleRecord(last_error=str(e)[:500])
        cy = Cycle(
            self.config,
            self.state,
            record,
            result,
            Timekeeper(self.config.time, self.time, self.state),
            self.fetcher,
            lambda: self.key,
            self.say,
            self.progress,
        )
        ports = {s.serial: SecondaryPort(s, self.limits) for s in self.config.secondaries}
        try:
            self._cycle(cy, ports)
        except UptaneError as e:  # from storage or a peer, outside the steps' own handling
            result.error = result.error or e
            self.say(f"cycle stopped: {e}")
        except Exception as e:  # an unattended agent keeps going; status shows the error
            result.error = UptaneError(f"unexpected {type(e).__name__}: {e}")
            self.say(f"cycle stopped by an unexpected error: {type(e).__name__}: {e}")
        finally:
            for p in ports.values():
                p.close()
        if result.error is None and result.manifest_error is not None:
            # a manifest the Director refused or never got is the cycle's error (the exit
            # status, the status file), after any attack a later stage found
            result.error = FetchError(result.manifest_error)
        # a dead file system (a power cut) raises here, out of run_cycle: nothing more
        # happens until the Primary is built again over its files (the reboot)
        record.cycles += 1
        record.last_cycle = cy.time.now().strftime(TIME_FORMAT)
        record.last_error = None if result.error is None else str(result.error)[:500]
        self.state.save_cycle(record)
        return result

    def _cycle(self, cy: Cycle, ports: dict[str, SecondaryPort]) -> None:
        """time -> manifest -> verify -> download -> deliver -> report (the module doc)."""
        now = sync_time(cy, ports)  # §5.4.2 steps 2 and 5
        send_manifest(cy, ports, self.own, self._http)  # step 1
        trusts = verify(cy, now)  # step 3
        if trusts is None:
            return
        if not download(cy):  # step 4
            return
        deliver(cy, trusts, ports, self.own, now)  # steps 5-6
        collect_results(cy, ports)  # step 7
        for ecu_id, path in sorted(cy.result.installed.items()):
            self.say(f"{ecu_id}: installed {path}")
        if not cy.record.pending:
            self.say("nothing pending")


__all__ = ["CycleResult", "Primary"]

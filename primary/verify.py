"""The verify stage (§5.4.2 step 3): full verification of the Director and the Image
repository through the core, and the pending work it approves.

:func:`verify` loads both repositories' trusted state from the stored files (re-verified),
runs :func:`uptane.verify.full_verification` over HTTP metadata sources, turns the images
it approves into pending updates (:class:`primary.state.Pending` at
:attr:`primary.lifecycle.Step.APPROVED`), and only then stores the new metadata as
trusted. Nothing here decides what is trustworthy: the core does.
"""

from __future__ import annotations

from datetime import datetime

from primary.config import DIRECTOR, IMAGE, PrimaryConfig
from primary.cycle import MAX_REFUSALS, Cycle
from primary.sources import HttpMetadataSource, target_url
from primary.state import Pending, PrimaryState
from uptane.errors import UptaneError
from uptane.metadata import JSON, TargetFile
from uptane.trust import RepositoryTrust
from uptane.verify import NO_NEW_TARGETS, FullVerificationResult, VehicleContext, full_verification

Trusts = dict[str, RepositoryTrust]


def load_trust(config: PrimaryConfig, state: PrimaryState) -> Trusts:
    """Both repositories' trusted state, re-verified from the stored files."""
    limits = config.limits
    director = RepositoryTrust.load(
        DIRECTOR,
        state.read_metadata(DIRECTOR),
        limits,
        director=True,
        vehicle_id=config.vin,
        ecu_ids=config.ecus,
    )
    image = RepositoryTrust.load(IMAGE, state.read_metadata(IMAGE), limits)
    return {DIRECTOR: director, IMAGE: image}


def verify(cy: Cycle, now: datetime) -> Trusts | None:
    """Full verification at ``now``; the trusted state of both repositories when it
    passed (the approved work recorded, the metadata stored), else None (the error is the
    cycle's, an attack recorded unless it was a transport failure)."""
    try:
        trusts, fv = _full_verification(cy, now)
    except UptaneError as e:
        cy.stopped(e, "full verification")
        cy.say(f"verification failed: {e}")
        cy.save()
        return None
    _approve(cy, trusts, fv)
    # Only now, with every check passed, does the new metadata become trusted state. The
    # work it approves is recorded first: a crash between the writes below leaves an
    # early stop ("timestamp unchanged") next cycle, which keeps that work.
    cy.save()
    cy.state.write_metadata(DIRECTOR, trusts[DIRECTOR].raw)
    cy.state.write_metadata(IMAGE, trusts[IMAGE].raw)
    return trusts


def _full_verification(cy: Cycle, now: datetime) -> tuple[Trusts, FullVerificationResult]:
    cfg = cy.config
    trusts = load_trust(cfg, cy.state)
    sources = {
        DIRECTOR: HttpMetadataSource(
            cy.fetcher, cfg.director_metadata_url, JSON, repository=DIRECTOR
        ),
        IMAGE: HttpMetadataSource(cy.fetcher, cfg.image_metadata_url, JSON, repository=IMAGE),
    }
    installed = cy.record.installed
    vehicle = VehicleContext(
        cfg.vin,
        cfg.ecu_serial,
        cfg.ecus,
        installed_release_counters={
            e: t.release_counter for e, t in installed.items() if t.release_counter is not None
        },
        installed_images=dict(installed),
    )
    director, image = trusts[DIRECTOR], trusts[IMAGE]
    fv = full_verification(director, image, cfg.load_map_file(), sources, now, vehicle, cy.limits)
    cy.result.verified = True
    cy.result.stopped_early = fv.stopped_early
    d_state, i_state = director.state(), image.state()
    cy.say(
        f"Director metadata verified (root v{d_state['root']}, targets v{d_state['targets']})"
        + (f"; {fv.stopped_early}" if fv.stopped_early else "")
    )
    if fv.image is not None:
        cy.say(
            f"Image repository metadata verified (root v{i_state['root']}, "
            f"targets v{i_state['targets']})"
        )
    return trusts, fv


def _approve(cy: Cycle, trusts: Trusts, fv: FullVerificationResult) -> None:
    """The pending work after a passed verification."""
    record = cy.record
    director = trusts[DIRECTOR]
    dv = director.targets.signed.version if director.targets else 0
    if fv.director.stopped_early is None and fv.stopped_early == NO_NEW_TARGETS:
        # every image the Director lists is installed already (§5.4.4.2 step 6)
        record.pending.clear()
    elif fv.stopped_early is None:
        consistent = trusts[IMAGE].root.signed.consistent_snapshot
        fresh: dict[str, Pending] = {}
        for a in fv.images:
            old = record.pending.get(a.ecu_id)
            if old is not None and old.target.same_image(a.director_target):
                old.director_version = dv
                fresh[a.ecu_id] = old
                continue
            if a.director_target.same_image(record.installed.get(a.ecu_id)):
                continue
            refusals = cy.refusals(a.ecu_id, a.director_target)
            if refusals >= MAX_REFUSALS:
                cy.say(
                    f"{a.ecu_id}: refused {a.path} {refusals} times; "
                    "waiting for the Director to change its assignment"
                )
                continue
            p = Pending(a.ecu_id, a.director_target, director_version=dv)
            p.url = _image_url(cy.config, a.director_target, a.image_target, consistent)
            fresh[a.ecu_id] = p
            cy.say(f"{a.ecu_id}: {a.path} approved ({a.length} bytes)")
        record.pending = fresh
    else:
        # the Director's targets did not change (its refresh stopped early: "timestamp
        # unchanged" or "no new targets"): pending work from that same targets version
        # stays valid, and was just found fresh by the refresh
        record.pending = {e: p for e, p in record.pending.items() if p.director_version == dv}


def _image_url(config: PrimaryConfig, d: TargetFile, i: TargetFile | None, consistent: bool) -> str:
    if d.url:
        return d.url
    entry = i if i is not None else d
    prefix = next(iter(entry.hashes.values())) if consistent else None
    return target_url(config.image_targets_url, d.path, prefix)


__all__ = ["Trusts", "load_trust", "verify"]

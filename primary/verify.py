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
from primary.cycle import MAX_REFUSALS, Cycle, transport_failure
from primary.sources import HttpMetadataSource, target_url
from primary.state import Pending, PrimaryState
from uptane.delta import produced_image
from uptane.encryption import encrypted_for, transport_target
from uptane.errors import UptaneError
from uptane.metadata import JSON
from uptane.trust import RepositoryTrust
from uptane.verify import (
    NO_NEW_TARGETS,
    ApprovedImage,
    FullVerificationResult,
    VehicleContext,
    full_verification,
)

Trusts = dict[str, RepositoryTrust]


def load_trust(config: PrimaryConfig, state: PrimaryState) -> Trusts:
    """Every repository's trusted state (the Director first), re-verified from the stored
    files."""
    limits = config.limits
    trusts = {
        DIRECTOR: RepositoryTrust.load(
            DIRECTOR,
            state.read_metadata(DIRECTOR),
            limits,
            director=True,
            vehicle_id=config.vin,
            ecu_ids=config.ecus,
        )
    }
    for name in config.image_repositories:
        trusts[name] = RepositoryTrust.load(name, state.read_metadata(name), limits)
    return trusts


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
    for name, trust in trusts.items():  # the Director first, then the Image repository
        cy.state.write_metadata(name, trust.raw)
    return trusts


def _full_verification(cy: Cycle, now: datetime) -> tuple[Trusts, FullVerificationResult]:
    cfg = cy.config
    trusts = load_trust(cfg, cy.state)
    sources = {
        DIRECTOR: HttpMetadataSource(
            cy.fetcher, cfg.director_metadata_url, JSON, repository=DIRECTOR
        ),
    }
    for name, repo in cfg.image_repositories.items():
        sources[name] = HttpMetadataSource(cy.fetcher, repo.metadata_url, JSON, repository=name)
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
    director = trusts[DIRECTOR]
    others = {name: t for name, t in trusts.items() if name != DIRECTOR}
    fv = full_verification(director, others, cfg.load_map_file(), sources, now, vehicle, cy.limits)
    cy.result.verified = True
    cy.result.stopped_early = fv.stopped_early
    d_state = director.state()
    cy.say(
        f"Director metadata verified (root v{d_state['root']}, targets v{d_state['targets']})"
        + (f"; {fv.stopped_early}" if fv.stopped_early else "")
    )
    for name in fv.repositories:
        state = trusts[name].state()
        what = "Image repository" if name == IMAGE else f"repository {name}"
        cy.say(f"{what} metadata verified (root v{state['root']}, targets v{state['targets']})")
    for name, e in fv.refused.items():
        # the map's rules approved every image without it (else full_verification raised)
        cy.say(f"repository {name}: refused ({e}); no rule needed it")
        if not transport_failure(e):
            cy.attack(e, f"repository {name}")
    _timestamps_kept(cy, fv)
    return trusts, fv


def _timestamps_kept(cy: Cycle, fv: FullVerificationResult) -> None:
    """A repository served a timestamp of the trusted version with other contents: the
    trusted one is kept and the refresh goes on (TUF 5.4.3: an equal version is no
    update). A warning line, never an attack indicator: a repository that re-signed
    without moving the version is a publishing fault, not an attack on this vehicle."""
    kept = {DIRECTOR: fv.director.timestamp_kept}
    kept.update({name: r.timestamp_kept for name, r in fv.repositories.items()})
    for name, note in kept.items():
        if note:
            cy.say(f"warning: {name}: {note}")


def _approve(cy: Cycle, trusts: Trusts, fv: FullVerificationResult) -> None:
    """The pending work after a passed verification."""
    record = cy.record
    director = trusts[DIRECTOR]
    dv = director.targets.signed.version if director.targets else 0
    if fv.director.stopped_early is None and fv.stopped_early == NO_NEW_TARGETS:
        # every image the Director lists is installed already (§5.4.4.2 step 6)
        record.pending.clear()
    elif fv.stopped_early is None:
        fresh: dict[str, Pending] = {}
        for a in fv.images:
            old = record.pending.get(a.ecu_id)
            if old is not None and old.target.same_image(a.director_target):
                old.director_version = dv
                fresh[a.ecu_id] = old
                continue
            # a delta counts as installed once the full image it produces runs (issue 17)
            if produced_image(a.director_target).same_image(record.installed.get(a.ecu_id)):
                continue
            refusals = cy.refusals(a.ecu_id, a.director_target)
            if refusals >= MAX_REFUSALS:
                cy.say(
                    f"{a.ecu_id}: refused {a.path} {refusals} times; "
                    "waiting for the Director to change its assignment"
                )
                continue
            p = Pending(a.ecu_id, a.director_target, director_version=dv)
            p.url = _image_url(cy.config, trusts, a)
            fresh[a.ecu_id] = p
            cy.say(f"{a.ecu_id}: {a.path} approved ({a.length} bytes)")
        record.pending = fresh
    else:
        # the Director's targets did not change (its refresh stopped early: "timestamp
        # unchanged" or "no new targets"): pending work from that same targets version
        # stays valid, and was just found fresh by the refresh
        record.pending = {e: p for e, p in record.pending.items() if p.director_version == dv}


def _image_url(config: PrimaryConfig, trusts: Trusts, a: ApprovedImage) -> str:
    """Where to download ``a``: an image encrypted for its ECU from the Director, which
    made the ciphertext (``DIRECTOR/vehicles/VIN/images/NAME``, issue 17); else the
    Director's URL for it, else the first repository that agreed with the Director (the
    Image repository's URL when the rule needed none), with that repository's
    consistent-snapshot file name."""
    d = a.director_target
    if encrypted_for(d, a.ecu_id):
        wire = transport_target(d, a.ecu_id)
        return target_url(f"{config.director_url}/vehicles/{config.vin}/images", wire.path)
    if d.url:
        return d.url
    name, entry = next(iter(a.agreed.items()), (IMAGE, d))
    consistent = trusts[name].root.signed.consistent_snapshot
    prefix = next(iter(entry.hashes.values())) if consistent else None
    return target_url(config.image_repositories[name].targets_url, d.path, prefix)


__all__ = ["Trusts", "load_trust", "verify"]

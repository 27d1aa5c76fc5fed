"""The download stage (§5.4.2 step 4): every approved image into the Primary's storage.

Each image goes through :meth:`primary.fetcher.Fetcher.download_to`: free space checked
first, never more than the signed length, every hash checked by the core's
:class:`~uptane.verify.ImageVerifier`, a ``.part`` file resumed by the next cycle. For an
ECU the Director encrypts for, that is the ciphertext (its length and hashes from the
signed entry, :func:`uptane.encryption.transport_target`): the Primary never holds the
plaintext, nor a key to it (issue 17). A delta is downloaded like any image. An
image already in storage (a download that finished before a crash) is checked, not
fetched again. :func:`download` says whether the whole bundle is here: nothing goes to
any ECU before it is (§4.3 partial bundle).
"""

from __future__ import annotations

from primary.cycle import Cycle
from primary.fetcher import file_holds
from primary.lifecycle import Event, Step, advance
from primary.state import Pending
from uptane.encryption import transport_target
from uptane.errors import UptaneError
from uptane.verify import ImageVerifier


def download(cy: Cycle) -> bool:
    """Download every approved image; True when no approved image is missing."""
    for _ecu_id, p in sorted(cy.record.pending.items()):
        if p.step == Step.APPROVED:
            _download_one(cy, p)
    missing = sorted(p.target.path for p in cy.record.pending.values() if p.step == Step.APPROVED)
    if missing:
        # §4.3 partial bundle: no ECU gets its image until every image of the bundle is
        # here (the next cycle resumes the rest)
        cy.say(f"bundle incomplete, nothing sent: waiting for {', '.join(missing)}")
        cy.save()
        return False
    return True


def _download_one(cy: Cycle, p: Pending) -> None:
    wire = transport_target(p.target, p.ecu_id)  # the ciphertext, for an encrypted entry
    dest = cy.state.image_path(wire)
    if file_holds(wire, dest, cy.limits):  # a download finished before a crash
        advance(p, Event.DOWNLOADED)
        cy.save()
        return
    path = p.target.path
    what = "encrypted " if wire is not p.target else ""
    cy.say(f"downloading {what}{path} for {p.ecu_id} ({wire.length} bytes)")
    try:
        cy.fetcher.download_to(
            p.url or "",
            dest,
            wire.length,
            ImageVerifier(wire, cy.limits),
            progress=cy.progress(f"download {path}"),
            fs=cy.state.fs,
        )
    except UptaneError as e:
        p.attempts += 1
        cy.stopped(e, f"download of {path}")
        cy.say(f"download of {path} stopped: {e}")
        cy.save()
        return
    advance(p, Event.DOWNLOADED)
    cy.result.downloaded.append(path)
    cy.save()
    if wire is not p.target:
        cy.say(
            f"downloaded {path} encrypted for {p.ecu_id} ({wire.length} bytes, from the "
            "Director): the ciphertext's length and every hash verified"
        )
    else:
        cy.say(f"downloaded {path}: length and every hash verified")


__all__ = ["download"]

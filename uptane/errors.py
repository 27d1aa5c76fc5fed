"""One error hierarchy for the whole stack, each class named after what it stops.

This is how an ECU "returns an error code naming the attack" (Uptane §5.4.4.2): every
error has a stable numeric ``code`` and an ``attack`` name, so it can travel over a link
(see :func:`error_from_code`) or into a version report as the attack indicator.
"""

from __future__ import annotations

from typing import ClassVar


class UptaneError(Exception):
    """Base of every error the stack raises on purpose.

    ``repository`` and ``role`` say where it happened, when that is known.
    """

    code: ClassVar[int] = 1
    attack: ClassVar[str] = "error"

    def __init__(
        self, message: str = "", *, repository: str | None = None, role: str | None = None
    ) -> None:
        self.message = message or self.__class__.__name__
        self.repository = repository
        self.role = role
        super().__init__(self.message)

    def __str__(self) -> str:
        where = "/".join(p for p in (self.repository, self.role) if p)
        return f"{self.attack}: {self.message}" + (f" [{where}]" if where else "")

    def at(self, *, repository: str | None = None, role: str | None = None) -> UptaneError:
        """Fill in where the error happened, if it is not known yet; returns self."""
        if self.repository is None:
            self.repository = repository
        if self.role is None:
            self.role = role
        return self


# --- hostile or broken input -------------------------------------------------------------


class MalformedInput(UptaneError):
    """Bytes that do not decode to what was expected (bad JSON, DER, CBOR, fields)."""

    code = 10
    attack = "malformed-input"


class NonCanonicalEncoding(MalformedInput):
    """Input decodes but is not in its one canonical form (DER re-encoding, canonical JSON)."""

    code = 11
    attack = "non-canonical-encoding"


class LimitExceeded(MalformedInput):
    """A structural cap of :class:`uptane.limits.Limits` was exceeded (count, depth, length)."""

    code = 12
    attack = "resource-exhaustion"


class UnsupportedAlgorithm(MalformedInput):
    """A key type, signature scheme or hash algorithm that is not supported."""

    code = 13
    attack = "unsupported-algorithm"


class EndlessDataAttack(UptaneError):
    """More bytes than the role's or image's cap allows (§4.3 endless data)."""

    code = 20
    attack = "endless-data"


# --- the Uptane threat model (§4.3) ------------------------------------------------------


class RollbackAttack(UptaneError):
    """A metadata version or image release counter lower than the trusted one."""

    code = 30
    attack = "rollback"


class FreezeAttack(UptaneError):
    """Stale metadata offered as current (§4.3 freeze)."""

    code = 40
    attack = "freeze"


class ExpiredMetadata(FreezeAttack):
    """Metadata whose expiry is not after the current time."""

    code = 41


class VehicleMismatch(FreezeAttack):
    """Director targets that name another vehicle (a replayed targets file, §5.2.3.1)."""

    code = 42


class MixAndMatchAttack(UptaneError):
    """Metadata whose versions or hashes do not bind to each other."""

    code = 50
    attack = "mix-and-match"


class ArbitrarySoftwareAttack(UptaneError):
    """Metadata or an image that the trusted keys did not vouch for."""

    code = 60
    attack = "arbitrary-software"


class ThresholdNotMet(ArbitrarySoftwareAttack):
    """Fewer valid signatures from unique trusted keys than the role's threshold."""

    code = 61


class TargetMismatch(ArbitrarySoftwareAttack):
    """The Director's target does not match the Image repository's (§5.4.4.2)."""

    code = 62


class TargetNotFound(ArbitrarySoftwareAttack):
    """An image the Director names is not in the Image repository (through delegations)."""

    code = 63


class BadHash(ArbitrarySoftwareAttack):
    """Image bytes whose hash differs from the signed one."""

    code = 64


class BadLength(ArbitrarySoftwareAttack):
    """Image bytes shorter than the signed length (longer is endless data)."""

    code = 65


class BadHardwareId(ArbitrarySoftwareAttack):
    """An image for another kind of ECU."""

    code = 66


class BadEcuId(ArbitrarySoftwareAttack):
    """A Director entry for an ECU that is not this one, or not in this vehicle."""

    code = 67


class RepeatedEcuId(ArbitrarySoftwareAttack):
    """One ECU named by more than one Director target (§5.4.4.6)."""

    code = 68


class DirectorDelegation(ArbitrarySoftwareAttack):
    """Director targets metadata that delegates, which the Director may not do."""

    code = 69


class BadRepositoryMapping(ArbitrarySoftwareAttack):
    """The TAP 4 map file refuses the target, or the repositories disagree."""

    code = 70


class SlowRetrievalAttack(UptaneError):
    """A download below the minimum average speed (§5.4 slow retrieval)."""

    code = 80
    attack = "slow-retrieval"


class DropRequestAttack(UptaneError):
    """A request that never got an answer (§4.3 drop-request)."""

    code = 81
    attack = "drop-request"


class ReplayAttack(UptaneError):
    """A version report whose nonce or counter was seen before."""

    code = 90
    attack = "replay"


class PartialBundleAttack(UptaneError):
    """Only part of a bundle offered, or a new bundle before the last one ended."""

    code = 91
    attack = "partial-bundle"


class MixedBundleAttack(UptaneError):
    """Images from different bundles combined."""

    code = 92
    attack = "mixed-bundles"


class BadSignature(UptaneError):
    """A signature that does not verify where exactly one was required (a report, a VVM)."""

    code = 93
    attack = "bad-signature"


class UnknownRole(UptaneError):
    """A role that trusted metadata does not define or delegate."""

    code = 94
    attack = "unknown-role"


# --- the link between a Primary (or bench tool) and a Secondary (hardware/) --------------


class LinkError(UptaneError):
    """The link to a peer ECU failed in a way that is not an attack by itself (§5.4.2 step 7)."""

    code = 110
    attack = "link-failure"


class LinkTimeout(DropRequestAttack):
    """A link request got no answer within its timeout and retries: the peer is unreachable."""

    code = 111


class ProtocolVersionMismatch(LinkError):
    """The two ends of a link share no protocol version."""

    code = 112
    attack = "protocol-version-mismatch"


class ProtocolViolation(MalformedInput):
    """A well-formed link message that is not allowed here (wrong state, offset or reply)."""

    code = 113
    attack = "protocol-violation"


class SessionRequired(ProtocolViolation):
    """A link request before the HELLO handshake (or after the Secondary restarted)."""

    code = 114


class LinkAuthentication(LinkError):
    """The two ends of a link disagree on its authentication: one has a link key and the
    other none, or their link keys differ (the HELLO's MAC does not verify). Give both
    ends the link key made at ``uptane-secondary provision``; a configuration problem,
    not an attack by itself (docs/link-protocol.md)."""

    code = 115


class UnauthenticatedPeer(UptaneError):
    """What a Secondary without a link key reports instead of the attack an input named:
    anyone on the bus could have sent that input, so the indicator
    (``"unauthenticated-peer: <attack>: <message>"``) is an event to record, never a
    verdict on an update by itself (docs/link-protocol.md, "Without a link key")."""

    code = 116
    attack = "unauthenticated-peer"


# --- installing into A/B slots on a Secondary (hardware/slots.py) ----------------------


class InstallFailed(UptaneError):
    """An install that could not complete or was undone; the previous image stays (§5.4.3)."""

    code = 120
    attack = "install-failed"


class TrialNotConfirmed(InstallFailed):
    """A new image booted in trial mode was not confirmed within its boots and was reverted."""

    code = 121


class NoBootableImage(InstallFailed):
    """Neither slot holds an image that matches the boot-control record."""

    code = 122


class IllegalSlotTransition(InstallFailed):
    """A/B install: a move the slot lifecycle's table does not allow in the current state
    (hardware/slot_lifecycle.py), such as a confirm with no trial slot booted; nothing
    changed."""

    code = 123


# --- transport and storage on the Primary (primary/fetcher.py) ---------------------------


class FetchError(UptaneError):
    """An HTTP answer that cannot be used: an unexpected status (after retries for 429/5xx),
    a 404 for an image, a malformed Content-Length or Content-Range."""

    code = 100
    attack = "fetch-failure"


class InsufficientSpace(UptaneError):
    """Not enough free disk space for a download, found before it starts."""

    code = 101
    attack = "insufficient-space"


# --- secure time: Roughtime responses and the clock policy (uptane/roughtime.py) ----------


class TimeReplay(ReplayAttack):
    """A signed time response that does not answer this request: it carries another nonce,
    or its Merkle proof does not lead from this nonce to the signed root (an old or another
    ECU's response replayed)."""

    code = 130


class ExpiredTimeDelegation(UptaneError):
    """A time response whose midpoint is outside the window (MINT..MAXT) in which the
    server's long-term key trusts its online key: the time server's operator must renew the
    delegation (``uptane-time-server delegate``)."""

    code = 131
    attack = "time-delegation-expired"


class TimeJumpRefused(UptaneError):
    """A verified time farther from the last verified time than the clock policy allows
    without more time servers agreeing; the clock is unchanged. A policy decision (a vehicle
    offline for longer than the bound, a server with a wrong clock), not an attack by itself."""

    code = 132
    attack = "time-policy"


class TimeQuorumNotMet(UptaneError):
    """Fewer verified time responses from distinct time servers agree than the clock policy
    requires; the clock is unchanged (configure or reach more time servers)."""

    code = 133
    attack = "time-quorum"


class UnsignedTime(UptaneError):
    """A time without a signed time token, offered to an ECU provisioned with time server
    keys: the clock is unchanged. The Primary must forward a token from the OEM's time
    server (docs/secure-time.md); not an attack by itself (a Primary or bench tool without
    time servers configured sends it too)."""

    code = 134
    attack = "time-unsigned"


class ReportTimeSkew(UptaneError):
    """An ECU version report whose time is outside the window the Director accepts (too
    far from the Director's clock, or older than the retention window) while nothing shows
    that it is a replay: its nonce is unseen (or its counter increased) and it is not older
    than a report the Director already accepted from that ECU. The ECU's clock (its last
    verified time) or the Director's is wrong, or the manifest was held back: give the
    vehicle fresh signed time (docs/secure-time.md) and check the Director's clock. Refused
    all the same; not an attack by itself (docs/retention.md)."""

    code = 135
    attack = "report-time-skew"


# --- encrypted images and deltas (uptane/encryption.py, uptane/delta.py; issue 17) -------


class DecryptionFailed(ArbitrarySoftwareAttack):
    """An encrypted image whose ciphertext does not authenticate under its content key: a
    chunk altered, cut, reordered, duplicated or dropped, or bytes encrypted for another
    image. Nothing decrypted from it may be installed."""

    code = 140


class TruncatedCiphertext(DecryptionFailed):
    """An encrypted image that ended before its final chunk (or went on after it)."""

    code = 141


class KeyUnwrapFailed(ArbitrarySoftwareAttack):
    """A wrapped content key that does not open with this ECU's encryption key for this ECU
    and this image: swapped from another ECU's or another image's entry, or altered."""

    code = 142


class WrongEncryptionKey(UptaneError):
    """The image is wrapped to an encryption key this ECU does not hold (or to none of its
    keys): the Director's inventory holds another encryption key for this ECU. Register the
    ECU's current encryption public key with the Director; not an attack by itself."""

    code = 143
    attack = "encryption-key-mismatch"


class BadCiphertextHeader(MalformedInput):
    """An encrypted image whose header is not this stack's format (magic, version, chunk
    size out of range)."""

    code = 144


class DeltaBaseMismatch(UptaneError):
    """A delta whose base image is not the image this ECU runs: nothing was written. The
    Director sends the full image instead once it has the ECU's current report; not an
    attack by itself (the ECU's image may have changed since it last reported)."""

    code = 145
    attack = "delta-base-mismatch"


class CorruptPatch(MalformedInput):
    """Delta patch bytes that do not decode, or that would read outside the base image or
    write past the image they declare."""

    code = 146


def _all_subclasses(cls: type[UptaneError]) -> list[type[UptaneError]]:
    out: list[type[UptaneError]] = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


def error_classes() -> dict[int, type[UptaneError]]:
    """Every error class by its stable code."""
    return {c.code: c for c in _all_subclasses(UptaneError)}


def error_from_code(code: int, message: str = "") -> UptaneError:
    """Rebuild an error received over a link; an unknown code gives a plain UptaneError."""
    cls = error_classes().get(code, UptaneError)
    return cls(message)

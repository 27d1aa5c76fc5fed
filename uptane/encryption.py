"""Per-ECU image encryption (Uptane §4.3 eavesdrop, §5.2.3.1.1, §5.4.1, §5.4.3.4; issue 17).

Sans-I/O pieces the Director, the Primary and a Secondary put together; every primitive is
``cryptography``'s (docs/security.md, "Encrypted images", states and argues the
construction):

- **ECU encryption keys** (:class:`EncryptionPrivateKey`, :class:`EncryptionPublicKey`):
  X25519, separate from the ECU's signing key (§5.4.1 SHOULD). The public key has a TUF-style
  JSON form and id (``keytype`` x25519, :data:`KEY_SCHEME`) and a DER form (the
  SubjectPublicKeyInfo) for the Director's inventory.
- **Content encryption** (:class:`Encryptor`, :class:`Decryptor`): each image once, under a
  fresh 256-bit content key, in chunks of AES-256-GCM in the STREAM construction: the
  header (magic, version, chunk size, 7-byte random nonce prefix) is every chunk's
  associated data; chunk *i*'s nonce is prefix ‖ uint32(i) ‖ last-chunk flag. A Secondary
  authenticates and releases plaintext a chunk at a time in bounded memory; a chunk that is
  altered, cut, reordered, duplicated or dropped is :class:`~uptane.errors.DecryptionFailed`,
  a stream that stops early :class:`~uptane.errors.TruncatedCiphertext`.
- **Key wrapping** (:func:`wrap_key`, :func:`unwrap_key`): HPKE (RFC 9180) base mode,
  DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, from ``cryptography.hazmat.
  primitives.hpke``; the HPKE ``info`` names the ECU id and the image (path, length,
  hashes), so a wrapped key moved to another ECU's or another image's entry does not open
  (:class:`~uptane.errors.KeyUnwrapFailed`).

What the Director's targets entry carries (:class:`uptane.metadata.EncryptedImage`): the
ciphertext's file name, length and hashes (the Primary downloads and checks those; it never
holds a key), :data:`METHOD`, and per ECU id the key id of its encryption key and the
wrapped content key. The entry's own length and hashes stay the plaintext's (they match the
Image repository's, §5.4.4.2), and the ECU checks them after decrypting with
:class:`uptane.verify.ImageVerifier`.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.exceptions import UnsupportedAlgorithm as CryptoUnsupported
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from uptane.encoding.json import canonical
from uptane.errors import (
    BadCiphertextHeader,
    DecryptionFailed,
    EndlessDataAttack,
    KeyUnwrapFailed,
    MalformedInput,
    TruncatedCiphertext,
    UnsupportedAlgorithm,
    WrongEncryptionKey,
)
from uptane.identity import HasIdentity
from uptane.limits import Limits
from uptane.metadata import EncryptedImage, TargetFile, WrappedKey

#: ``EncryptedImage.method`` of this construction (key wrap + content encryption)
METHOD = "hpke-x25519-aes256gcm+stream-aes256gcm-v1"
#: ``keytype`` and ``scheme`` of an ECU encryption public key (never a signing key's)
KEY_TYPE = "x25519"
KEY_SCHEME = "hpke-x25519-hkdf-sha256-aes256gcm"
#: the HPKE suite of the key wrap (RFC 9180: KEM 0x0020, KDF 0x0001, AEAD 0x0002)
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
#: domain separation of the HPKE info: this stack, encrypted images, version 1
INFO_LABEL = b"uptane-stack encrypted image v1\x00"

CONTENT_KEY_BYTES = 32
#: a wrapped key: the 32-byte encapsulated X25519 key, the 32-byte key, the 16-byte tag
WRAPPED_KEY_BYTES = 32 + CONTENT_KEY_BYTES + 16

MAGIC = b"UPTE"
VERSION = 1
PREFIX_BYTES = 7
#: header: magic, version, chunk size (uint32), nonce prefix; it is every chunk's AAD
_HEADER = struct.Struct(f">4sBI{PREFIX_BYTES}s")
HEADER_BYTES = _HEADER.size
TAG_BYTES = 16
#: chunk size the Director uses unless told otherwise. Measured (bench figure 10): the
#: per-chunk cost of AES-GCM in ``cryptography`` is about 0.8 µs, so 64 KiB chunks decrypt
#: at 0.80-0.88 of one AES-GCM call over the whole image, 16 KiB at ~0.45, 4 KiB at ~0.2.
DEFAULT_CHUNK_SIZE = 64 * 1024
#: the smallest and largest chunk sizes a header may declare; the largest bounds what a
#: :class:`Decryptor` buffers (one ciphertext chunk and one plaintext chunk)
MIN_CHUNK_SIZE = 256
MAX_CHUNK_SIZE = 64 * 1024
MAX_CHUNKS = 2**32
#: the most bytes a public key in DER (SubjectPublicKeyInfo) or hex may take
MAX_PUBLIC_KEY_BYTES = 256


# --- ECU encryption keys ------------------------------------------------------------------


@dataclass(frozen=True)
class EncryptionPublicKey:
    """An ECU's X25519 encryption public key, as the Director's inventory holds it."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise MalformedInput("an X25519 public key is 32 bytes")

    def to_dict(self) -> dict[str, Any]:
        """The TUF-style JSON form: keytype, scheme, keyval.public (hex)."""
        return {"keytype": KEY_TYPE, "scheme": KEY_SCHEME, "keyval": {"public": self.raw.hex()}}

    @classmethod
    def from_dict(cls, d: Any, limits: Limits) -> EncryptionPublicKey:
        if not isinstance(d, dict) or set(d) != {"keytype", "scheme", "keyval"}:
            raise MalformedInput("an encryption key holds exactly keytype, scheme and keyval")
        keyval = d["keyval"]
        if d["keytype"] != KEY_TYPE or d["scheme"] != KEY_SCHEME:
            raise UnsupportedAlgorithm(
                f"encryption key type {str(d['keytype'])[:32]!r} / scheme "
                f"{str(d['scheme'])[:48]!r}: this stack encrypts to {KEY_TYPE}/{KEY_SCHEME}"
            )
        if not isinstance(keyval, dict) or set(keyval) != {"public"}:
            raise MalformedInput("an encryption key's keyval holds exactly public")
        public = keyval["public"]
        if not isinstance(public, str):
            raise MalformedInput("an encryption public key is a hex string")
        limits.check_string("encryption public key", public, MAX_PUBLIC_KEY_BYTES)
        try:
            raw = bytes.fromhex(public)
        except ValueError:
            raise MalformedInput("an encryption public key is a hex string") from None
        if raw.hex() != public:
            raise MalformedInput("an encryption public key is written in lowercase hex")
        return cls(raw)

    def to_der(self) -> bytes:
        """The DER SubjectPublicKeyInfo (RFC 8410, id-X25519), as ``cryptography`` writes it."""
        return self.load().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def from_der(cls, data: bytes) -> EncryptionPublicKey:
        """Read a DER SubjectPublicKeyInfo; only an X25519 key in its one encoding."""
        if len(data) > MAX_PUBLIC_KEY_BYTES:
            raise MalformedInput("an encryption public key in DER is at most 256 bytes")
        try:
            obj = serialization.load_der_public_key(bytes(data))
        except (ValueError, TypeError) as e:
            raise MalformedInput(f"not a DER public key: {type(e).__name__}") from None
        except CryptoUnsupported:
            raise UnsupportedAlgorithm("not a public key type this stack reads") from None
        if not isinstance(obj, x25519.X25519PublicKey):
            raise UnsupportedAlgorithm(
                f"an encryption key must be X25519, not {type(obj).__name__}"
            )
        key = cls(obj.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
        if key.to_der() != bytes(data):
            raise MalformedInput("an encryption public key in DER is not in its one encoding")
        return key

    @property
    def keyid(self) -> str:
        """SHA-256 (hex) of the canonical JSON form, as TUF makes key ids."""
        return hashlib.sha256(canonical(self.to_dict())).hexdigest()

    def load(self) -> x25519.X25519PublicKey:
        return x25519.X25519PublicKey.from_public_bytes(self.raw)


class EncryptionPrivateKey:
    """An ECU's X25519 encryption private key (made at provisioning, kept by the ECU)."""

    def __init__(self, key: x25519.X25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> EncryptionPrivateKey:
        return cls(x25519.X25519PrivateKey.generate())

    def public_key(self) -> EncryptionPublicKey:
        pub = self._key.public_key()
        return EncryptionPublicKey(
            pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )

    def to_pem(self, password: bytes | None = None) -> bytes:
        """PKCS#8 PEM, encrypted when ``password`` is given."""
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
        )

    @classmethod
    def from_pem(cls, data: bytes, password: bytes | None = None) -> EncryptionPrivateKey:
        try:
            key = serialization.load_pem_private_key(data, password)
        except (ValueError, TypeError) as e:
            raise MalformedInput(f"not a PEM private key: {type(e).__name__}") from None
        if not isinstance(key, x25519.X25519PrivateKey):
            raise UnsupportedAlgorithm("an ECU encryption key must be X25519")
        return cls(key)


# --- wrapping the content key to an ECU ------------------------------------------------------


def wrap_info(ecu_id: str, image: HasIdentity) -> bytes:
    """The HPKE ``info`` for ``ecu_id`` and ``image``: the label, then the canonical JSON of
    the ECU id and the image's path, length and hashes (hex in lowercase). Both ends build
    it from the Director's signed entry."""
    ident = image.identity()
    body = {
        "ecu": ecu_id,
        "image": {
            "filename": ident.path,
            "length": ident.length,
            "hashes": {alg: digest.lower() for alg, digest in ident.hashes.items()},
        },
    }
    return INFO_LABEL + canonical(body)


def wrap_key(
    content_key: bytes, recipient: EncryptionPublicKey, ecu_id: str, image: HasIdentity
) -> WrappedKey:
    """Wrap ``content_key`` to one ECU's encryption key, bound to that ECU and image."""
    if len(content_key) != CONTENT_KEY_BYTES:
        raise ValueError("a content key is 32 bytes")
    value = SUITE.encrypt(content_key, recipient.load(), info=wrap_info(ecu_id, image))
    return WrappedKey(recipient.keyid, value)


def unwrap_key(
    encrypted: EncryptedImage, ecu_id: str, image: HasIdentity, key: EncryptionPrivateKey
) -> bytes:
    """The content key the Director wrapped for ``ecu_id`` in ``encrypted``, the entry of
    ``image``. :class:`~uptane.errors.WrongEncryptionKey` when nothing is wrapped to this
    ECU's key (a stale inventory), :class:`~uptane.errors.KeyUnwrapFailed` when the wrapped
    key does not open for this ECU and image (swapped or altered)."""
    if encrypted.method != METHOD:
        raise UnsupportedAlgorithm(
            f"encryption method {encrypted.method[:64]!r} is not supported; "
            f"this ECU decrypts {METHOD!r}"
        )
    wrapped = encrypted.wrapped_keys.get(ecu_id)
    mine = key.public_key().keyid
    if wrapped is None:
        raise WrongEncryptionKey(
            f"no content key is wrapped for ECU {ecu_id!r}; register its encryption key "
            f"{mine[:16]} with the Director"
        )
    if wrapped.keyid != mine:
        raise WrongEncryptionKey(
            f"the content key is wrapped to encryption key {wrapped.keyid[:16]}, ECU "
            f"{ecu_id!r} holds {mine[:16]}; register the ECU's current encryption key"
        )
    if len(wrapped.value) != WRAPPED_KEY_BYTES:
        raise KeyUnwrapFailed(
            f"a wrapped key is {WRAPPED_KEY_BYTES} bytes, not {len(wrapped.value)}"
        )
    try:
        content_key = SUITE.decrypt(wrapped.value, key._key, info=wrap_info(ecu_id, image))
    except (InvalidTag, ValueError):
        raise KeyUnwrapFailed(
            f"the key wrapped for ECU {ecu_id!r} does not open for this ECU and image "
            f"{image.identity().path!r}: it was made for another ECU or image, or altered"
        ) from None
    if len(content_key) != CONTENT_KEY_BYTES:
        raise KeyUnwrapFailed("the wrapped content key is not 32 bytes")
    return content_key


# --- the chunked stream --------------------------------------------------------------------


def chunk_count(plaintext_length: int, chunk_size: int) -> int:
    """Chunks of a stream: every chunk full but the last, which holds 1..chunk_size bytes
    (an empty image is one empty chunk)."""
    return max(1, -(-plaintext_length // chunk_size))


def ciphertext_length(plaintext_length: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Bytes of the encrypted image: the header, the plaintext, a tag per chunk."""
    return HEADER_BYTES + plaintext_length + TAG_BYTES * chunk_count(plaintext_length, chunk_size)


#: STREAM (Hoang, Reyhanitabar, Rogaway, Vizár 2015): prefix ‖ counter ‖ last-chunk flag
_NONCE = struct.Struct(f">{PREFIX_BYTES}sI?")


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return _NONCE.pack(prefix, index, last)


@dataclass(frozen=True)
class Header:
    """The stream header: chunk size and nonce prefix (magic and version are fixed)."""

    chunk_size: int
    prefix: bytes

    def to_bytes(self) -> bytes:
        return _HEADER.pack(MAGIC, VERSION, self.chunk_size, self.prefix)

    @classmethod
    def parse(cls, data: bytes, max_chunk_size: int = MAX_CHUNK_SIZE) -> Header:
        if len(data) != HEADER_BYTES:
            raise BadCiphertextHeader(f"the header is {HEADER_BYTES} bytes")
        magic, version, chunk_size, prefix = _HEADER.unpack(data)
        if magic != MAGIC:
            raise BadCiphertextHeader("not an encrypted image of this format (magic)")
        if version != VERSION:
            raise BadCiphertextHeader(f"encrypted image version {version}, this ECU reads 1")
        if not MIN_CHUNK_SIZE <= chunk_size <= max_chunk_size:
            raise BadCiphertextHeader(
                f"chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}..{max_chunk_size}; "
                f"encrypt images for this ECU with smaller chunks"
            )
        return cls(chunk_size, prefix)


class Encryptor:
    """The Director's side: encrypts one image of a known length under a fresh content key.

    ``update`` returns the ciphertext of every whole chunk so far (the header first);
    ``finish`` the last chunk. Memory: one chunk."""

    def __init__(
        self,
        plaintext_length: int,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        content_key: bytes | None = None,
    ) -> None:
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size must be in {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
        if plaintext_length < 0 or chunk_count(plaintext_length, chunk_size) > MAX_CHUNKS:
            raise ValueError("plaintext length out of range")
        self.content_key = content_key or AESGCM.generate_key(256)
        if len(self.content_key) != CONTENT_KEY_BYTES:
            raise ValueError("a content key is 32 bytes")
        self.header = Header(chunk_size, os.urandom(PREFIX_BYTES))
        self.plaintext_length = plaintext_length
        self.ciphertext_length = ciphertext_length(plaintext_length, chunk_size)
        self._aad = self.header.to_bytes()
        self._aead = AESGCM(self.content_key)
        self._chunks = chunk_count(plaintext_length, chunk_size)
        self._index = 0
        self._taken = 0
        self._pending = bytearray()
        self._started = False

    def _seal(self, data: bytes | bytearray | memoryview) -> bytes:
        last = self._index == self._chunks - 1
        out = self._aead.encrypt(_nonce(self.header.prefix, self._index, last), data, self._aad)
        self._index += 1
        return out

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        """Ciphertext for ``data`` as far as whole chunks go (the last chunk waits). Whole
        chunks of ``data`` are sealed where they are; only a partial chunk is copied."""
        view = memoryview(data).cast("B")
        self._taken += len(view)
        if self._taken > self.plaintext_length:
            raise ValueError("more plaintext than the length given")
        out = [] if self._started else [self._aad]
        self._started = True
        size, pos = self.header.chunk_size, 0
        if self._pending:
            pos = min(size - len(self._pending), len(view))
            self._pending += view[:pos]
            if len(self._pending) == size and self._index < self._chunks - 1:
                out.append(self._seal(self._pending))
                self._pending = bytearray()
        while not self._pending and len(view) - pos >= size and self._index < self._chunks - 1:
            out.append(self._seal(view[pos : pos + size]))
            pos += size
        self._pending += view[pos:]
        return b"".join(out)

    def finish(self) -> bytes:
        """The ciphertext of the last chunk; the plaintext must be complete."""
        if self._taken != self.plaintext_length:
            raise ValueError("less plaintext than the length given")
        head = b"" if self._started else self._aad
        self._started = True
        tail = self._seal(bytes(self._pending))
        self._pending.clear()
        return head + tail


@dataclass(frozen=True)
class ResumePoint:
    """Where a cut transfer picks up: the header and the chunks already authenticated and
    handed out. Ask for the ciphertext again from :attr:`ciphertext_offset`."""

    header: bytes
    chunks: int

    @property
    def ciphertext_offset(self) -> int:
        size = Header.parse(self.header).chunk_size
        return HEADER_BYTES + self.chunks * (size + TAG_BYTES)

    @property
    def plaintext_offset(self) -> int:
        return self.chunks * Header.parse(self.header).chunk_size


#: where a :class:`Decryptor` hands each authenticated plaintext chunk; the view is valid
#: only during the call
Sink = Callable[[memoryview], object]


class Decryptor:
    """A Secondary's side: ciphertext in pieces of any size, authenticated plaintext out.

    ``feed(data, sink)`` calls ``sink`` with each chunk's plaintext once its tag verified
    (a view into a reused buffer, valid only during the call); ``finish`` requires the
    whole stream. It holds at most one ciphertext chunk and one plaintext chunk (each at
    most ``max_chunk_size`` bytes, 64 KiB). The plaintext length is the signed entry's, so
    the decryptor knows which chunk is last and how long the ciphertext must be: bytes past
    it are endless data, a stream that stops short is truncated.
    """

    def __init__(
        self,
        content_key: bytes,
        plaintext_length: int,
        limits: Limits,
        *,
        ciphertext_length: int | None = None,
        max_chunk_size: int = MAX_CHUNK_SIZE,
        resume: ResumePoint | None = None,
        what: str = "encrypted image",
    ) -> None:
        if plaintext_length > limits.image_bytes:
            raise EndlessDataAttack(
                f"{what}: {plaintext_length} bytes, the cap is {limits.image_bytes}"
            )
        if len(content_key) != CONTENT_KEY_BYTES:
            raise KeyUnwrapFailed("a content key is 32 bytes")
        self._aead = AESGCM(content_key)
        self.plaintext_length = plaintext_length
        self.expected_ciphertext = ciphertext_length
        self.max_chunk_size = max_chunk_size
        self.what = what
        self.received = 0
        self.produced = 0
        self._header_buf = bytearray()
        self._header: Header | None = None
        self._index = 0
        self._fill = 0
        self._done = False
        if resume is not None:
            self._start(resume.header)
            self._index = resume.chunks
            self.received = resume.ciphertext_offset
            self.produced = min(resume.plaintext_offset, plaintext_length)
            if self._index > self._chunks:
                raise ValueError("resume point past the end of the stream")
            self._done = self._index == self._chunks

    def _start(self, header: bytes | bytearray) -> None:
        h = Header.parse(bytes(header), self.max_chunk_size)
        self._header, self._aad = h, bytes(header)
        self._chunks = chunk_count(self.plaintext_length, h.chunk_size)
        if self._chunks > MAX_CHUNKS:
            raise BadCiphertextHeader(f"{self.what}: too many chunks for a 32-bit counter")
        self.total = ciphertext_length(self.plaintext_length, h.chunk_size)
        if self.expected_ciphertext is not None and self.expected_ciphertext != self.total:
            raise BadCiphertextHeader(
                f"{self.what}: a {self.plaintext_length}-byte image in {h.chunk_size}-byte "
                f"chunks is {self.total} bytes encrypted, the entry says "
                f"{self.expected_ciphertext}"
            )
        self._buf = bytearray(h.chunk_size + TAG_BYTES)
        self._out = memoryview(bytearray(h.chunk_size))
        # per chunk work kept small: a chunk costs ~1 µs of Python next to ~7 µs of AES-GCM
        # for 64 KiB (bench figure 10), so these are looked up once
        self._full = h.chunk_size + TAG_BYTES
        self._prefix = h.prefix
        self._last_index = self._chunks - 1
        self._last_bytes = self.plaintext_length - self._last_index * h.chunk_size + TAG_BYTES

    def checkpoint(self) -> ResumePoint | None:
        """Where to resume after a cut (None before the header arrived)."""
        if self._header is None:
            return None
        return ResumePoint(self._aad, self._index)

    def _chunk_bytes(self) -> int:
        """Ciphertext bytes of the current chunk."""
        return self._full if self._index < self._last_index else self._last_bytes

    def _open(self, chunk: bytes | bytearray | memoryview, sink: Sink) -> None:
        index = self._index
        last = index == self._last_index
        n = len(chunk) - TAG_BYTES
        out = self._out[:n]
        nonce = _NONCE.pack(self._prefix, index, last)
        try:
            self._aead.decrypt_into(nonce, chunk, self._aad, out)
        except InvalidTag:
            raise DecryptionFailed(
                f"{self.what}: chunk {self._index} does not authenticate (altered, cut, "
                f"reordered, duplicated or from another image); nothing of it may be installed"
            ) from None
        self._index += 1
        self.produced += n
        self._done = last
        sink(out)

    def feed(self, data: bytes | bytearray | memoryview, sink: Sink) -> None:
        """Take the next ciphertext bytes; ``sink`` gets each authenticated chunk."""
        view = memoryview(data).cast("B")
        if self._header is not None and self.received + len(view) > self.total:
            raise EndlessDataAttack(f"{self.what}: more than its {self.total} encrypted bytes")
        pos = 0
        if self._header is None:
            take = min(HEADER_BYTES - len(self._header_buf), len(view))
            self._header_buf += view[:take]
            pos = take
            self.received += take
            if len(self._header_buf) < HEADER_BYTES:
                return
            self._start(self._header_buf)
            if self.received + len(view) - pos > self.total:
                raise EndlessDataAttack(f"{self.what}: more than its {self.total} encrypted bytes")
        self.received += len(view) - pos
        self._feed_chunks(view, pos, sink)

    def _feed_chunks(self, view: memoryview, pos: int, sink: Sink) -> None:
        while pos < len(view):
            need = self._chunk_bytes()
            if self._fill == 0 and len(view) - pos >= need:
                self._open(view[pos : pos + need], sink)  # whole chunk in the piece: no copy
                pos += need
                continue
            take = min(need - self._fill, len(view) - pos)
            self._buf[self._fill : self._fill + take] = view[pos : pos + take]
            self._fill += take
            pos += take
            if self._fill == need:
                self._fill = 0
                self._open(memoryview(self._buf)[:need], sink)

    @property
    def done(self) -> bool:
        """True once the last chunk authenticated."""
        return self._done

    def finish(self) -> None:
        """Require the whole stream: every chunk, the last one flagged as last."""
        if not self._done:
            got = self._index if self._header is not None else 0
            raise TruncatedCiphertext(
                f"{self.what}: the encrypted image ended after {self.received} bytes "
                f"({got} whole chunks); ask for the rest"
            )


# --- what the Director and an ECU call --------------------------------------------------------


def encrypt_image(
    target: TargetFile,
    data: bytes | bytearray | memoryview,
    recipients: Mapping[str, EncryptionPublicKey],
    *,
    filename: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    algorithms: Iterable[str] = ("sha256",),
) -> tuple[bytes, EncryptedImage]:
    """Encrypt ``target``'s image ``data`` once and wrap its key to every ECU in
    ``recipients`` (ECU id → encryption key): the ciphertext and the ``encryptedImage``
    field of the entry (set it as ``target.encrypted``). The ciphertext's name defaults to
    the image path with ``.enc``. For images too large to hold, use :class:`Encryptor`,
    :func:`wrap_key` and :func:`encrypted_entry` directly."""
    enc = Encryptor(len(data), chunk_size=chunk_size)
    ciphertext = enc.update(data) + enc.finish()
    hashes = {alg: hashlib.new(alg, ciphertext).hexdigest() for alg in algorithms}
    keys = {ecu: wrap_key(enc.content_key, pub, ecu, target) for ecu, pub in recipients.items()}
    name = filename or f"{target.path}.enc"
    return ciphertext, encrypted_entry(name, len(ciphertext), hashes, keys)


def encrypted_entry(
    filename: str, length: int, hashes: dict[str, str], keys: Mapping[str, WrappedKey]
) -> EncryptedImage:
    """The ``encryptedImage`` field for a ciphertext and its per-ECU wrapped keys."""
    return EncryptedImage(filename, length, dict(hashes), b"", METHOD, dict(keys))


def encrypted_for(target: TargetFile, ecu_id: str) -> bool:
    """Whether ``target`` is encrypted for ``ecu_id``: the Director wrapped its content key
    to that ECU. Other ECUs of an entry get the plaintext (an OEM that encrypts for some
    ECUs of a vehicle only)."""
    return target.encrypted is not None and ecu_id in target.encrypted.wrapped_keys


def transport_target(target: TargetFile, ecu_id: str) -> TargetFile:
    """What the Primary downloads and the link carries for ``ecu_id``'s entry ``target``:
    the ciphertext (its file name, length and hashes from the signed ``encryptedImage``)
    when the entry is encrypted for that ECU, else ``target`` itself. The Primary checks
    these bytes with :class:`uptane.verify.ImageVerifier` of this target, and never holds
    the key to the plaintext."""
    if not encrypted_for(target, ecu_id):
        return target
    enc = target.encrypted
    assert enc is not None
    return TargetFile(enc.filename, enc.length, dict(enc.hashes))


def decryptor_for(
    target: TargetFile,
    ecu_id: str,
    key: EncryptionPrivateKey,
    limits: Limits,
    *,
    max_chunk_size: int = MAX_CHUNK_SIZE,
    resume: ResumePoint | None = None,
) -> Decryptor:
    """A :class:`Decryptor` for this ECU's encrypted entry ``target`` (§5.4.3.4 "decrypt
    if needed"): unwraps the content key bound to this ECU and image first."""
    if target.encrypted is None:
        raise UnsupportedAlgorithm(f"target {target.path!r} is not encrypted")
    content_key = unwrap_key(target.encrypted, ecu_id, target, key)
    return Decryptor(
        content_key,
        target.length,
        limits,
        ciphertext_length=target.encrypted.length,
        max_chunk_size=max_chunk_size,
        resume=resume,
        what=f"encrypted image {target.path!r}",
    )


def decrypt_image(
    target: TargetFile,
    ecu_id: str,
    key: EncryptionPrivateKey,
    ciphertext: bytes,
    limits: Limits,
) -> bytes:
    """Decrypt a whole ciphertext held in memory (tests, small images)."""
    out = bytearray()
    dec = decryptor_for(target, ecu_id, key, limits)
    dec.feed(ciphertext, out.extend)
    dec.finish()
    return bytes(out)


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "KEY_SCHEME",
    "KEY_TYPE",
    "METHOD",
    "Decryptor",
    "EncryptionPrivateKey",
    "EncryptionPublicKey",
    "Encryptor",
    "Header",
    "ResumePoint",
    "ciphertext_length",
    "decrypt_image",
    "decryptor_for",
    "encrypt_image",
    "encrypted_entry",
    "encrypted_for",
    "transport_target",
    "unwrap_key",
    "wrap_info",
    "wrap_key",
]

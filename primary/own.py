"""The Primary's own A/B slots, as one more delivery target (§5.4.2 step 6 for itself).

The same slot interface as the Secondaries (:class:`hardware.slots.SlotManager` over
:class:`hardware.flash.Flash`, imported only when the Primary has slots): the image is
streamed into the inactive slot through :class:`uptane.inbound.InboundImage` (a delta is
applied to the running image, an image encrypted for the Primary decrypted with its
encryption key; issue 17) and the full image's verifier, read back, booted as a trial and
confirmed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from primary.config import ConfigError, PrimaryConfig
from storage import LOCAL, FileSystem, read_capped
from uptane.delta import produced_image
from uptane.encryption import EncryptionPrivateKey
from uptane.errors import UptaneError
from uptane.inbound import InboundImage
from uptane.limits import Limits
from uptane.metadata import TargetFile

if TYPE_CHECKING:
    from hardware.slots import ImageInfo, SlotManager


def encryption_key_path(config: PrimaryConfig) -> Path | None:
    """Where ``[primary] encryption_key`` puts the Primary's encryption key, or None."""
    if config.encryption_key is None:
        return None
    return config.path.parent / config.encryption_key


def load_encryption_key(config: PrimaryConfig) -> EncryptionPrivateKey | None:
    """The Primary's encryption key (issue 17), or None when it has none (yet)."""
    path = encryption_key_path(config)
    if path is None or not path.exists():
        return None
    try:
        return EncryptionPrivateKey.from_pem(read_capped(path, 4096))
    except (OSError, UptaneError) as e:
        raise ConfigError(f"encryption key {path}: {e}") from None


class OwnSlots:
    """The Primary's slots in ``directory`` (``slot_size`` bytes each when new), written
    through ``fs``."""

    def __init__(
        self,
        directory: Path,
        slot_size: int,
        limits: Limits,
        *,
        fs: FileSystem = LOCAL,
        ecu_id: str = "",
        encryption_key: EncryptionPrivateKey | None = None,
    ) -> None:
        self.directory = directory
        self.slot_size = slot_size
        self.limits = limits
        self.fs = fs
        #: the Primary's ECU id and encryption key (for an image encrypted for it)
        self.ecu_id = ecu_id
        self.encryption_key = encryption_key

    def open(self) -> SlotManager:
        """The slots as the device has them now (a fresh read of the boot record)."""
        from hardware.flash import Flash
        from hardware.slots import SlotManager

        flash = Flash(self.directory, self.slot_size, fs=self.fs)
        return SlotManager(flash, limits=self.limits)

    def installed(self) -> ImageInfo | None:
        """What the Primary's own boot record says it runs."""
        return self.open().status().installed

    def holds(self, target: TargetFile) -> tuple[SlotManager, bool]:
        """The slots after a boot, and whether they already run ``target``."""
        slots = self.open()
        slots.boot()
        return slots, produced_image(target).same_image(slots.status().installed)

    def install(self, slots: SlotManager, target: TargetFile, image: Path) -> None:
        """Stream ``image`` (what was downloaded for ``target``: the image, a delta, a
        ciphertext) into the inactive slot as the full image, through its verifier, then
        the simulated reboot into the new slot, confirmed once it runs."""
        st = slots.status()
        running = st.booted if st.booted is not None else st.active

        def read_base(offset: int, length: int) -> bytes:
            return slots.flash.read(running, offset, length)

        stream = InboundImage(
            target,
            self.ecu_id,
            self.limits,
            key=self.encryption_key,
            installed=st.installed,
            read_base=read_base,
        )
        writer = slots.begin_install(stream.image.length, stream.image)
        try:
            with image.open("rb") as f:
                while chunk := f.read(self.limits.chunk_size):
                    stream.feed(chunk, writer.write)
            stream.complete()
        except UptaneError as e:
            slots.abort_install(f"image refused: {e.message}")
            raise
        slots.finish_install(writer, stream.verifier)
        slots.boot()
        slots.confirm()


__all__ = ["OwnSlots"]

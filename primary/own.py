"""The Primary's own A/B slots, as one more delivery target (§5.4.2 step 6 for itself).

The same slot interface as the Secondaries (:class:`hardware.slots.SlotManager` over
:class:`hardware.flash.Flash`, imported only when the Primary has slots): the image is
streamed into the inactive slot through the core's image verifier, read back, booted as a
trial and confirmed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from storage import LOCAL, FileSystem
from uptane.limits import Limits
from uptane.metadata import TargetFile
from uptane.verify import ImageVerifier

if TYPE_CHECKING:
    from hardware.slots import ImageInfo, SlotManager


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
    ) -> None:
        self.directory = directory
        self.slot_size = slot_size
        self.limits = limits
        self.fs = fs

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
        return slots, target.same_image(slots.status().installed)

    def install(self, slots: SlotManager, target: TargetFile, image: Path) -> None:
        """Stream ``image`` into the inactive slot through the verifier, then the
        simulated reboot into the new slot, confirmed once it runs."""
        writer = slots.begin_install(target.length, target)
        verifier = ImageVerifier(target, self.limits)
        with image.open("rb") as f:
            while chunk := f.read(self.limits.chunk_size):
                verifier.update(chunk)
                writer.write(chunk)
        slots.finish_install(writer, verifier)
        slots.boot()
        slots.confirm()


__all__ = ["OwnSlots"]

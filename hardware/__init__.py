"""hardware package of the Uptane stack: the Primary/bench <-> Secondary link and the
device simulators.

Link (see ``docs/link-protocol.md``): :mod:`hardware.messages` (typed CBOR messages),
:mod:`hardware.protocol` (sans-I/O endpoints and the ``SecondaryHandler`` interface),
:mod:`hardware.serial_link` (COBS/CRC-32 frames, reliable delivery, pyserial transport),
:mod:`hardware.can_link` (ISO-TP over python-can), :mod:`hardware.client` (``LinkClient``)
and :mod:`hardware.server` (the Secondary's serve loop).
"""

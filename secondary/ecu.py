"""Who a Secondary is and how it reads metadata: the settings every part of the agent
shares (identity, encoding, bounds, repository names)."""

from __future__ import annotations

from dataclasses import dataclass, field

from uptane.codec import Codec, codec_for
from uptane.errors import MalformedInput
from uptane.limits import Limits


@dataclass(frozen=True)
class EcuSettings:
    """This ECU's identity and reading rules (from :class:`secondary.config.SecondaryConfig`
    or the agent's constructor)."""

    ecu_serial: str
    hardware_id: str
    vehicle_id: str | None
    encoding: str
    limits: Limits
    director_name: str = "director"
    image_repo_name: str = "image"
    #: the codec of ``encoding`` (MalformedInput when no codec has that name)
    codec: Codec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "codec", codec_for(self.encoding))

    def check_encoding(self, encoding: str) -> None:
        """Refuse metadata in any other encoding than this ECU reads (MalformedInput)."""
        sent = codec_for(encoding)
        if sent is not self.codec:
            raise MalformedInput(f"this ECU reads {self.codec.name} metadata, not {sent.name}")

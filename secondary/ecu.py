"""Who a Secondary is and how it reads metadata: the settings every part of the agent
shares (identity, encoding, bounds, repository names)."""

from __future__ import annotations

from dataclasses import dataclass

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

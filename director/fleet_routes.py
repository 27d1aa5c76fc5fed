"""The admin API of the fleet: registering vehicles one by one or in bulk, the listings
that grow with it (vehicles, assignments, attacks: in pages, :mod:`director.paging`),
campaigns and saved groups (OpenAPI tags ``admin``, ``campaigns`` and ``groups``). Added to
the Director's app by :func:`director.director_server.create_app`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Request, Response
from pydantic import BaseModel, Field

from director.admin_routes import CertificateIn
from director.bulk import BulkRegistration
from director.campaigns import MAX_SOAK, MAX_WAVES, CampaignSpec
from director.campaignview import OUTCOMES
from director.common import Invalid
from director.director import Director
from director.httpcommon import request_id_of
from director.paging import Page, old_shape
from director.serving import Route, Serving
from director.tokens import CAMPAIGN, KEYS, READ

Vin = Annotated[str, Field(max_length=64)]


class EcuIn(BaseModel):
    serial: str = Field(max_length=128, description="the ECU identifier")
    hardware_id: str = Field(max_length=128)
    public_key: dict[str, Any] = Field(description="TUF key: keytype, scheme, keyval.public")
    primary: bool = False
    encryption_key: dict[str, Any] | None = Field(
        None, description="its X25519 encryption key (keytype x25519), as provisioning prints it"
    )


class VehicleIn(BaseModel):
    vin: str = Field(max_length=64)
    ecus: list[EcuIn] = Field(max_length=256)
    client_certificate: CertificateIn | None = Field(
        None,
        description="bind a client certificate at registration (mutual TLS): a request"
        " (csr) the vehicle CA issues, or a certificate of the OEM's PKI",
    )


class WaveIn(BaseModel):
    """One wave: a share of the selected ECUs, or a number of them (exactly one)."""

    percent: float | None = Field(None, gt=0, le=100)
    count: int | None = Field(None, ge=1, le=10_000_000)


class CampaignIn(BaseModel):
    target: str = Field(max_length=4096, description="target path in the Image repository")
    hardware_id: str | None = Field(None, max_length=128, description="select ECUs by hardware")
    vins: list[Vin] | None = Field(None, max_length=100_000, description="select vehicles")
    group: str | None = Field(None, max_length=64, description="select a saved group")
    waves: list[WaveIn] | None = Field(
        None, max_length=MAX_WAVES, description="in order; the last takes the rest"
    )
    soak_seconds: int = Field(0, ge=0, le=MAX_SOAK, description="wait after a wave is done")
    failure_threshold: float = Field(
        0.1, ge=0, le=1, description="halt when more than this share of a wave failed"
    )
    force: bool = Field(False, description="allow downgrades (the ECUs' rollback checks stay)")
    name: str | None = Field(None, max_length=128)


class GroupIn(BaseModel):
    name: str = Field(max_length=64)
    vins: list[Vin] = Field(default_factory=list, max_length=100_000)


class VinsIn(BaseModel):
    vins: list[Vin] = Field(max_length=100_000)


def _spec(body: CampaignIn) -> CampaignSpec:
    waves = None
    if body.waves is not None:
        waves = []
        for w in body.waves:
            if (w.percent is None) == (w.count is None):
                raise Invalid('a wave is {"percent": P} or {"count": N}, exactly one')
            waves.append({"percent": w.percent} if w.percent is not None else {"count": w.count})
    return CampaignSpec(
        target=body.target,
        hardware_id=body.hardware_id,
        vins=body.vins,
        group=body.group,
        waves=waves,  # type: ignore[arg-type]
        soak_seconds=body.soak_seconds,
        failure_threshold=body.failure_threshold,
        force=body.force,
        name=body.name,
    )


def campaign_routes(route: Route, d: Director) -> None:
    """Campaigns: create (the first wave goes out at once), read with statistics, members,
    pause, resume, cancel (``route``: :meth:`director.serving.Serving.route` on the app:
    under ``/api/v1``, the scope checked)."""
    tags: list[str | Any] = ["campaigns"]

    @route("POST", "/campaigns", CAMPAIGN, status_code=201, tags=tags)
    def create_campaign(body: CampaignIn) -> Any:
        """Select ECUs (hardware id, VINs, group: all that are given must hold), split
        them in waves and send the first; the answer lists the assignments made and the
        ECUs skipped (in another active campaign, or refused)."""
        return d.campaign(_spec(body))

    @route("GET", "/campaigns", READ, tags=tags)
    def list_campaigns() -> Any:
        return d.campaigns.list_campaigns()

    @route("GET", "/campaigns/{cid}", READ, tags=tags)
    def get_campaign(cid: int) -> Any:
        """State, reason, and per wave and in total the members by outcome."""
        return d.campaigns.get(cid)

    @route("GET", "/campaigns/{cid}/vehicles", READ, tags=tags)
    def campaign_members(
        request: Request,
        cid: int,
        wave: int | None = None,
        state: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Any:
        """Each member: VIN, ECU, wave, outcome, and what the ECU reports running (pages:
        ``{"items": [...], "next": cursor or null}``)."""
        if state is not None and state not in OUTCOMES:
            raise Invalid(f"state is one of {list(OUTCOMES)}")
        if old_shape(request, limit, after):
            return d.campaigns.members(cid, wave=wave, state=state)
        page = Page.of(d.config, f"campaign-{cid}-members", limit, after)
        return d.campaigns.members(cid, wave=wave, state=state, page=page)

    @route("POST", "/campaigns/{cid}/pause", CAMPAIGN, tags=tags)
    def pause_campaign(cid: int) -> Any:
        """No further wave goes out; what was sent carries on."""
        return d.campaigns.pause(cid)

    @route("POST", "/campaigns/{cid}/resume", CAMPAIGN, tags=tags)
    def resume_campaign(cid: int) -> Any:
        """Carry on after a pause or a halt (a halted wave's failures are accepted)."""
        return d.campaigns.resume(cid)

    @route("POST", "/campaigns/{cid}/cancel", CAMPAIGN, tags=tags)
    def cancel_campaign(cid: int) -> Any:
        """Cancel what was not sent, withdraw what is in flight (targets without the
        image), keep what was installed."""
        return d.campaigns.cancel(cid)


def group_routes(route: Route, d: Director) -> None:
    """Saved groups of vehicles, for campaigns."""
    tags: list[str | Any] = ["groups"]

    @route("POST", "/groups", CAMPAIGN, status_code=201, tags=tags)
    def create_group(body: GroupIn) -> Any:
        return d.groups.create(body.name, body.vins)

    @route("GET", "/groups", READ, tags=tags)
    def list_groups() -> Any:
        return d.groups.list_groups()

    @route("GET", "/groups/{name}", READ, tags=tags)
    def show_group(name: str) -> Any:
        return d.groups.show(name)

    @route("POST", "/groups/{name}/vehicles", CAMPAIGN, tags=tags)
    def add_to_group(name: str, body: VinsIn) -> Any:
        return d.groups.add(name, body.vins)

    @route("DELETE", "/groups/{name}/vehicles/{vin}", CAMPAIGN, tags=tags)
    def remove_from_group(name: str, vin: str) -> Any:
        return d.groups.remove(name, vin)

    @route("DELETE", "/groups/{name}", CAMPAIGN, tags=tags)
    def delete_group(name: str) -> Any:
        return d.groups.delete(name)


def listing_routes(route: Route, d: Director) -> None:
    """Vehicles, assignments and reported attacks, a page at a time: ``?limit=`` rows
    (default ``page_limit``), then ``?after=`` the answer's ``next``. The deprecated paths
    (``/api/vehicles``) answer the whole list, as they always did, unless paged."""

    @route("GET", "/vehicles", READ)
    def list_vehicles(request: Request, limit: int | None = None, after: str | None = None) -> Any:
        """Vehicles in registration order: ``{"items": [...], "next": cursor or null}``."""
        if old_shape(request, limit, after):
            return d.list_vehicles()
        return d.fleet.page_vehicles(Page.of(d.config, "vehicles", limit, after))

    @route("GET", "/assignments", READ)
    def list_assignments(
        request: Request,
        vin: str | None = None,
        state: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Any:
        """Assignments, oldest first, of one vehicle or in one state (pages)."""
        if old_shape(request, limit, after):
            return d.list_assignments(vin=vin, state=state)
        page = Page.of(d.config, "assignments", limit, after)
        return d.fleet.page_assignments(page, vin=vin, state=state)

    @route("GET", "/attacks", READ)
    def attacks(
        request: Request, vin: str | None = None, limit: int | None = None, after: str | None = None
    ) -> Any:
        """Attacks that ECUs reported in their version reports, oldest first (pages)."""
        if old_shape(request, limit, after):
            return d.list_attacks(vin=vin)
        return d.fleet.page_attacks(Page.of(d.config, "attacks", limit, after), vin=vin)


def bulk_routes(route: Route, d: Director, s: Serving) -> None:
    """Many vehicles in one request (:mod:`director.bulk`)."""

    @route("POST", "/vehicles/bulk", KEYS, status_code=201)
    def register_vehicles(body: list[VehicleIn], request: Request, response: Response) -> Any:
        """Register many vehicles (at most ``bulk_max_vehicles``, 413 above), each as
        ``POST /vehicles`` takes it but for its client certificate. Every vehicle is checked
        first: one bad vehicle refuses the request (422; a VIN registered with other ECUs or
        keys: 409), naming each by index and reason, and nothing is registered. A VIN
        registered with exactly these ECUs and keys is skipped and listed (201, or 200 when
        nothing was new). One audit row for the request, with the counts."""
        cap = d.config.bulk_max_vehicles
        items = [v.model_dump() for v in body] if len(body) <= cap else body
        done = BulkRegistration(d.fleet).register(items, cap=cap)
        if not done["registered"]:
            response.status_code = 200
        s.audit.note(
            request_id_of(request),
            {k: done[k] if k != "skipped" else len(done[k]) for k in done},
        )
        return done


__all__ = [
    "EcuIn",
    "VehicleIn",
    "bulk_routes",
    "campaign_routes",
    "group_routes",
    "listing_routes",
]

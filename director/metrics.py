"""Prometheus metrics of both services at ``GET /metrics`` (issue 19), with
``prometheus-client``; each app has its own registry (a process may run several apps).

- ``uptane_http_requests_total{service,route,method,status}``: requests by route
  template (never a VIN) and status; ``uptane_http_request_seconds{service,route}``:
  their latency;
- ``uptane_manifest_seconds``: a vehicle manifest's processing, decode to durable commit;
- ``uptane_manifests_refused_total{attack}``: manifests refused, by the core's attack name
  (``invalid``: values refused, ``not-found``: an unknown vehicle, ``conflict``);
- ``uptane_group_commit_batch_size``: manifests per durable commit (buckets 1 to 64);
- ``uptane_metadata_cache_total{result}``: per-vehicle metadata answered from memory
  (``hit``) or after a lookup (``miss``): the hit rate is hit / (hit + miss);
- ``uptane_campaigns{state}``, ``uptane_campaign_members{campaign,outcome}``: campaign
  progress (members of the campaigns not ended);
- ``uptane_vehicle_refused_total{reason}``: vehicle requests refused by the client
  certificate binding (``none``, ``unknown``, ``revoked``, ``expired``, ``other-vehicle``);
- ``uptane_cluster_invalidations_total``: cache entries dropped on a notice (PostgreSQL
  LISTEN/NOTIFY).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64)


class ServiceMetrics:
    """The HTTP metrics every service has, in a registry of its own."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "uptane_http_requests",
            "HTTP requests by route template and status",
            ["service", "route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "uptane_http_request_seconds",
            "HTTP request latency",
            ["service", "route"],
            buckets=_LATENCY,
            registry=self.registry,
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(self.service, route, method, str(status)).inc()
        self.latency.labels(self.service, route).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class DirectorMetrics(ServiceMetrics):
    """The Director's own metrics beside the HTTP ones."""

    def __init__(self) -> None:
        super().__init__("director")
        r = self.registry
        self.manifest_seconds = Histogram(
            "uptane_manifest_seconds",
            "vehicle manifest processing, decode to durable commit",
            buckets=_LATENCY,
            registry=r,
        )
        self.refused = Counter(
            "uptane_manifests_refused", "manifests refused, by attack name", ["attack"], registry=r
        )
        self.cache = Counter(
            "uptane_metadata_cache",
            "per-vehicle metadata requests answered from memory (hit) or after a lookup (miss)",
            ["result"],
            registry=r,
        )
        self.vehicle_refused = Counter(
            "uptane_vehicle_refused",
            "vehicle requests refused by the client-certificate binding",
            ["reason"],
            registry=r,
        )
        self.invalidations = Counter(
            "uptane_cluster_invalidations",
            "cache entries dropped on another node's notice",
            registry=r,
        )
        for result in ("hit", "miss"):
            self.cache.labels(result)

    def watch(
        self,
        batch_sizes: Callable[[], dict[int, int]],
        campaigns: Callable[[], tuple[dict[str, int], dict[tuple[int, str], int]]],
    ) -> None:
        """Export the group commit's batch sizes and campaign progress, read at scrape
        time from the callables given."""
        self.registry.register(_Scraped(batch_sizes, campaigns))


class _Scraped(Collector):
    """Metrics computed when scraped: group-commit batch sizes (from the writer's own
    counts) and campaign progress (one query)."""

    def __init__(
        self,
        batch_sizes: Callable[[], dict[int, int]],
        campaigns: Callable[[], tuple[dict[str, int], dict[tuple[int, str], int]]],
    ) -> None:
        self.batch_sizes = batch_sizes
        self.campaigns = campaigns

    def describe(self) -> list[Any]:
        return []  # computed at scrape time: nothing to check at registration

    def collect(self) -> Iterator[Any]:
        sizes = dict(self.batch_sizes())
        buckets = [
            (str(bound), float(sum(n for size, n in sizes.items() if size <= bound)))
            for bound in _BATCH
        ]
        total = sum(sizes.values())
        buckets.append(("+Inf", float(total)))
        yield HistogramMetricFamily(
            "uptane_group_commit_batch_size",
            "manifests per durable commit",
            buckets=buckets,
            sum_value=float(sum(size * n for size, n in sizes.items())),
        )
        try:
            states, members = self.campaigns()
        except Exception:  # the database is away: the other metrics still come
            return
        g = GaugeMetricFamily("uptane_campaigns", "campaigns by state", labels=["state"])
        for state, n in sorted(states.items()):
            g.add_metric([state], n)
        yield g
        m = GaugeMetricFamily(
            "uptane_campaign_members",
            "members of campaigns not ended, by outcome",
            labels=["campaign", "outcome"],
        )
        for (cid, outcome), n in sorted(members.items()):
            m.add_metric([str(cid), outcome], n)
        yield m


def campaign_progress(engine: Any) -> tuple[dict[str, int], dict[tuple[int, str], int]]:
    """Campaigns by state, and the members of those not ended by outcome (a member sent
    out takes its assignment's state), in two queries."""
    import sqlalchemy as sa

    from director import inventory as inv

    c, m, a = inv.campaigns, inv.campaign_members, inv.assignments
    outcome = sa.func.coalesce(a.c.state, m.c.state)
    with engine.connect() as conn:
        states = {
            s: int(n)
            for s, n in conn.execute(sa.select(c.c.state, sa.func.count()).group_by(c.c.state))
        }
        rows = conn.execute(
            sa.select(m.c.campaign_id, outcome, sa.func.count())
            .select_from(
                m.join(c, c.c.id == m.c.campaign_id).outerjoin(a, a.c.id == m.c.assignment_id)
            )
            .where(c.c.state.in_(("running", "paused", "halted")))
            .group_by(m.c.campaign_id, outcome)
        ).all()
    return states, {(int(cid), str(o)): int(n) for cid, o, n in rows}


__all__ = ["CONTENT_TYPE", "DirectorMetrics", "ServiceMetrics", "campaign_progress"]

"""GET /metrics: Prometheus text format (prometheus-client), request counters and latency histograms from every
gunicorn worker (multiprocess mode, see service/observability.py) and, read from the database at scrape time, the
outbox depth, held and dead-letter jobs, and the FHIR projection lag.

Who may scrape: addresses in ``KAPFHIR_METRICS_ALLOW`` (comma-separated networks, default loopback only); others get
404, as if there were no such page. ``KAPFHIR_METRICS_ALLOW=none`` turns the page off. The page needs no token (a
scraper has none) and shows no patient data: counts and timings only.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, abort, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from service import observability
from service.adapters import orm
from service.entrypoints.routes import TEXT, Route, route

log = logging.getLogger("kapfhir.metrics")

bp = Blueprint("metrics", __name__)
DEFAULT_ALLOW = "127.0.0.0/8,::1/128"


def allowed_networks(value: str | None = None) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    value = os.environ.get("KAPFHIR_METRICS_ALLOW", DEFAULT_ALLOW) if value is None else value
    if value.strip().lower() in ("", "none", "off"):
        return []
    return [ipaddress.ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip()]


class DatabaseCollector(Collector):
    """Read at scrape time, so every worker answers the same: the database is the one shared state."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self.app.extensions["kapfhir"]
        jobs = GaugeMetricFamily("kapfhir_sync_jobs", "Outbox sync jobs by status (queued is the outbox depth)",
                                 labels=["status"])  # fmt: skip
        lag = GaugeMetricFamily(
            "kapfhir_fhir_projection_lag_episodes", "Episodes whose FHIR projection is older than their records"
        )
        up = GaugeMetricFamily("kapfhir_database_up", "1 when the database answered this scrape")
        try:
            from service.fhir.projection import stale_episodes

            with state.session_factory() as session:
                t = orm.sync_jobs
                counts = dict(session.execute(select(t.c.status, func.count()).group_by(t.c.status)).all())  # type: ignore[arg-type]
                clinics = list(session.execute(select(orm.clinics.c.id)).scalars())
                stale = sum(len(stale_episodes(session, clinic)) for clinic in clinics)
        except Exception as exc:  # noqa: BLE001 - a scrape reports the database down instead of failing
            log.warning("metrics: database not readable", extra={"error_class": type(exc).__name__})
            up.add_metric([], 0)
            yield up
            return
        for status in ("queued", "held", "dead", "delivered"):
            jobs.add_metric([status], counts.get(status, 0))
        lag.add_metric([], stale)
        up.add_metric([], 1)
        yield from (jobs, lag, up)


def _registry(app: Flask) -> CollectorRegistry:
    registry = app.extensions.get("kapfhir.metrics_registry")
    if registry is None:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = CollectorRegistry()
            for collector in (observability.REQUESTS, observability.LATENCY, observability.AUDIT_BATCH_SECONDS,
                              observability.AUDIT_BATCH_RECORDS):  # fmt: skip
                registry.register(collector)
        registry.register(DatabaseCollector(app))
        app.extensions["kapfhir.metrics_registry"] = registry
    return registry


@route(
    bp,
    "/metrics",
    "GET",
    Route(
        "Prometheus metrics (from KAPFHIR_METRICS_ALLOW networks only; 404 elsewhere)",
        response=TEXT,
        media="text/plain",
        public=True,
    ),
    endpoint="metrics",
)
def metrics() -> Response:
    address = ipaddress.ip_address(request.remote_addr or "0.0.0.0")  # noqa: S104 - an address to check, not a bind
    if not any(address in network for network in current_app.extensions["kapfhir.metrics_allow"]):
        abort(404)
    return Response(generate_latest(_registry(current_app)), content_type=CONTENT_TYPE_LATEST)


def _observe(response: Response) -> Response:
    rule = request.url_rule.rule if request.url_rule else "(unmatched)"
    started = g.get("metrics_started")
    observability.REQUESTS.labels(request.method, rule, str(response.status_code)).inc()
    if started is not None:
        observability.LATENCY.labels(request.method, rule).observe(time.perf_counter() - started)
    return response


def _start() -> None:
    g.metrics_started = time.perf_counter()


def init_app(app: Flask) -> None:
    """Register before authentication, so that refused requests are timed too."""
    app.extensions["kapfhir.metrics_allow"] = allowed_networks()
    app.register_blueprint(bp)
    app.before_request(_start)
    app.after_request(_observe)

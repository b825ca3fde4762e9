"""Flask application factory."""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request
from sqlalchemy import text

from service.adapters import repository
from service.adapters.database import make_engine, make_session_factory
from service.adapters.migrations import current_revision, head_revision
from service.config import Settings
from service.entrypoints import (
    api,
    auth,
    fhir_api,
    fhir_measures,  # noqa: F401 - nests /fhir/Measure in the /fhir blueprint
    metrics,
    pages,
    rate_limits,
    tracing,
    views,
)
from service.entrypoints.http import (
    AppState,
    json_response,
    problem_response,
    refuse_unstorable_input,
    register_error_handlers,
    request_id,
)
from service.entrypoints.logs import configure_logging
from service.fhir.projector import FhirProjector
from service.service_layer.audit_log import GroupCommitAuditLog, RefusalAggregator
from service.service_layer.unit_of_work import install_projector

log = logging.getLogger("kapfhir.request")


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    install_projector(FhirProjector())  # the FHIR projection follows every command's unit of work
    repository.DECODED.resize(settings.decoded_records)
    engine = make_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    app.extensions["kapfhir"] = AppState(
        settings=settings,
        session_factory=session_factory,
        audit_log=GroupCommitAuditLog(session_factory),
        refusals=RefusalAggregator(session_factory),
    )
    app.extensions["kapfhir.engine"] = engine
    register_error_handlers(app)
    metrics.init_app(app)  # before authentication: refused requests are counted and timed too
    app.register_blueprint(api.bp)
    app.register_blueprint(fhir_api.bp)
    app.register_blueprint(views.bp)
    app.register_blueprint(pages.bp)

    @app.get("/healthz")
    def healthz() -> Response:  # declared in service.entrypoints.routes (HEALTH_ROUTE)
        return json_response({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:  # declared in service.entrypoints.routes (READY_ROUTE)
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
                current = current_revision(connection)
        except Exception as exc:  # noqa: BLE001 - any failure to reach the database means not ready
            log.warning("database not reachable", extra={"error_class": type(exc).__name__})
            return problem_response(503, "Not ready", "The database is not reachable.")
        head = head_revision()
        if current != head:
            return problem_response(
                503, "Not ready", f"Database schema at {current}, code expects {head}: run 'kapfhir db upgrade'."
            )
        return json_response({"status": "ready", "database": "reachable", "schema_revision": current})

    @app.before_request
    def _start() -> None:
        g.request_id = request_id()
        g.started = time.perf_counter()

    limiter = rate_limits.RequestLimits.from_settings(settings, engine)
    app.before_request(limiter.check_address)  # before authentication: floods never reach the token check
    app.before_request(refuse_unstorable_input)

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        # HTML pages (pages.py, views.py) set their own policy, to load their scripts and styles.
        response.headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
        response.headers["X-Frame-Options"] = "DENY"
        # Route template, never the concrete path: ids in paths are patient data.
        rule = request.url_rule.rule if request.url_rule else "(unmatched)"
        who = g.get("principal")
        log.info(
            "request",
            extra={
                "request_id": g.get("request_id"),
                "method": request.method,
                "route": rule,
                "status": response.status_code,
                "latency_ms": round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 2),
                "client_id": who.client_id if who else None,
                "clinic_id": who.clinic_id if who else None,
            },
        )
        return response

    auth.init_app(app, auth.build_runtime(settings.security, engine, settings.base_url))
    app.before_request(limiter.check_client)  # after authentication: keyed on (clinic, client)
    tracing.init_app(app)  # off unless OTEL_* variables ask for it
    return app

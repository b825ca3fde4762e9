"""Optional OpenTelemetry traces: one server span per request, off unless the standard variables ask for it.

On when ``OTEL_TRACES_EXPORTER`` is ``otlp`` or ``console``, or when ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, and ``OTEL_SDK_DISABLED`` is not ``true``; the OTLP exporter reads
its own ``OTEL_EXPORTER_OTLP_*`` variables, ``OTEL_SERVICE_NAME`` names the service (default ``kapfhir``). Needs the
``otel`` extra (``pip install 'kapfhir[otel]'``): without it, asking for traces logs a warning and serves on.

Spans are named by route template and carry only method, route template and status: never a concrete path or
query (ids and identifiers in them are patient data). An incoming ``traceparent`` is continued.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, request

log = logging.getLogger("kapfhir.tracing")


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return exporter in ("otlp", "console") or bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def _exporter(environ: Mapping[str, str]) -> Any:
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def init_app(app: Flask, *, exporter: Any = None, environ: Mapping[str, str] | None = None) -> bool:
    """Trace this app's requests when asked to (or when a test hands an ``exporter``). True when tracing is on."""
    environ = os.environ if environ is None else environ
    if exporter is None and not wanted(environ):
        return False
    try:
        from opentelemetry import propagate, trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        log.warning("OTEL_* variables ask for traces but the otel extra is not installed: pip install 'kapfhir[otel]'")
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", "kapfhir")}))
    # A test's exporter sees each span as it ends; a real one gets them in batches, off the request thread.
    provider.add_span_processor(SimpleSpanProcessor(exporter) if exporter else BatchSpanProcessor(_exporter(environ)))
    tracer = provider.get_tracer("kapfhir")
    app.extensions["kapfhir.tracer_provider"] = provider

    def start() -> None:
        # The route is known before the view runs; the span is renamed with it.
        context = propagate.extract({name.lower(): value for name, value in request.headers.items()})
        span = tracer.start_span(request.method, context=context, kind=trace.SpanKind.SERVER)
        g.otel_span = span

    def finish(response: Response) -> Response:
        span = g.pop("otel_span", None)
        if span is not None:
            route = request.url_rule.rule if request.url_rule else "(unmatched)"
            span.update_name(f"{request.method} {route}")
            span.set_attribute("http.request.method", request.method)
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(trace.Status(trace.StatusCode.ERROR))
            span.end()
        return response

    app.before_request_funcs.setdefault(None, []).insert(0, start)  # first: the whole request is inside the span
    app.after_request(finish)
    return True

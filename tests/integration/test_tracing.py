"""Optional OpenTelemetry traces: off by default; when on, one server span per request named by route template,
continuing an incoming traceparent, with no concrete path (ids are patient data)."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.entrypoints import tracing
from tests.support.app import Api, make_app
from tests.support.seed import seed_episode


def test_off_unless_the_standard_variables_ask():
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_SERVICE_NAME": "kapfhir"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"})


def test_an_app_has_no_tracer_by_default(sqlite_url: str, monkeypatch):
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert "kapfhir.tracer_provider" not in make_app(sqlite_url).extensions


def test_one_span_per_request_by_route_template_without_ids(sqlite_url: str):
    app = make_app(sqlite_url)
    exported = InMemorySpanExporter()
    assert tracing.init_app(app, exporter=exported, environ={})
    api = Api(app.test_client())
    ids = seed_episode(api)
    exported.clear()
    parent_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    answer = api.get(f"/episodes/{ids['episode']}", headers={"traceparent": f"00-{parent_trace}-00f067aa0ba902b7-01"})
    assert answer.status_code == 200
    (span,) = exported.get_finished_spans()
    assert span.name == "GET /api/v1/episodes/<episode_id>"
    assert span.attributes["http.route"] == "/api/v1/episodes/<episode_id>"
    assert span.attributes["http.response.status_code"] == 200
    assert format(span.context.trace_id, "032x") == parent_trace
    assert ids["episode"] not in str(dict(span.attributes)) + span.name

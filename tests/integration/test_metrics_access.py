"""Who may read /metrics: loopback by default, the networks of KAPFHIR_METRICS_ALLOW, nobody with `none`."""

from __future__ import annotations

import pytest
from flask import Flask

from service.entrypoints.metrics import allowed_networks
from tests.support.app import make_app


@pytest.fixture
def app(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.delenv("KAPFHIR_METRICS_ALLOW", raising=False)
    return make_app(sqlite_url)


def _scrape(app: Flask, address: str) -> int:
    return app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": address}).status_code


def test_loopback_reads_metrics_without_a_token_and_others_get_404(app: Flask):
    assert _scrape(app, "127.0.0.1") == 200
    assert _scrape(app, "::1") == 200
    assert _scrape(app, "10.1.2.3") == 404
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert "kapfhir_sync_jobs" in text and "kapfhir_database_up 1.0" in text


def test_the_allow_list_names_networks(sqlite_url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KAPFHIR_METRICS_ALLOW", "10.0.0.0/8, 127.0.0.1")
    app = make_app(sqlite_url)
    assert _scrape(app, "10.1.2.3") == 200 and _scrape(app, "192.168.1.1") == 404
    monkeypatch.setenv("KAPFHIR_METRICS_ALLOW", "none")
    off = make_app(sqlite_url)
    assert _scrape(off, "127.0.0.1") == 404


def test_allowed_networks_parses_the_variable():
    assert [str(n) for n in allowed_networks("127.0.0.0/8,::1/128")] == ["127.0.0.0/8", "::1/128"]
    assert allowed_networks("off") == []
    with pytest.raises(ValueError):
        allowed_networks("not-a-network")

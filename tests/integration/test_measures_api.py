"""Measures over the fixture episodes, through /fhir ($evaluate-measure, $validate) and /api/v1/outcomes, and the
signed links of the HTML pages (opened, expired, another clinic's), on SQLite and PostgreSQL.

Expected figures, worked out from fixtures/episodes (index = first elevated score):
- a-trd-iv-ketamine (depression): PHQ-9 20 on 2026-01-12, first response 8 on 2026-02-02 (21 days; completed
  dosing sessions started by then: 01-19, 01-22, 01-26, 01-29, 02-02 08:45 -> 5). The test adds a PHQ-9 of 3 on
  2026-06-01, day 140: follow-up, response (3 <= 10) and remission (3 < 5) at 4-8 months; not in CMS159's
  305-425 days.
- c-esketamine-rems (depression): PHQ-9 17 on 2026-08-03, first response 7 on 2026-08-31 (28 days; sessions 08-10,
  08-13, 08-17, 08-20, 08-24, 08-27, 08-31 09:00 -> 7); no follow-up 120-240 days later.
  PHQ-9 4-8 months: population 2, follow-up 1, response 1, remission 1 (0.5 each); 12 months: 0 of 2.
  Time to first response: median days (21 + 28) / 2 = 24.5, median sessions (5 + 7) / 2 = 6.
- b-ptsd-im-ketamine (PTSD): PCL-5 52 on 2026-05-04, 23 on 2026-06-01 (a 29-point drop, 28 days).
- d-gad-home-sublingual (anxiety): GAD-7 17 on 2026-09-08, first <= 8.5 is 8 on 2026-09-28 (20 days).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask

from service.entrypoints.cli import ensure_clinic
from service.fixture_loader import fixture_paths, load_fixture, replay
from service.security import view_links
from tests.support.app import REPO_ROOT, Api, make_app, token_for

EPISODES = REPO_ROOT / "fixtures" / "episodes"
PERIOD = "periodStart=2026-01-01&periodEnd=2026-12-31"
DRR = "phq9-response-remission-4-8-months"


def _load(api: Api) -> dict[str, dict[str, str]]:
    def send(method: str, path: str, body: Any) -> tuple[int, Any]:
        r = api.client.open(
            "/api/v1" + path, method=method, json=body, headers={"Authorization": f"Bearer {api.token}"}
        )
        return r.status_code, r.get_json(silent=True)

    ids = {p.stem: replay(load_fixture(p), send) for p in fixture_paths(Path(EPISODES))}
    follow_up = {
        "instrument": "phq-9",
        "administered_at": "2026-06-01T09:00:00-05:00",
        "items": [1, 1, 1, 0, 0, 0, 0, 0, 0],
    }
    api.created(f"/episodes/{ids['a-trd-iv-ketamine']['episode']}/outcome-measures", follow_up)
    return ids


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """One database with the fixtures loaded per module (loading them takes most of the time); tests only add."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('measures')}/kapfhir.db"
    else:
        url = request.getfixturevalue("postgres").create_database("measures")
    application = make_app(url)
    application.extensions["loaded"] = _load(Api(application.test_client()))
    yield application
    application.extensions["kapfhir.engine"].dispose()


@pytest.fixture
def loaded(app: Flask) -> tuple[Api, dict[str, dict[str, str]]]:
    return Api(app.test_client()), app.extensions["loaded"]


def _fhir(api: Api, path: str, **kwargs: Any) -> Any:
    return api.client.get(f"/fhir{path}", headers={"Authorization": f"Bearer {api.token}"}, **kwargs)


def _populations(group: dict) -> dict[str, int]:
    return {p["code"]["coding"][0]["code"]: p["count"] for p in group["population"]}


def test_summary_report_matches_the_worked_figures_and_validates(loaded):
    api, _ = loaded
    response = _fhir(api, f"/Measure/{DRR}/$evaluate-measure?{PERIOD}")
    assert response.status_code == 200 and response.mimetype == "application/fhir+json"
    report = response.get_json()
    assert (report["type"], report["status"]) == ("summary", "complete")
    groups = {g["id"]: g for g in report["group"]}
    expected = {"initial-population": 2, "denominator": 2, "denominator-exclusion": 0, "numerator": 1}
    for name in ("follow-up", "response", "remission"):
        assert _populations(groups[name]) == expected, name
        assert groups[name]["measureScore"]["value"] == 0.5
    twelve = _fhir(api, f"/Measure/phq9-remission-12-months/$evaluate-measure?{PERIOD}").get_json()
    assert _populations(twelve["group"][0])["numerator"] == 0 and twelve["group"][0]["measureScore"]["value"] == 0.0
    outcome = api.client.post(
        "/fhir/$validate", json=report, headers={"Authorization": f"Bearer {api.token}"}
    ).get_json()
    assert [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")] == []


def test_individual_report_references_what_fhir_serves(loaded):
    api, ids = loaded
    mrn = api.get(f"/patients/{ids['a-trd-iv-ketamine']['patient']}").get_json()["mrn"]
    found = _fhir(api, f"/Patient?identifier={mrn['system']}|{mrn['value']}").get_json()
    patient_id = found["entry"][0]["resource"]["id"]
    report = _fhir(api, f"/Measure/{DRR}/$evaluate-measure?{PERIOD}&subject=Patient/{patient_id}").get_json()
    assert report["type"] == "individual" and report["subject"] == {"reference": f"Patient/{patient_id}"}
    remission = next(g for g in report["group"] if g["id"] == "remission")
    assert _populations(remission) == {
        "initial-population": 1,
        "denominator": 1,
        "denominator-exclusion": 0,
        "numerator": 1,
    }
    refs = [r["reference"] for r in report["evaluatedResource"]]
    assert len(refs) == 3  # the EpisodeOfCare, the index score and the follow-up score
    for ref in refs:
        resource = _fhir(api, f"/{ref}").get_json()
        assert resource["resourceType"] == ref.split("/")[0]
    totals = sorted(
        _fhir(api, f"/{r}").get_json()["valueQuantity"]["value"] for r in refs if r.startswith("Observation/")
    )
    assert totals == [3, 20]
    assert _fhir(api, f"/Measure/{DRR}/$evaluate-measure?{PERIOD}&subject=Patient/no-such").status_code == 404


def test_measures_are_published_and_valid(loaded):
    api, _ = loaded
    bundle = _fhir(api, "/Measure").get_json()
    assert bundle["total"] == 6
    for entry in bundle["entry"]:
        measure = entry["resource"]
        assert _fhir(api, f"/Measure/{measure['id']}").get_json()["url"] == measure["url"]
        issues = api.client.post(
            "/fhir/$validate", json=measure, headers={"Authorization": f"Bearer {api.token}"}
        ).get_json()["issue"]
        assert [i for i in issues if i["severity"] in ("error", "fatal")] == [], measure["id"]
    assert _fhir(api, "/Measure?name=Phq9Remission12Months").get_json()["total"] == 1
    assert _fhir(api, "/Measure/nope").status_code == 404
    bad = _fhir(api, f"/Measure/{DRR}/$evaluate-measure?periodStart=2026-13-01&periodEnd=2026-12-31")
    assert bad.status_code == 400 and bad.get_json()["issue"][0]["expression"] == ["periodStart"]


def test_outcomes_api_gives_the_same_figures_per_indication_and_time_to_response(loaded):
    api, _ = loaded
    body = api.get("/outcomes?from=2026-01-01&to=2026-12-31").get_json()
    drr = next(m for m in body["measures"] if m["id"] == DRR)
    assert drr["groups"]["remission"] == {
        "initial_population": 2,
        "denominator": 2,
        "denominator_exclusion": 0,
        "numerator": 1,
        "score": 0.5,
    }
    times = {t["instrument"]: t for t in body["time_to_first_response"]}
    assert times["phq-9"] == {
        "instrument": "phq-9",
        "episodes": 2,
        "responders": 2,
        "median_days": 24.5,
        "median_dosing_sessions": 6,
    }
    assert (times["pcl-5"]["median_days"], times["gad-7"]["median_days"]) == (28, 20)
    by_kind = {i["indication"]: i["episodes"] for i in body["by_indication"]}
    assert by_kind == {"depression": 2, "ptsd": 1, "anxiety": 1}
    assert api.get("/outcomes?from=2026-12-31&to=2026-01-01").status_code == 422
    assert api.get("/outcomes?since=2026-01-01").status_code == 422


# --- signed links ----------------------------------------------------------------------------------------------


def _open(api: Api, url: str) -> Any:
    parts = urlsplit(url)
    return api.client.get(f"{parts.path}?{parts.query}", headers={})


def _audit(api: Api, route: str) -> list[dict]:
    items = api.get("/audit-events?limit=200").get_json()["items"]
    return [e for e in items if e["route"] == route]


def test_episode_page_opens_by_its_link_and_is_audited(loaded):
    api, ids = loaded
    episode = ids["a-trd-iv-ketamine"]["episode"]
    link = api.post(f"/episodes/{episode}/view-link").get_json()
    expires = datetime.fromisoformat(link["expires_at"])
    assert timedelta(minutes=4) < expires - datetime.now(UTC) <= timedelta(minutes=5)
    page = _open(api, link["url"])
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "script-src" not in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    assert html.count("<svg") >= 3 and "<script" not in html
    opened = [e for e in _audit(api, "/episodes/<episode_id>/view") if e["status"] == 200]
    assert [(e["outcome"], e["client_id"]) for e in opened] == [("0", "test-client")]
    assert {"type": "EpisodeOfCare", "id": episode} in opened[0]["entity"]
    overview = _open(api, api.post("/outcomes/view-link?from=2026-01-01&to=2026-12-31").get_json()["url"])
    assert overview.status_code == 200 and "Time to first response" in overview.get_data(as_text=True)


def test_expired_forged_and_misdirected_links_are_refused_and_audited(app, loaded):
    api, ids = loaded
    episode = ids["a-trd-iv-ketamine"]["episode"]
    other_episode = ids["b-ptsd-im-ketamine"]["episode"]
    secret = view_links.signing_secret(app.extensions["kapfhir.security"].settings.signing_key_file)
    expired, _ = view_links.issue(
        secret,
        f"episode:{episode}",
        clinic_id="demo",
        client_id="test-client",
        now=datetime.now(UTC) - timedelta(minutes=6),
    )
    assert api.client.get(f"/episodes/{episode}/view?token={expired}").status_code == 403
    forged, _ = view_links.issue(
        b"not the key" * 4, f"episode:{episode}", clinic_id="demo", client_id="x", now=datetime.now(UTC)
    )
    assert api.client.get(f"/episodes/{episode}/view?token={forged}").status_code == 403
    # A link to one episode does not open another.
    link = api.post(f"/episodes/{other_episode}/view-link").get_json()["url"]
    token = urlsplit(link).query.removeprefix("token=")
    assert api.client.get(f"/episodes/{episode}/view?token={token}").status_code == 403
    refused = [e for e in _audit(api, "/episodes/<episode_id>/view") if e["status"] == 403]
    # expired and misdirected carry this clinic's claim; the forged one's clinic cannot be believed.
    assert sorted(e["outcome"] for e in refused) == ["4", "4"]


def test_another_clinics_link_is_refused_and_audited_in_that_clinic(app, loaded):
    api, ids = loaded
    settings = app.extensions["kapfhir"].settings
    ensure_clinic(settings, "clinic-b", "Clinic B", "https://clinic-b.example.org/fhir/id")
    clinic_b = Api(app.test_client(), token_for(app, clinic="clinic-b", client_id="b-client"))
    patient = clinic_b.created(
        "/patients",
        {
            "mrn": {"system": "https://clinic-b.example.org/mrn", "value": "B-1"},
            "name": {"family": "Bee"},
            "birth_date": "1990-01-01",
            "gender": "female",
        },
    )["id"]
    b_episode = clinic_b.created(
        "/episodes",
        {
            "patient_id": patient,
            "period_start": "2026-03-01T09:00:00+00:00",
            "indications": [{"kind": "anxiety", "icd10cm": "F41.1"}],
        },
    )["id"]
    a_episode = ids["a-trd-iv-ketamine"]["episode"]
    assert clinic_b.post(f"/episodes/{a_episode}/view-link").status_code == 404  # B cannot ask for A's episode
    b_link = clinic_b.post(f"/episodes/{b_episode}/view-link").get_json()["url"]
    assert _open(clinic_b, b_link).status_code == 200
    token = urlsplit(b_link).query.removeprefix("token=")
    # B's link, pointed at A's episode, opens nothing: it names another page.
    page = api.client.get(f"/episodes/{a_episode}/view?token={token}")
    assert page.status_code == 403 and "Harriet" not in page.get_data(as_text=True)
    b_audit = _audit(clinic_b, "/episodes/<episode_id>/view")
    assert sorted((e["status"], e["client_id"]) for e in b_audit) == [(200, "b-client"), (403, "b-client")]
    # Nothing of it lands in A's trail: the refusal was audited under the clinic the link names.
    assert [e for e in _audit(api, "/episodes/<episode_id>/view") if e["client_id"] == "b-client"] == []


def test_episode_page_marks_suicide_risk_positives_and_open_flags(loaded):
    api, ids = loaded
    # Added after c-esketamine-rems's last score (2026-09-04) and outside its measure windows: no figure changes.
    episode = ids["c-esketamine-rems"]["episode"]
    phq9 = {"instrument": "phq-9", "administered_at": "2026-09-10T09:00:00-06:00", "items": [1, 1, 1, 1, 0, 0, 0, 0, 1]}
    cssrs = {
        "instrument": "c-ssrs-screener",
        "administered_at": "2026-09-10T09:05:00-06:00",
        "items": [1, 1, 0, 0, 0, 0],
    }
    api.created(f"/episodes/{episode}/outcome-measures", phq9)
    api.created(f"/episodes/{episode}/outcome-measures", cssrs)
    html = _open(api, api.post(f"/episodes/{episode}/view-link").get_json()["url"]).get_data(as_text=True)
    assert "item 9 positive" in html  # the legend entry exists only when a positive is plotted
    assert "C-SSRS positive" in html and "C-SSRS screener positive on" in html and "2026-09-10" in html
    assert "suicide-risk-positive" in html  # the open safety flag

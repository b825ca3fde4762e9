"""Every fixture works against the real app (in-process, SQLite in tmp_path).

- fixtures/episodes/*.json: replayed with service.fixture_loader.replay; the open-or-acknowledged safety flags must
  equal `expected_flags`, every step must answer its expected status, and the episode must hold what was sent.
- fixtures/invalid/*.json (except files starting with "_"): after fixtures/invalid/_base.json is replayed, each request
  must answer its `expected_status` as application/problem+json, name every `expected_error_fields` entry in
  `errors[].field`, and store nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from service.fixture_loader import fixture_paths, load_fixture, replay
from tests.support.fixture_replay import INVALID, api_sender, sqlite_app

ROOT = Path(__file__).resolve().parents[2]
EPISODES = ROOT / "fixtures" / "episodes"
OPEN_OR_ACKNOWLEDGED = {"open", "acknowledged"}


# --- episodes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", fixture_paths(EPISODES), ids=lambda p: p.stem)
def test_episode_fixture_replays_with_its_expected_flags(path: Path, tmp_path: Path) -> None:
    fixture = load_fixture(path)
    assert set(fixture) >= {"name", "description", "expected_flags", "steps"}
    client = sqlite_app(tmp_path).test_client()
    ids = replay(fixture, api_sender(client))

    flags = client.get(f"/api/v1/episodes/{ids['episode']}/safety-flags").get_json()["items"]
    kept = sorted(f["rule_id"] for f in flags if f["status"] in OPEN_OR_ACKNOWLEDGED)
    assert kept == sorted(fixture["expected_flags"]), json.dumps(flags, indent=1)

    # The episode holds every record the steps sent (nested children included).
    episode = client.get(f"/api/v1/episodes/{ids['episode']}").get_json()
    sent: Counter[str] = Counter()
    for step in fixture["steps"]:
        if step.get("method", "POST") != "POST":
            continue
        parts = step["path"].split("/")
        if len(parts) == 4 and parts[1] == "episodes":
            sent[parts[3]] += 1
            for child in ("doses", "monitoring_readings", "side_effects"):
                sent[child.replace("_", "-")] += len((step.get("body") or {}).get(child, []))
    for collection, count in sent.items():
        if collection in ("phase-transitions", "safety-flags"):
            continue
        assert len(episode[collection.replace("-", "_")]) == count, collection
    transitions = sum(1 for s in fixture["steps"] if s["path"].endswith("/phase-transitions"))
    assert len(episode["phase_history"]) == transitions
    assert all(not r["entered_in_error"] for r in episode["doses"])


def test_all_episode_fixtures_load_into_one_database(tmp_path: Path) -> None:
    """What `kapfhir load-fixtures` does: every fixture into the same clinic (MRNs and NPIs must not collide)."""
    client = sqlite_app(tmp_path).test_client()
    for path in fixture_paths(EPISODES):
        replay(load_fixture(path), api_sender(client))
    assert client.get("/api/v1/episodes").get_json()["total"] == len(fixture_paths(EPISODES))


def test_episode_fixture_story_details(tmp_path: Path) -> None:
    client = sqlite_app(tmp_path).test_client()
    send = api_sender(client)
    by_name = {p.stem: p for p in fixture_paths(EPISODES)}

    ids = replay(load_fixture(by_name["a-trd-iv-ketamine"]), send)
    ep = client.get(f"/api/v1/episodes/{ids['episode']}").get_json()
    assert ep["phase"] == "completed" and ep["status"] == "finished"
    assert [t["to_phase"] for t in ep["phase_history"]] == [
        "preparation",
        "dosing",
        "integration",
        "dosing",
        "integration",
        "completed",
    ]
    dosing = [s for s in ep["sessions"] if s["kind"] == "dosing"]
    assert len(dosing) == 6 and all(s["status"] == "completed" for s in dosing)
    assert {d["dose_mg_per_kg"] for d in ep["doses"]} == {0.5} and all(d["off_label"] for d in ep["doses"])
    assert Counter(r["timing"] for r in ep["monitoring_readings"]) == {
        "pre-dose": 6,
        "during": 6,
        "post-dose": 6,
        "discharge": 6,
    }
    phq = sorted((m for m in ep["outcome_measures"] if m["instrument"] == "phq-9"), key=lambda m: m["administered_at"])
    assert [m["total"] for m in phq] == [20, 19, 13, 8, 5]
    flag = client.get(f"/api/v1/episodes/{ids['episode']}/safety-flags").get_json()["items"]
    assert [(f["rule_id"], f["status"], f["acknowledgement"]["by"]) for f in flag] == [
        ("dose-without-active-consent", "acknowledged", ids["prescriber"])
    ]
    assert flag[0]["record_ids"] == [ids["dose_1"]]
    assert ep["open_flags"] == []

    ids = replay(load_fixture(by_name["b-ptsd-im-ketamine"]), send)
    ep = client.get(f"/api/v1/episodes/{ids['episode']}").get_json()
    pcl = {m["id"]: m for m in ep["outcome_measures"]}
    assert (pcl[ids["pcl5_before"]]["total"], pcl[ids["pcl5_before"]]["severity_band"]) == (52, "provisional-ptsd")
    after = pcl[ids["pcl5_after"]]
    assert (after["total"], after["severity_band"]) == (23, "below-provisional-cut-point")
    [nausea] = ep["side_effects"]
    assert (nausea["kind"], nausea["severity"], nausea["dose_id"]) == ("nausea", "moderate", ids["dose_2"])
    amended = client.get(f"/api/v1/episodes/{ids['episode']}/doses/{ids['dose_1']}").get_json()
    assert amended["version"] == 2 and amended["controlled_substance"]["lot_number"] == "SYN-IM-2605A"
    history = client.get(f"/api/v1/episodes/{ids['episode']}/doses/{ids['dose_1']}/history").get_json()["items"]
    assert [h["data"]["controlled_substance"]["lot_number"] for h in history] == ["SYN-IM-2605X", "SYN-IM-2605A"]
    assert all(d["route"] == "intramuscular" and d["infusion_duration_min"] is None for d in ep["doses"])

    ids = replay(load_fixture(by_name["c-esketamine-rems"]), send)
    ep = client.get(f"/api/v1/episodes/{ids['episode']}").get_json()
    assert ep["phase"] == "maintenance"
    doses = sorted(ep["doses"], key=lambda d: d["start"])
    assert [d["dose_mg"] for d in doses] == [56, 84, 84, 84, 84, 84, 84, 84, 84]
    assert [d["controlled_substance"]["ndc"] for d in doses][:2] == ["50458-028-02", "50458-028-03"]
    assert not any(d["off_label"] for d in doses)
    booster = client.get(f"/api/v1/episodes/{ids['episode']}/doses/{ids['booster_1_dose']}").get_json()
    assert booster["start"].startswith("2026-09-10")

    ids = replay(load_fixture(by_name["d-gad-home-sublingual"]), send)
    ep = client.get(f"/api/v1/episodes/{ids['episode']}").get_json()
    assert [d["dose_mg_per_kg"] for d in sorted(ep["doses"], key=lambda d: d["start"])] == [1.471, 2.941, 4.412]
    assert all(d["setting"] == "home" and d["route"] == "sublingual" for d in ep["doses"])
    assert all(r["self_reported"] for r in ep["monitoring_readings"])
    assert {s["modality"] for s in ep["sessions"] if s["kind"] != "dosing"} == {"telehealth"}
    gad = sorted((m for m in ep["outcome_measures"] if m["instrument"] == "gad-7"), key=lambda m: m["administered_at"])
    assert [(m["total"], m["severity_band"]) for m in gad] == [
        (17, "severe"),
        (12, "moderate"),
        (8, "mild"),
        (5, "mild"),
    ]


# --- invalid requests -------------------------------------------------------------------------------------------


def _invalid_paths() -> list[Path]:
    return [p for p in fixture_paths(INVALID) if not p.name.startswith("_")]


def build_body(request: dict[str, Any], ids: dict[str, str]) -> bytes:
    from service.fixture_loader import resolve

    if "raw_body_repeat" in request:
        repeat = request["raw_body_repeat"]
        text = repeat.get("prefix", "") + repeat["text"] * repeat["times"] + repeat.get("suffix", "")
        return text.encode()
    if "raw_body" in request:
        return request["raw_body"].encode()
    if "body" in request:
        return json.dumps(resolve(request["body"], ids)).encode()
    return b""


def _snapshot(client: Any, ids: dict[str, str]) -> Any:
    def get(path: str) -> Any:
        return client.get("/api/v1" + path).get_json()

    episode = get(f"/episodes/{ids['episode']}")
    return (
        get("/patients")["total"],
        get("/practitioners")["total"],
        get("/episodes")["total"],
        {k: v for k, v in episode.items()},
        get(f"/patients/{ids['patient']}/body-weights"),
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, str]]:
    client = sqlite_app(tmp_path_factory.mktemp("invalid")).test_client()
    ids = replay(load_fixture(INVALID / "_base.json"), api_sender(client))
    return client, ids


def test_invalid_requests_exist() -> None:
    assert len(_invalid_paths()) >= 20


@pytest.mark.parametrize("path", _invalid_paths(), ids=lambda p: p.stem)
def test_invalid_request_is_refused(path: Path, base: tuple[Any, dict[str, str]]) -> None:
    from service.fixture_loader import resolve

    client, ids = base
    case = load_fixture(path)
    assert set(case) >= {"description", "request", "expected_status"}
    request = case["request"]
    before = _snapshot(client, ids)
    response = client.open(
        "/api/v1" + resolve(request["path"], ids),
        method=request.get("method", "POST"),
        data=build_body(request, ids),
        content_type=request.get("content_type", "application/json"),
    )
    problem = response.get_json(force=True, silent=True)
    assert response.status_code == case["expected_status"], problem
    assert response.mimetype == "application/problem+json"
    assert problem["status"] == case["expected_status"]
    named = {e["field"] for e in problem.get("errors", [])}
    missing = set(case.get("expected_error_fields", [])) - named
    assert not missing, f"fields {missing} not in {problem}"
    assert _snapshot(client, ids) == before, "a refused request stored something"

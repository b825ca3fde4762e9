"""The durable outbox end to end: a change queues a job in its own transaction, the worker pushes the episode to
a real FHIR server (sekmet-fhir), exactly once, through the privacy gate; the CLI and the sync API report it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from flask import Flask

from service.adapters import outbox
from service.entrypoints.cli import main as cli
from service.fixture_loader import fixture_paths, load_fixture, replay
from service.service_layer.sync import Deliverer, run_worker
from tests.support.app import REPO_ROOT, Api, make_app
from tests.support.exchange import ORG
from tests.support.outbox_app import app_with_ehr_target, consent_to_share, seed_with_own_mrn, unique_mrn
from tests.support.proxy import Fault, FaultProxy
from tests.support.seed import dosing_session_body
from tests.support.sekmet import Sekmet


def _deliverer(app: Flask) -> Deliverer:
    settings = app.extensions["kapfhir"].settings
    return Deliverer(app.extensions["kapfhir"].session_factory, settings.targets, max_attempts=3)


def _drain(app: Flask, limit: int = 50) -> list[Any]:
    return run_worker(_deliverer(app), worker="test", stop=threading.Event(), max_jobs=limit, exit_when_idle=True)


def _sync(api: Api, episode_id: str) -> dict[str, Any]:
    (status,) = api.get(f"/episodes/{episode_id}/sync").get_json()["items"]
    return status


def test_every_fixture_episode_reaches_the_server_once_with_references_intact(tmp_path: Path, sekmet: Sekmet):
    app = app_with_ehr_target(tmp_path, sekmet.base_url)
    client = app.test_client()
    api = Api(client)
    episodes = []
    for path in fixture_paths(REPO_ROOT / "fixtures" / "episodes"):
        fixture = load_fixture(path)
        for step in fixture["steps"]:
            if step.get("path") == "/patients":
                step["body"] = unique_mrn(step["body"])

        def send(method: str, p: str, body: Any) -> tuple[int, Any]:
            response = client.open(
                f"/api/v1{p}", method=method, json=body, headers={"Authorization": f"Bearer {api.token}"}
            )
            return response.status_code, response.get_json(silent=True)

        ids = replay(fixture, send)
        consent_to_share(api, ids["patient"])
        episodes.append(ids)
    deliveries = _drain(app)
    assert {d.status for d in deliveries} == {"delivered"}, [(d.status, d.detail) for d in deliveries]
    for ids in episodes:
        status = _sync(api, ids["episode"])
        assert status["status"] == "delivered"
        by_type = {r["resource_type"]: r["remote_id"] for r in status["resources"]}
        patient = api.get(f"/patients/{ids['patient']}").get_json()
        found = sekmet.search("Patient", f"identifier={patient['mrn']['system']}|{patient['mrn']['value']}")
        assert [p["id"] for p in found] == [by_type["Patient"]]
        administrations = sekmet.search("MedicationAdministration", f"subject=Patient/{by_type['Patient']}")
        assert administrations, "no dose reached the server"
        for administration in administrations:
            assert sekmet.read(administration["subject"]["reference"])["resourceType"] == "Patient"
            assert sekmet.read(administration["context"]["reference"])["resourceType"] == "Encounter"
    before = {t: sekmet.count(t) for t in ("Patient", "MedicationAdministration", "Observation", "Encounter")}
    for ids in episodes:  # everything again: nothing new may appear
        assert api.post(f"/episodes/{ids['episode']}/sync/retry").status_code == 200
        with app.extensions["kapfhir"].session_factory() as session:
            outbox.enqueue(session, "demo", ids["episode"], ("ehr",), _utcnow())
            session.commit()
    assert {d.status for d in _drain(app)} == {"delivered"}
    assert {t: sekmet.count(t) for t in before} == before


def _utcnow() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_a_change_queues_a_job_in_its_own_transaction_and_goes_out_as_an_update(tmp_path: Path, sekmet: Sekmet):
    app = app_with_ehr_target(tmp_path, sekmet.base_url)
    api = Api(app.test_client())
    ids = seed_with_own_mrn(api)
    consent_to_share(api, ids["patient"])
    session = api.created(f"/episodes/{ids['episode']}/sessions", dosing_session_body(ids))
    assert _sync(api, ids["episode"])["status"] == "queued"
    # A refused request queues nothing new (its transaction rolled back with everything else).
    jobs_before = _sync(api, ids["episode"])["updated_at"]
    assert api.post(f"/episodes/{ids['episode']}/sessions", {"kind": "dosing"}).status_code == 422
    assert _sync(api, ids["episode"])["updated_at"] == jobs_before
    assert {d.status for d in _drain(app)} == {"delivered"}

    dose = session["doses"][0]
    body = {
        k: v
        for k, v in dose.items()
        if k not in ("id", "version", "entered_in_error", "recorded_at", "updated_at", "off_label", "dose_mg_per_kg")
    }
    body["controlled_substance"] = {**body["controlled_substance"], "lot_number": "LOT-SYN-AMENDED"}
    assert (
        api.put(f"/episodes/{ids['episode']}/doses/{dose['id']}", {**body, "amendment_reason": "lot"}).status_code
        == 200
    )
    assert _sync(api, ids["episode"])["status"] == "queued"
    assert {d.status for d in _drain(app)} == {"delivered"}
    remote = {r["resource_type"]: r for r in _sync(api, ids["episode"])["resources"]}
    administration = sekmet.read(f"MedicationAdministration/{remote['MedicationAdministration']['remote_id']}")
    contained = administration["contained"][0]
    assert contained["batch"]["lotNumber"] == "LOT-SYN-AMENDED"
    assert administration["meta"]["versionId"] != "1"


def test_nothing_leaves_without_a_privacy_consent_and_it_goes_out_when_consent_arrives(tmp_path: Path, sekmet: Sekmet):
    app = app_with_ehr_target(tmp_path, sekmet.base_url)
    api = Api(app.test_client())
    ids = seed_with_own_mrn(api)
    patients_before = sekmet.count("Patient")
    (delivery,) = _drain(app)
    assert delivery.status == "held"
    status = _sync(api, ids["episode"])
    assert status["status"] == "held" and "consent" in status["held_reason"].lower()
    assert sekmet.count("Patient") == patients_before
    consent_to_share(api, ids["patient"])
    assert _sync(api, ids["episode"])["status"] == "queued"
    assert [d.status for d in _drain(app)] == ["delivered"]
    assert sekmet.count("Patient") == patients_before + 1


def test_an_ehr_target_gets_nothing_for_an_unlinked_patient_and_never_a_new_patient(tmp_path: Path, sekmet: Sekmet):
    app = app_with_ehr_target(tmp_path, sekmet.base_url, policy="ehr")
    api = Api(app.test_client())
    ids = seed_with_own_mrn(api)
    consent_to_share(api, ids["patient"])
    (delivery,) = _drain(app)
    assert delivery.status == "held" and "not linked" in _sync(api, ids["episode"])["held_reason"]
    # The EHR already has the patient: pull by MRN links it, and the episode goes out without a new Patient.
    mrn = api.get(f"/patients/{ids['patient']}").get_json()["mrn"]
    existing = sekmet.create(
        {"resourceType": "Patient", "identifier": [mrn], "name": [{"family": "Testperson"}], "gender": "other"}
    )
    patients = sekmet.count("Patient")
    settings = app.extensions["kapfhir"].settings
    env = {
        "KAPFHIR_DATABASE_URL": settings.database_url,
        "KAPFHIR_SIGNING_KEY_FILE": settings.security.signing_key_file,
        "KAPFHIR_DEFAULT_IDENTIFIER_SYSTEM": settings.default_identifier_system,
    }
    from service.entrypoints import cli as cli_module

    original = cli_module.Settings.from_env
    cli_module.Settings.from_env = classmethod(lambda cls: settings)  # type: ignore[method-assign]
    try:
        pulled = CliRunner().invoke(cli, ["pull-patient", "--target", "ehr", "--mrn", mrn["value"]], env=env)
    finally:
        cli_module.Settings.from_env = original  # type: ignore[method-assign]
    assert pulled.exit_code == 0, pulled.output
    assert f"Patient/{existing['id']}" in pulled.output
    assert [d.status for d in _drain(app)] == ["delivered"]
    assert sekmet.count("Patient") == patients
    remote = {r["resource_type"]: r["remote_id"] for r in _sync(api, ids["episode"])["resources"]}
    assert "Patient" not in remote
    episode_of_care = sekmet.read(f"EpisodeOfCare/{remote['EpisodeOfCare']}")
    assert episode_of_care["patient"]["reference"] == f"Patient/{existing['id']}", episode_of_care["patient"]


def test_failures_end_as_a_dead_letter_that_keeps_the_last_error_and_can_be_retried(tmp_path: Path, sekmet: Sekmet):
    proxy = FaultProxy(sekmet.root_url)
    try:
        app = app_with_ehr_target(tmp_path, proxy.url + "/fhir", max_attempts=1)
        api = Api(app.test_client())
        ids = seed_with_own_mrn(api)
        consent_to_share(api, ids["patient"])
        posts = lambda method, path: method == "POST"  # noqa: E731
        proxy.add(*[Fault("status", status=500, match=posts) for _ in range(10)])
        deliverer = _deliverer(app)
        first = deliverer.deliver(deliverer.claim("test"))
        assert first.status == "queued"  # retried later, with backoff
        assert _sync(api, ids["episode"])["attempts"] == 1
        with app.extensions["kapfhir"].session_factory() as session:  # make the retry due now
            session.execute(outbox.orm.sync_jobs.update().values(next_attempt_at=_utcnow()))
            session.commit()
        for _ in range(3):
            job = deliverer.claim("test")
            if job is None:
                break
            last = deliverer.deliver(job)
            with app.extensions["kapfhir"].session_factory() as session:
                session.execute(outbox.orm.sync_jobs.update().values(next_attempt_at=_utcnow()))
                session.commit()
        assert last.status == "dead"
        status = _sync(api, ids["episode"])
        assert status["status"] == "dead" and status["last_error"]
        proxy.faults.clear()
        assert api.post(f"/episodes/{ids['episode']}/sync/retry").get_json() == {"requeued": 1}
        assert [d.status for d in _drain(app)] == ["delivered"]
    finally:
        proxy.close()


def test_kill_9_of_the_worker_mid_push_leaves_every_resource_on_the_server_exactly_once(tmp_path: Path, sekmet: Sekmet):
    proxy = FaultProxy(sekmet.root_url)
    try:
        app = app_with_ehr_target(tmp_path, proxy.url + "/fhir")
        api = Api(app.test_client())
        ids = seed_with_own_mrn(api)
        consent_to_share(api, ids["patient"])
        api.created(f"/episodes/{ids['episode']}/sessions", dosing_session_body(ids))
        settings = app.extensions["kapfhir"].settings
        targets_file = tmp_path / "targets.json"
        targets_file.write_text(
            json.dumps(
                {
                    "targets": {
                        "ehr": {
                            "base_url": f"{proxy.url}/fhir",
                            "write_policy": "sandbox",
                            "organization_identifier": f"{ORG.system}|{ORG.value}",
                        }
                    }
                }
            )
        )
        env = {
            **os.environ,
            "KAPFHIR_DATABASE_URL": settings.database_url,
            "KAPFHIR_SIGNING_KEY_FILE": settings.security.signing_key_file,
            "KAPFHIR_TARGETS_FILE": str(targets_file),
            "KAPFHIR_DEFAULT_IDENTIFIER_SYSTEM": settings.default_identifier_system,
        }
        # The server answers slowly: the worker is killed while its push is in flight.
        proxy.add(Fault("delay", seconds=3.0, match=lambda method, path: method == "POST"))
        worker = subprocess.Popen(
            [sys.executable, "-m", "service.entrypoints.cli", "worker", "--poll", "0.2"],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(m == "POST" for m, _, _ in proxy.log):
            time.sleep(0.05)
        assert any(m == "POST" for m, _, _ in proxy.log), "the worker never started its push"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        time.sleep(3.5)  # let the in-flight request finish on the server side
        with app.extensions["kapfhir"].session_factory() as session:  # the lease of the dead worker runs out
            session.execute(outbox.orm.sync_jobs.update().values(locked_until=None, next_attempt_at=_utcnow()))
            session.commit()
        assert [d.status for d in _drain(app)] == ["delivered"]
        patient = api.get(f"/patients/{ids['patient']}").get_json()
        assert len(sekmet.search("Patient", f"identifier={patient['mrn']['system']}|{patient['mrn']['value']}")) == 1
        for remote in _sync(api, ids["episode"])["resources"]:
            key = remote["key"]
            if "identifier=" in key:
                query = key.split("?", 1)[1]
                assert len(sekmet.search(remote["resource_type"], query)) == 1, key
    finally:
        proxy.close()


def test_target_check_and_push_all_print_their_reports(tmp_path: Path, sekmet: Sekmet):
    app = app_with_ehr_target(tmp_path, sekmet.base_url)
    api = Api(app.test_client())
    ids = seed_with_own_mrn(api)
    consent_to_share(api, ids["patient"])
    settings = app.extensions["kapfhir"].settings
    from service.entrypoints import cli as cli_module

    original = cli_module.Settings.from_env
    cli_module.Settings.from_env = classmethod(lambda cls: settings)  # type: ignore[method-assign]
    try:
        checked = CliRunner().invoke(cli, ["target", "check", "ehr"])
        pushed = CliRunner().invoke(cli, ["push", "--target", "ehr", "--all"])
        again = CliRunner().invoke(cli, ["push", "--target", "ehr", "--all"])
    finally:
        cli_module.Settings.from_env = original  # type: ignore[method-assign]
    assert checked.exit_code == 0, checked.output
    assert "FHIR version: 4.0.1" in checked.output and "MedicationAdministration" in checked.output
    assert pushed.exit_code == 0, pushed.output
    assert "created" in pushed.output and "episodes: 1, held: 0, failed: 0" in pushed.output
    assert again.exit_code == 0, again.output

    def created_per_type(output: str) -> dict[str, int]:
        rows = [line.split() for line in output.splitlines() if line[:1].isupper() and line.split()[1:2]]
        return {row[0]: int(row[1]) for row in rows if row[1].isdigit()}

    assert created_per_type(pushed.output)["EpisodeOfCare"] == 1
    assert created_per_type(pushed.output)["Patient"] == 1
    assert set(created_per_type(again.output).values()) == {0}, again.output
    assert "already there" in again.output


def test_an_episode_ingested_through_fhir_is_queued_for_every_target(tmp_path: Path, sekmet: Sekmet):
    receiving = app_with_ehr_target(tmp_path / "receiving", sekmet.base_url)
    settings = receiving.extensions["kapfhir"].settings
    sending = make_app(f"sqlite:///{tmp_path}/sending.db", default_identifier_system=settings.default_identifier_system)
    source = Api(sending.test_client())
    ids = seed_with_own_mrn(source)
    bundle = source.get(f"/episodes/{ids['episode']}/fhir").get_json()
    api = Api(receiving.test_client())
    posted = api.client.post("/fhir", json=bundle, headers={"Authorization": f"Bearer {api.token}"})
    assert posted.status_code == 200, posted.get_json()
    (episode,) = api.get("/episodes").get_json()["items"]
    assert _sync(api, episode["id"])["status"] == "queued"


def test_push_to_a_stricter_server_reports_what_was_adapted_and_remembers_the_ids(tmp_path: Path, sekmet: Sekmet):
    """A server that refuses the base bp profile and client-assigned ids (as Medplum 5.1 did): the CLI push lands
    everything, prints what it adapted, and the next push finds every resource by the id it remembered."""
    from mappings import terminology as t

    proxy = FaultProxy(sekmet.root_url)
    proxy.refuse_profiles = {t.VITALSIGNS_BP}
    proxy.no_update_create = True
    try:
        app = app_with_ehr_target(tmp_path, proxy.url + "/fhir")
        api = Api(app.test_client())
        ids = seed_with_own_mrn(api)
        api.created(f"/episodes/{ids['episode']}/sessions", dosing_session_body(ids))  # blood-pressure panels
        consent_to_share(api, ids["patient"])
        settings = app.extensions["kapfhir"].settings
        from service.entrypoints import cli as cli_module

        original = cli_module.Settings.from_env
        cli_module.Settings.from_env = classmethod(lambda cls: settings)  # type: ignore[method-assign]
        try:
            pushed = CliRunner().invoke(cli, ["push", "--target", "ehr", "--episode", ids["episode"]])
            refusals = len(proxy.refusals)
            again = CliRunner().invoke(cli, ["push", "--target", "ehr", "--episode", ids["episode"]])
        finally:
            cli_module.Settings.from_env = original  # type: ignore[method-assign]
        assert pushed.exit_code == 0, pushed.output
        assert "episodes: 1, held: 0, failed: 0" in pushed.output
        assert refusals >= 2, (proxy.refusals, pushed.output)  # refused: the claim, the client-assigned id
        assert "adapted for ehr:" in pushed.output
        assert f"profile claim {t.VITALSIGNS_BP} left out" in pushed.output
        assert "Provenance x1: sent as a create" in pushed.output
        # the second push: nothing refused, nothing created, the Provenance known by the id the server gave it
        assert again.exit_code == 0, again.output
        assert len(proxy.refusals) == refusals
        assert "adapted for" not in again.output
        resources = _sync(api, ids["episode"])["resources"]
        provenance = [r for r in resources if r["resource_type"] == "Provenance"]
        assert len(provenance) == 1 and provenance[0]["remote_id"]
        assert sekmet.read(f"Provenance/{provenance[0]['remote_id']}")["resourceType"] == "Provenance"
    finally:
        proxy.close()


def test_a_delivery_that_fails_outside_the_push_is_released_for_a_retry(
    tmp_path: Path, sekmet: Sekmet, monkeypatch: Any
):
    """The worker survives a failure it did not foresee: the job is queued again with its attempt counted."""
    app = app_with_ehr_target(tmp_path, sekmet.root_url + "/fhir")
    api = Api(app.test_client())
    ids = seed_with_own_mrn(api)
    consent_to_share(api, ids["patient"])

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the episode cannot be read")

    monkeypatch.setattr("service.service_layer.sync.services.episode_chart", broken)
    (released,) = _drain(app, limit=1)
    assert released.status == "queued"
    status = _sync(api, ids["episode"])
    assert status["status"] == "queued" and status["attempts"] == 1 and "RuntimeError" in str(status["last_error"])

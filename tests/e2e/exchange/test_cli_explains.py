"""The CLI says why: every held or failed delivery of `kapfhir push` and `kapfhir worker --once` is printed with its
reason (the missing privacy consent and for which target, the server's OperationOutcome text, the transport error's
cause), against a real FHIR server (sekmet-fhir), through the fault proxy, or at a port where nothing listens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask import Flask

from service.entrypoints import cli as cli_module
from service.entrypoints.cli import main as cli
from tests.support.app import Api
from tests.support.exchange import ORG
from tests.support.outbox_app import app_with_ehr_target, consent_to_share, seed_with_own_mrn
from tests.support.processes import free_port
from tests.support.proxy import Fault, FaultProxy
from tests.support.sekmet import Sekmet


@pytest.fixture
def run_cli() -> Iterator[Any]:
    """Invokes the CLI with the settings of a test app (its database and its targets)."""
    original = cli_module.Settings.from_env

    def run(app: Flask, *args: str) -> Result:
        settings = app.extensions["kapfhir"].settings
        cli_module.Settings.from_env = classmethod(lambda cls: settings)  # type: ignore[method-assign]
        try:
            return CliRunner().invoke(cli, list(args))
        finally:
            cli_module.Settings.from_env = original  # type: ignore[method-assign]

    yield run
    cli_module.Settings.from_env = original  # type: ignore[method-assign]


def test_a_held_push_names_the_missing_privacy_consent_and_the_target(tmp_path: Path, sekmet: Sekmet, run_cli):
    app = app_with_ehr_target(tmp_path, sekmet.base_url)
    ids = seed_with_own_mrn(Api(app.test_client()))  # a treatment consent, but no privacy consent
    pushed = run_cli(app, "push", "--target", "ehr", "--all")
    assert pushed.exit_code == 0, pushed.output
    assert "episodes: 1, held: 1, failed: 0" in pushed.output
    assert f"held: episode {ids['episode']} -> target ehr" in pushed.output
    assert f"no active patient-privacy consent permits sharing with {ORG.system}|{ORG.value}" in pushed.output
    assert "{" not in pushed.output  # no JSON log lines


def test_a_refused_push_prints_the_servers_operation_outcome(tmp_path: Path, sekmet: Sekmet, run_cli):
    proxy = FaultProxy(sekmet.base_url)
    try:
        app = app_with_ehr_target(tmp_path, f"{proxy.url}/fhir" if sekmet.base_url.endswith("/fhir") else proxy.url)
        api = Api(app.test_client())
        ids = seed_with_own_mrn(api)
        consent_to_share(api, ids["patient"])
        proxy.add(*[Fault("status", status=400, match=lambda method, path: method == "POST")] * 3)
        pushed = run_cli(app, "push", "--target", "ehr", "--all")
    finally:
        proxy.close()
    assert pushed.exit_code == 1, pushed.output
    assert f"failed (dead letter): episode {ids['episode']} -> target ehr" in pushed.output
    assert "HTTP 400" in pushed.output and "injected fault" in pushed.output and "Patient" in pushed.output


def test_a_transport_failure_says_what_went_wrong_and_where(tmp_path: Path, run_cli):
    port = free_port()  # nothing listens there
    app = app_with_ehr_target(tmp_path, f"http://127.0.0.1:{port}/fhir")
    api = Api(app.test_client())
    ids = seed_with_own_mrn(api)
    consent_to_share(api, ids["patient"])
    worked = run_cli(app, "worker", "--once")
    assert worked.exit_code == 0, worked.output
    assert f"failed (will retry): episode {ids['episode']} -> target ehr" in worked.output
    assert "connection refused" in worked.output and f"127.0.0.1:{port}" in worked.output
    assert "job(s) handled: 0 delivered, 0 held, 1 failed" in worked.output


def test_worker_once_reports_delivered_and_held_jobs(tmp_path: Path, sekmet: Sekmet, run_cli):
    app = app_with_ehr_target(tmp_path, sekmet.base_url)
    api = Api(app.test_client())
    ids = seed_with_own_mrn(api)
    worked = run_cli(app, "worker", "--once")
    assert worked.exit_code == 0, worked.output
    assert "1 job(s) handled: 0 delivered, 1 held, 0 failed" in worked.output
    assert f"held: episode {ids['episode']} -> target ehr" in worked.output
    consent_to_share(api, ids["patient"])  # the consent re-queues the held job
    again = run_cli(app, "worker", "--once")
    assert "1 delivered, 0 held, 0 failed" in again.output, again.output
    assert "held:" not in again.output


def test_pull_patient_prints_differences_and_candidate_indications_readably(tmp_path: Path, sekmet: Sekmet, run_cli):
    app = app_with_ehr_target(tmp_path, sekmet.base_url, policy="ehr")
    api = Api(app.test_client())
    ids = seed_with_own_mrn(api)
    local = api.get(f"/patients/{ids['patient']}").get_json()
    remote = sekmet.create(
        {
            "resourceType": "Patient",
            "identifier": [{"system": local["mrn"]["system"], "value": local["mrn"]["value"]}],
            "name": [{"family": f"{local['name']['family']}-Remote", "given": local["name"]["given"]}],
            "birthDate": local["birth_date"],
            "gender": local["gender"],
        }
    )
    condition = sekmet.create(
        {
            "resourceType": "Condition",
            "subject": {"reference": f"Patient/{remote['id']}"},
            "clinicalStatus": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
            },
            # ICD-10-CM F33.2 and SNOMED CT 36474008, as in the README walk-through
            "code": {
                "coding": [
                    {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F33.2"},
                    {"system": "http://snomed.info/sct", "code": "36474008"},
                ],
                "text": "Major depressive disorder, recurrent severe without psychotic features",
            },
        }
    )
    pulled = run_cli(app, "pull-patient", "--target", "ehr", "--mrn", local["mrn"]["value"], "--conditions")
    assert pulled.exit_code == 0, pulled.output
    assert f"found Patient/{remote['id']} on ehr" in pulled.output
    assert f"differs: name.family: here '{local['name']['family']}', on ehr '{local['name']['family']}-Remote'" in (
        pulled.output
    )
    assert (
        f"candidate indication: Condition/{condition['id']} Major depressive disorder, recurrent severe without "
        "psychotic features [ICD-10-CM F33.2, SNOMED CT 36474008] clinical status active" in pulled.output
    )
    assert "CandidateIndication(" not in pulled.output and "Difference(" not in pulled.output
    assert f"linked local patient {ids['patient']} to Patient/{remote['id']}" in pulled.output

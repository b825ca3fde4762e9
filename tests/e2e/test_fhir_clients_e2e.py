"""Standard FHIR client libraries against /fhir over real HTTP, the service started as the Dockerfile starts it:
fhirpy (Beda Software) and fhirclient (SMART on FHIR), as EHR integrations use them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from fhirclient.models.bundle import Bundle as FcBundle
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.patient import Patient as FcPatient
from fhirclient.server import FHIRServer
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome as FhirpyOutcome

from service.fixture_loader import load_fixture, replay
from service.security.keys import ensure_local_signing_key
from service.security.settings import DEV_AUDIENCE, DEV_ISSUER
from service.security.tokens import TokenIssuer
from tests.support.app import REPO_ROOT
from tests.support.processes import RunningService, run_dockerfile_cmd

pytestmark = pytest.mark.e2e
MRN = "https://ehr.example.org/mrn"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    workdir = tmp_path_factory.mktemp("clients")
    running = run_dockerfile_cmd(
        REPO_ROOT,
        {
            "KAPFHIR_DATABASE_URL": f"sqlite:///{workdir / 'kapfhir.db'}",
            "KAPFHIR_SIGNING_KEY_FILE": str(workdir / "signing-key.pem"),
        },
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def token(service: RunningService) -> str:
    key = ensure_local_signing_key(service.env["KAPFHIR_SIGNING_KEY_FILE"])
    issuer = TokenIssuer(key, issuer=DEV_ISSUER, audience=DEV_AUDIENCE)
    return issuer.issue(client_id="fhir-clients", clinic_id="demo", scope="system/*.cruds").access_token


@pytest.fixture(scope="module")
def episode(service: RunningService, token: str) -> dict[str, str]:
    """A fixture episode recorded over HTTP through /api/v1, as clinic software records it."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"

    def send(method: str, path: str, body: Any) -> tuple[int, Any]:
        r = session.request(method, f"{service.base_url}/api/v1{path}", json=body, timeout=30)
        return r.status_code, r.json() if r.content else None

    return replay(load_fixture(REPO_ROOT / "fixtures" / "episodes" / "b-ptsd-im-ketamine.json"), send)


@pytest.fixture(scope="module")
def fhirpy_client(service: RunningService, token: str) -> SyncFHIRClient:
    return SyncFHIRClient(f"{service.base_url}/fhir", authorization=f"Bearer {token}")


@pytest.fixture(scope="module")
def smart(service: RunningService, token: str) -> FHIRServer:
    server = FHIRServer(None, base_uri=f"{service.base_url}/fhir/")
    server.session.headers["Authorization"] = f"Bearer {token}"
    return server


def _patient(value: str, family: str = "Clientcase") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": MRN, "value": value}],
        "name": [{"family": family, "given": ["Robin"]}],
        "gender": "female",
        "birthDate": "1979-05-06",
    }


def test_fhirpy_create_read_update_conditional_create_delete_search_count_history(fhirpy_client: Any) -> None:
    client = fhirpy_client
    value = f"FP-{uuid.uuid4().hex[:8]}"
    created = client.resource("Patient", **_patient(value))
    created.save()
    assert created.id and created.meta.versionId == "1"
    read = client.reference("Patient", created.id).to_resource()
    assert read.name[0].family == "Clientcase"

    read["name"] = [{"family": "Updated", "given": ["Robin"]}]
    read.save()
    assert client.reference("Patient", created.id).to_resource()["name"][0]["family"] == "Updated"
    history = client.execute(f"Patient/{created.id}/_history", method="get")
    assert history["total"] == 2

    # conditional create twice: one resource
    search = client.resources("Patient").search(identifier=f"{MRN}|{value}-c")
    first, made_first = search.get_or_create(client.resource("Patient", **_patient(f"{value}-c")))
    second, made_second = search.get_or_create(client.resource("Patient", **_patient(f"{value}-c")))
    assert (made_first, made_second) == (True, False) and first.id == second.id
    assert client.resources("Patient").search(identifier=f"{MRN}|{value}-c").count() == 1

    # merge patch, as fhirpy sends it
    client.resources("Patient").search(identifier=f"{MRN}|{value}-c")
    patched = client.patch("Patient", first.id, birthDate="1979-05-07")
    assert patched["birthDate"] == "1979-05-07"

    # search with paging walks every page
    for i in range(3):
        client.resource("Patient", **_patient(f"{value}-p{i}", family="Pagingcase")).save()
    pages = client.resources("Patient").search(family="Pagingcase").limit(2)
    assert len(pages.fetch_all()) == 3
    assert pages.count() == 3

    # delete: a patient is not deleted (kapfhir keeps what was recorded): an OperationOutcome says why
    with pytest.raises(FhirpyOutcome):
        client.delete("Patient", created.id)


def test_fhirpy_delete_marks_a_dose_entered_in_error(fhirpy_client: Any, episode: dict[str, str]) -> None:
    dose = fhirpy_client.resources("MedicationAdministration").search(status="completed").first()
    assert dose is not None
    fhirpy_client.delete("MedicationAdministration", dose.id)
    after = fhirpy_client.reference("MedicationAdministration", dose.id).to_resource()
    assert after["status"] == "entered-in-error"
    assert after["meta"]["versionId"] != dose["meta"]["versionId"]


def test_an_update_with_a_stale_if_match_is_refused_over_http(service: RunningService, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    base = f"{service.base_url}/fhir"
    created = requests.post(f"{base}/Patient", json=_patient(f"IM-{uuid.uuid4().hex[:8]}"), headers=headers, timeout=30)
    body = created.json()
    fresh = requests.put(
        f"{base}/Patient/{body['id']}",
        json={**body, "gender": "male"},
        headers={**headers, "If-Match": 'W/"1"'},
        timeout=30,
    )
    assert fresh.status_code == 200 and fresh.headers["ETag"] == 'W/"2"'
    stale = requests.put(
        f"{base}/Patient/{body['id']}",
        json={**body, "gender": "other"},
        headers={**headers, "If-Match": 'W/"1"'},
        timeout=30,
    )
    assert stale.status_code == 412 and stale.json()["resourceType"] == "OperationOutcome"


def test_fhirclient_transaction_update_honours_its_if_match(smart: FHIRServer) -> None:
    created = FcPatient(_patient(f"FCM-{uuid.uuid4().hex[:8]}")).create(smart)
    rid = created["id"]

    def put_in_a_transaction(gender: str, if_match: str) -> Any:
        entry = {
            "resource": {**created, "gender": gender},
            "request": {"method": "PUT", "url": f"Patient/{rid}", "ifMatch": if_match},
        }
        return FcBundle({"resourceType": "Bundle", "type": "transaction", "entry": [entry]}).create(smart)

    done = put_in_a_transaction("male", 'W/"1"')
    assert done["entry"][0]["response"]["status"].startswith("200")
    with pytest.raises(requests.HTTPError) as stale:
        put_in_a_transaction("other", 'W/"1"')  # version 2 is current now
    assert stale.value.response.status_code == 412
    issue = stale.value.response.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[0].request.ifMatch"]
    assert FcPatient.read(rid, smart).gender == "male"


def test_fhirpy_transaction_posts_to_the_base_with_a_trailing_slash(fhirpy_client: Any) -> None:
    value = f"FPT-{uuid.uuid4().hex[:8]}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": _patient(value),
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={MRN}|{value}"},
            }
        ],
    }
    answer = fhirpy_client.execute("/", method="post", data=bundle)
    assert answer["type"] == "transaction-response"
    assert answer["entry"][0]["response"]["status"].startswith("201")
    again = fhirpy_client.execute("/", method="post", data=bundle)
    assert again["entry"][0]["response"]["status"].startswith("200")
    assert fhirpy_client.resources("Patient").search(identifier=f"{MRN}|{value}").count() == 1


def test_fhirclient_create_read_update_search_and_transaction(smart: FHIRServer) -> None:
    value = f"FC-{uuid.uuid4().hex[:8]}"
    patient = FcPatient(_patient(value))
    created = patient.create(smart)
    assert created["resourceType"] == "Patient" and created["id"]
    read = FcPatient.read(created["id"], smart)
    assert read.name[0].family == "Clientcase" and read.meta.versionId == "1"

    read.gender = "other"
    read.update(smart)
    assert FcPatient.read(created["id"], smart).gender == "other"

    found = FcPatient.where(struct={"identifier": f"{MRN}|{value}"}).perform_resources_iter(smart)
    assert [p.id for p in found] == [created["id"]]

    # a transaction through the client's own Bundle.create: posted to {base}/
    tx_value = f"{value}-tx"
    bundle = FcBundle(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                    "resource": _patient(tx_value),
                    "request": {"method": "POST", "url": "Patient"},
                }
            ],
        }
    )
    response = bundle.create(smart)
    assert response["type"] == "transaction-response"
    assert response["entry"][0]["response"]["status"].startswith("201")

    # the CapabilityStatement parses in the strict R4 models and declares the writes
    statement = CapabilityStatement.read_from("metadata", smart)
    patient_rest = next(r for r in statement.rest[0].resource if r.type == "Patient")
    assert {"create", "update", "read", "search-type"} <= {i.code for i in patient_rest.interaction}

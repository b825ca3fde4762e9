"""Every error class of /fhir (issue 5 item 6) is an OperationOutcome with the right status: 400, 404, 405 with
Allow, 406, 409, 412, 415, 422, and never a 500 for bad input (an unknown resourceType inside a Bundle is a 400)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from tests.integration.fhir.fhir_support import FHIR_JSON, INVALID, app_on


@pytest.fixture(scope="module")
def client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    app: Flask
    with app_on(request, "sqlite", tmp_path_factory.mktemp("fhir-errors"), "errors") as app:
        yield app.test_client()


def outcome(r: Any, status: int) -> list[dict]:
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.mimetype == FHIR_JSON
    body = r.get_json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"]
    assert all(i["severity"] and i["code"] and i.get("diagnostics") for i in body["issue"])
    return body["issue"]


def bundle(*resources: dict, method: str = "POST", url: str | None = None) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": method, "url": url or str(r.get("resourceType"))}} for r in resources
        ],
    }


def patient(system: str, value: str) -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": value}],
        "name": [{"family": "Errorcase"}],
        "gender": "unknown",
        "birthDate": "1970-01-01",
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/fhir/Provenance/x"),
        ("DELETE", "/fhir/AuditEvent/x"),
        ("PATCH", "/fhir/Organization/x"),
        ("POST", "/fhir/CarePlan"),
        ("DELETE", "/fhir/Patient"),
        ("PUT", "/fhir/metadata"),
    ],
)
def test_405_names_the_allowed_methods(client: Any, method: str, path: str) -> None:
    r = client.open(path, method=method, json={"resourceType": "Patient"})
    outcome(r, 405)
    assert r.headers["Allow"] and method not in r.headers["Allow"].split(", ")


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/fhir/Patient?_format=xml", {}),
        ("/fhir/Patient?_format=application/fhir%2Bxml", {}),
        ("/fhir/Patient", {"Accept": "application/fhir+xml"}),
        ("/fhir/metadata", {"Accept": "text/html"}),
    ],
)
def test_406_when_only_xml_or_html_is_acceptable(client: Any, path: str, headers: dict) -> None:
    assert outcome(client.get(path, headers=headers), 406)[0]["code"] == "not-supported"


@pytest.mark.parametrize("path", ["/fhir", "/fhir/$validate", "/fhir/Patient/$validate"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/fhir+xml"])
def test_415_for_a_body_that_is_not_json(client: Any, path: str, content_type: str) -> None:
    outcome(client.post(path, data="<Patient/>", content_type=content_type), 415)


def test_409_a_second_patient_with_a_registered_mrn(client: Any) -> None:
    assert client.post("/fhir", json=bundle(patient("https://ehr.example.org/mrn", "E-409"))).status_code == 200
    issues = outcome(client.post("/fhir", json=bundle(patient("https://ehr.example.org/mrn", "E-409"))), 409)
    assert issues[0]["expression"] == ["Bundle.entry[0].resource.identifier"]


def test_412_a_conditional_put_that_matches_more_than_one_resource(client: Any) -> None:
    for system in ("https://ehr-a.example.org/mrn", "https://ehr-b.example.org/mrn"):
        assert client.post("/fhir", json=bundle(patient(system, "E-412"))).status_code == 200
    body = bundle(patient("https://ehr-a.example.org/mrn", "E-412"), method="PUT", url="Patient?identifier=E-412")
    issues = outcome(client.post("/fhir", json=body), 412)
    assert issues[0]["code"] == "multiple-matches" and issues[0]["expression"] == ["Bundle.entry[0].request.url"]


def test_a_batch_answers_412_for_the_conditional_entry_that_matches_more_than_one_and_stores_the_rest(
    client: Any,
) -> None:
    for system in ("https://ehr-a.example.org/mrn", "https://ehr-b.example.org/mrn"):
        assert client.post("/fhir", json=bundle(patient(system, "B-412"))).status_code == 200
    body = {
        **bundle(patient("https://ehr-a.example.org/mrn", "B-412"), patient("https://ehr-c.example.org/mrn", "B-200")),
        "type": "batch",
    }
    body["entry"][0]["request"] = {"method": "PUT", "url": "Patient?identifier=B-412"}
    r = client.post("/fhir", json=body)
    assert r.status_code == 200, r.get_data(as_text=True)
    first, second = (e["response"] for e in r.get_json()["entry"])
    assert first["status"] == "412", first
    assert first["outcome"]["issue"][0]["code"] == "multiple-matches"
    assert first["outcome"]["issue"][0]["expression"] == ["Bundle.entry[0].request.url"]
    assert second["status"].startswith("201"), second
    assert client.get("/fhir/Patient", query_string={"identifier": "B-200"}).get_json()["total"] == 1


def test_422_profile_violation_and_incoherent_content(client: Any) -> None:
    bad_code = json.loads((INVALID / "bad-code-required-binding.json").read_text())["resource"]
    issues = outcome(client.post("/fhir", json=bundle(bad_code)), 422)
    assert "Bundle.entry[0].resource.status" in [e for i in issues for e in i["expression"]]
    # kap-off-label-1 is a warning-level constraint: it does not refuse; a dosing order that names no episode is
    off_label = json.loads((INVALID / "off-label-without-reason.json").read_text())["resource"]
    issues = outcome(client.post("/fhir", json=bundle(off_label)), 422)
    assert issues[0]["expression"] == ["Bundle.entry[0].resource.encounter"]
    no_mrn = {k: v for k, v in patient("x", "y").items() if k != "identifier"}
    assert outcome(client.post("/fhir", json=bundle(no_mrn)), 422)[0]["expression"] == [
        "Bundle.entry[0].resource.identifier"
    ]


@pytest.mark.parametrize(
    "body",
    [
        bundle({"resourceType": "Nonsense"}),
        bundle({"resourceType": "Patient"}, {"resourceType": "Bogus", "id": "1"}),
        bundle({"resourceType": 42}),
        bundle({"resourceType": "patient"}),
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "X"}}]},
        {"resourceType": "Bundle", "type": "transaction", "entry": "nope"},
        {"resourceType": "Bundle", "type": "searchset", "entry": []},
        {"resourceType": "Nonsense"},
        [],
    ],
)
def test_400_for_an_unknown_resource_type_or_a_malformed_bundle(client: Any, body: Any) -> None:
    outcome(client.post("/fhir", json=body), 400)


@pytest.mark.parametrize(
    "body",
    [
        bundle({"resourceType": "Nonsense"}),
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Bogus"}}]},
        {"resourceType": "Nonsense"},
        {"resourceType": "Patient", "birthDate": {"not": "a date"}},
        {"resourceType": "Observation", "status": 5, "code": []},
    ],
)
def test_validate_reports_unknown_types_as_issues_and_never_fails(client: Any, body: Any) -> None:
    r = client.post("/fhir/$validate", json=body)
    assert r.status_code == 200, r.get_data(as_text=True)
    issues = r.get_json()["issue"]
    assert any(i["severity"] in ("error", "fatal") for i in issues)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/fhir/Nope/$validate", 404),
        ("/fhir/SubscriptionStatus/$validate", 404),  # R4B's, in the npm package of R4 definitions: not R4's
        ("/fhir/Nope/x", 404),
        ("/fhir/Nope/x/_history/1", 404),
        ("/fhir/Patient/x/_history/abc", 404),
        ("/fhir/Patient?_count=abc", 400),
        ("/fhir/Patient?birthdate=1990-02-30", 400),
        ("/fhir/Patient?_sort=name", 400),
        ("/fhir/Patient?_include=Patient:nope", 400),
        ("/fhir/Patient?gender:foo=x", 400),
    ],
)
def test_bad_reads_and_searches(client: Any, path: str, status: int) -> None:
    method = "POST" if path.endswith("$validate") else "GET"
    outcome(client.open(path, method=method, json={"resourceType": "Patient"}), status)


def test_malformed_json_is_400(client: Any) -> None:
    for path in ("/fhir", "/fhir/$validate"):
        outcome(client.post(path, data='{"resourceType": "Bundle",', content_type=FHIR_JSON), 400)


# R4 resource types that kapfhir does not keep, and that the R4B models lack (the reference check reads those): a
# valid one in a Bundle used to stop that check with a 500 once the type was known to be R4.
R4_ONLY = [
    {"resourceType": "MedicinalProduct", "name": [{"productName": "Synthetic ketamine product"}]},
    {"resourceType": "SubstanceProtein", "numberOfSubunits": 1},
]


@pytest.mark.parametrize("resource", R4_ONLY, ids=lambda r: r["resourceType"])
def test_a_transaction_with_an_r4_type_not_kept_here_is_refused_naming_the_entry(client: Any, resource: dict) -> None:
    issues = outcome(
        client.post("/fhir", json=bundle(patient("urn:oid:2.16.840.1.113883.19.5", "R4-1"), resource)), 400
    )
    assert [(i["code"], i["expression"]) for i in issues] == [("not-supported", ["Bundle.entry[1].request.url"])]
    assert resource["resourceType"] in issues[0]["diagnostics"] and "not served here" in issues[0]["diagnostics"]
    found = client.get("/fhir/Patient", query_string={"identifier": "urn:oid:2.16.840.1.113883.19.5|R4-1"})
    assert found.get_json()["total"] == 0  # nothing of the transaction was stored


@pytest.mark.parametrize("resource", R4_ONLY, ids=lambda r: r["resourceType"])
def test_a_batch_refuses_only_the_entry_of_an_r4_type_not_kept_here(client: Any, resource: dict) -> None:
    value = f"R4-batch-{resource['resourceType']}"
    body = {**bundle(resource, patient("urn:oid:2.16.840.1.113883.19.5", value)), "type": "batch"}
    r = client.post("/fhir", json=body)
    assert r.status_code == 200, r.get_data(as_text=True)
    refused, created = r.get_json()["entry"]
    assert refused["response"]["status"].startswith("4")
    assert refused["response"]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[0].request.url"]
    assert created["response"]["status"].startswith("201")


@pytest.mark.parametrize("resource", R4_ONLY, ids=lambda r: r["resourceType"])
def test_validate_checks_a_bundle_with_an_r4_type_the_r4b_models_lack(client: Any, resource: dict) -> None:
    collection = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": "urn:uuid:0d4c9f5e-6b1a-4c53-9a8e-2f7d3b1c5e01", "resource": resource}],
    }
    r = client.post("/fhir/Bundle/$validate", json=collection)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert not [i for i in r.get_json()["issue"] if i["severity"] in ("error", "fatal")], r.get_json()


@pytest.mark.parametrize("value", [5, {"not": "a uri"}, None, ["http://hl7.org/fhir/StructureDefinition/Patient"]])
def test_validate_with_a_profile_parameter_that_is_no_uri_is_a_400_naming_it(client: Any, value: Any) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": {"resourceType": "Patient"}},
            {"name": "profile", "valueUri": value},
        ],
    }
    issues = outcome(client.post("/fhir/$validate", json=body), 400)
    assert issues[0]["expression"] == ["Parameters.parameter[1]"]


@pytest.mark.parametrize("meta", ["x", 5, {"profile": 5}, {"profile": [5]}, {"profile": [None, {}]}])
def test_a_malformed_meta_in_a_transaction_is_a_400_naming_it(client: Any, meta: Any) -> None:
    # whether an entry claims a kapfhir profile is asked of meta.profile before the structure is reported
    issues = outcome(client.post("/fhir", json=bundle({"resourceType": "Patient", "meta": meta})), 400)
    assert any(i["expression"][0].startswith("Bundle.entry[0].resource.meta") for i in issues), issues


@pytest.mark.parametrize("condition", [{"identifier": "a|b"}, 5, ["identifier=a|b"], True])
def test_an_if_none_exist_that_is_no_string_is_a_400_naming_it(client: Any, condition: Any) -> None:
    body = bundle(patient("urn:oid:2.16.840.1.113883.19.5", "INE-1"))
    body["entry"][0]["request"]["ifNoneExist"] = condition
    issues = outcome(client.post("/fhir", json=body), 400)
    assert issues[0]["expression"] == ["Bundle.entry[0].request.ifNoneExist"]


def _pcl5_answer(item: Any) -> dict:
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": "https://kapfhir.example.org/fhir/Questionnaire/pcl-5",
        "status": "completed",
        "item": [item],
    }


@pytest.mark.parametrize(
    "item",
    [
        {"linkId": "/pcl-5-item-1", "answer": 2.5},
        {"linkId": "/pcl-5-item-1", "answer": ["quite a bit"]},
        {"linkId": "/pcl-5-item-1", "answer": [{"valueCoding": "pcl-5-3"}]},
        {"linkId": "/pcl-5-item-1", "answer": [{"valueCoding": {"system": ["x"], "code": "pcl-5-3"}}]},
        {"linkId": {"not": "a string"}, "answer": []},
        {"linkId": "/pcl-5-item-1", "item": 7},
    ],
)
def test_a_malformed_questionnaire_response_is_reported_never_a_500(client: Any, item: Any) -> None:
    # kapfhir's check of answers against its own Questionnaires met shapes the structure layer refuses
    resource = _pcl5_answer(item)
    outcome(client.post("/fhir", json=bundle(resource)), 400)
    r = client.post("/fhir/QuestionnaireResponse/$validate", json=resource)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert any(i["severity"] in ("error", "fatal") for i in r.get_json()["issue"])


def test_a_batch_validates_every_resource_even_beside_an_entry_it_refuses(client: Any) -> None:
    # an entry refused for its request (DELETE) used to let the other entries through unvalidated
    unknown = {**patient("urn:oid:2.16.840.1.113883.19.5", "BV-1"), "unknownElement": 5}
    body = {
        **bundle({"resourceType": "Patient"}, unknown, patient("urn:oid:2.16.840.1.113883.19.5", "BV-2")),
        "type": "batch",
    }
    body["entry"][0]["request"] = {"method": "DELETE", "url": "Patient/x"}
    r = client.post("/fhir", json=body)
    assert r.status_code == 200, r.get_data(as_text=True)
    first, second, third = (e["response"] for e in r.get_json()["entry"])
    assert first["status"] == "400" and second["status"] == "400"
    assert second["outcome"]["issue"][0]["expression"] == ["Bundle.entry[1].resource.unknownElement"]
    assert third["status"].startswith("201")
    found = client.get("/fhir/Patient", query_string={"identifier": "urn:oid:2.16.840.1.113883.19.5|BV-1"})
    assert found.get_json()["total"] == 0


def test_a_batch_names_the_entry_a_refusal_is_about_in_the_whole_bundle(client: Any) -> None:
    no_mrn = {k: v for k, v in patient("x", "y").items() if k != "identifier"}
    body = {**bundle({"resourceType": "Patient"}, no_mrn), "type": "batch"}
    body["entry"][0]["request"] = {"method": "DELETE", "url": "Patient/x"}
    r = client.post("/fhir", json=body)
    assert r.status_code == 200, r.get_data(as_text=True)
    refused = r.get_json()["entry"][1]["response"]
    assert refused["status"].startswith("4")
    assert all(e.startswith("Bundle.entry[1]") for i in refused["outcome"]["issue"] for e in i["expression"]), refused


@pytest.mark.parametrize(
    ("request_", "expression"),
    [
        ({"method": "POST", "url": "Patient", "ifNoneExist": 5}, "Bundle.entry[0].request.ifNoneExist"),
        ({"method": "POST", "url": "Patient", "ifNoneExist": "name=Errorcase"}, "Bundle.entry[0].request.ifNoneExist"),
        ({"method": "PUT", "url": "Patient?family=Errorcase"}, "Bundle.entry[0].request.url"),
        ({"method": "POST", "url": 5}, "Bundle.entry[0].request.url"),
        ({"method": "PUT", "url": ""}, "Bundle.entry[0].request.url"),
    ],
)
def test_a_request_kapfhir_cannot_read_refuses_its_entry_alone_in_a_batch_and_a_transaction_whole(
    client: Any, request_: dict, expression: str
) -> None:
    """A malformed condition or url is about one entry: a batch answers 400 for it and stores the others; a
    transaction answers 400 naming it and stores nothing."""
    system = "urn:oid:2.16.840.1.113883.19.5"
    for kind, kept in (("transaction", "RQ-T"), ("batch", "RQ-B")):
        values = (f"{kept}-{uuid.uuid4().hex[:12]}", f"{kept}-{uuid.uuid4().hex[:12]}")
        body = {**bundle(patient(system, values[0]), patient(system, values[1])), "type": kind}
        body["entry"][0]["request"] = request_
        r = client.post("/fhir", json=body)
        if kind == "transaction":
            assert [i["expression"] for i in outcome(r, 400)] == [[expression]]
        else:
            assert r.status_code == 200, r.get_data(as_text=True)
            first, second = (e["response"] for e in r.get_json()["entry"])
            assert first["status"] == "400", first
            assert first["outcome"]["issue"][0]["expression"] == [expression]
            assert second["status"].startswith("201"), second
        stored = {
            value: client.get("/fhir/Patient", query_string={"identifier": f"{system}|{value}"}).get_json()["total"]
            for value in values
        }
        assert stored == {values[0]: 0, values[1]: 0 if kind == "transaction" else 1}

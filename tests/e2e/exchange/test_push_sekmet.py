"""Push and pull against a real FHIR server (sekmet-fhir started by the harness)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from mappings.bundle import to_transaction_bundle
from service.domain.model import SideEffect
from service.domain.vocabulary import SideEffectSeverity
from service.exchange.client import FhirClient, Recorder
from service.exchange.planner import (
    BATCH,
    SINGLE,
    TRANSACTION,
    Links,
    PushPolicy,
    parse_capabilities,
    plan_push,
    walk_references,
)
from service.exchange.push import CREATED, EXISTING, UPDATED, execute_plan, pull_patient, push_bundle
from service.exchange.targets import Target
from tests.support.charts import CHARTS, T0, bundle_of, unique_chart
from tests.support.exchange import NOW, ORG, assert_each_once, consent, push_again, sandbox_target
from tests.support.proxy import FaultProxy, only_types, without_interactions
from tests.support.sekmet import Sekmet


@pytest.mark.parametrize("name", sorted(CHARTS))
def test_every_fixture_episode_pushed_and_readable_with_references_intact(sekmet: Sekmet, name: str) -> None:
    bundle = bundle_of(unique_chart(name))
    with FhirClient(sekmet.base_url) as client:
        report = push_bundle(
            client, sandbox_target(sekmet.base_url), bundle, consents=[consent(substance_use_disclosure=True)], now=NOW
        )
    assert report.ok, report.as_dict()
    assert report.mode == TRANSACTION
    assert_each_once(sekmet, bundle, report)
    # skipped types are reported, never silently dropped: sekmet 0.1.1 cannot search these by identifier
    skipped = {r.resource_type for r in report.results if r.outcome == "skipped"}
    assert skipped <= {"QuestionnaireResponse", "AdverseEvent", "DetectedIssue"}
    assert len(report.results) == len(bundle["entry"])
    # references resolve on the server
    for result in report.results:
        if result.remote_id is None:
            continue
        resource = sekmet.read(f"{result.resource_type}/{result.remote_id}")
        for ref in walk_references(resource):
            assert not ref["reference"].startswith("urn:uuid:"), (result.key, ref)
            if ref["reference"].startswith("#"):
                continue
            sekmet.read(ref["reference"])  # raises when dangling
    patient = sekmet.read(f"Patient/{report.patient_id}")
    assert patient["name"][0]["family"] == "Doe"


def test_second_push_creates_nothing_and_links_make_it_silent(sekmet: Sekmet) -> None:
    bundle = bundle_of(unique_chart("racemic-iv-trd"))
    target = sandbox_target(sekmet.base_url)
    with FhirClient(sekmet.base_url) as client:
        first = push_bundle(client, target, bundle, consents=[consent()], now=NOW)
        assert first.ok and first.totals()[CREATED] > 30
        again = push_bundle(client, target, bundle, consents=[consent()], now=NOW)  # no links kept
        assert again.ok and again.totals()[CREATED] == 0
        assert_each_once(sekmet, bundle, again)
        recorder = Recorder().attach(client)
        silent = push_again(client, target, bundle, first, capabilities=client.capabilities())
    assert silent.ok and silent.mode == "none"
    assert recorder.calls == []  # nothing changed: nothing sent
    assert silent.totals()[EXISTING] == len(first.remote)


def test_an_amended_record_goes_out_as_an_update_with_if_match(sekmet: Sekmet) -> None:
    chart = unique_chart("racemic-iv-trd")
    target = sandbox_target(sekmet.base_url)
    with FhirClient(sekmet.base_url) as client:
        first = push_bundle(client, target, bundle_of(chart), consents=[consent()], now=NOW)
        assert first.ok
        # amend the side effect: severity moderate -> severe (domain version 3)
        old = chart.episode.records["ae-1"]
        chart.episode.amend("ae-1", replace(old, severity=SideEffectSeverity.SEVERE), now=T0 + timedelta(hours=4))
        assert isinstance(chart.episode.records["ae-1"], SideEffect)
        dose = chart.episode.records["dose-1"]
        chart.episode.amend(
            "dose-1",
            replace(
                dose,
                dose_mg=34.0,
                controlled_substance=replace(
                    dose.controlled_substance, amount_administered_mg=34.0, amount_wasted_mg=16.0
                ),
            ),
            now=T0 + timedelta(hours=4),
        )
        bundle = to_transaction_bundle(chart)
        recorder = Recorder().attach(client)
        second = push_again(client, target, bundle, first)
    assert second.ok, second.as_dict()
    updated = {r.resource_type for r in second.results if r.outcome == UPDATED}
    assert "MedicationAdministration" in updated
    # only a new Provenance (its id is derived from the record versions it attests) is created
    assert {r.resource_type for r in second.results if r.outcome == CREATED} <= {"Provenance"}
    ma = next(r for r in second.results if r.resource_type == "MedicationAdministration")
    before = next(r for r in first.results if r.key == ma.key)
    assert ma.remote_id == before.remote_id and int(ma.version) > int(before.version)
    server_ma = sekmet.read(f"MedicationAdministration/{ma.remote_id}")
    assert server_ma["dosage"]["dose"]["value"] == 34.0
    assert recorder.calls == [("POST", "/fhir")]  # one transaction with only the changed resources


def test_if_match_conflict_is_reported_retried_and_not_overwritten(sekmet: Sekmet) -> None:
    chart = unique_chart("discontinued-pcl5")
    target = sandbox_target(sekmet.base_url)
    with FhirClient(sekmet.base_url) as client:
        first = push_bundle(client, target, bundle_of(chart), consents=[consent()], now=NOW)
        enc = next(r for r in first.results if r.resource_type == "Encounter")
        # someone else updates the Encounter on the server
        resource = sekmet.read(f"Encounter/{enc.remote_id}")
        resource["status"] = "cancelled"
        client.update(resource)
        session = chart.episode.records["s-p-assess"]
        chart.episode.amend(
            "s-p-assess", replace(session, end=session.end + timedelta(minutes=5)), now=T0 + timedelta(days=6)
        )
        # Pushed twice, the second time as the outbox retries it: the links say what kapfhir recorded, so the edit
        # made on the server is still not overwritten.
        second, third = (push_again(client, target, to_transaction_bundle(chart), first) for _ in range(2))
    assert not second.ok
    assert {r.status for r in second.failed} == {412}
    # Retried rather than given up at once: the version kapfhir knew may have been overtaken by another of its own
    # workers pushing a resource several episodes share, which a later attempt plans from.
    assert second.retryable
    assert not third.ok and {r.status for r in third.failed} == {412}
    assert sekmet.read(f"Encounter/{enc.remote_id}")["status"] == "cancelled"


def test_pull_patient_by_mrn_reports_differences_and_candidate_indications(sekmet: Sekmet) -> None:
    chart = unique_chart("racemic-iv-trd")
    ehr_patient = sekmet.create(
        {
            "resourceType": "Patient",
            "identifier": [{"system": chart.patient.mrn.system, "value": chart.patient.mrn.value}],
            "name": [{"family": "Doe-Smith", "given": ["Jane"]}],
            "gender": "female",
            "birthDate": "1984-05-17",
        }
    )
    sekmet.create(
        {
            "resourceType": "Condition",
            "subject": {"reference": f"Patient/{ehr_patient['id']}"},
            "code": {
                "coding": [
                    {
                        "system": "http://hl7.org/fhir/sid/icd-10-cm",
                        "code": "F33.1",
                        "display": "Major depressive disorder, recurrent, moderate",
                    }
                ]
            },
            "clinicalStatus": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
            },
        }
    )
    target = Target(name="ehr", base_url=sekmet.base_url, write_policy="ehr", organization_identifier=ORG)
    result = pull_patient(
        target, chart.patient.mrn.system, chart.patient.mrn.value, local=chart.patient, conditions=True
    )
    assert result.found and result.patient_id == ehr_patient["id"]
    assert {d.field for d in result.differences} == {"name.family", "name.given"}
    assert result.conditions[0].icd10cm == "F33.1" and result.conditions[0].suggested_kind == "depression"
    missing = pull_patient(target, chart.patient.mrn.system, "nope")
    assert not missing.found and missing.patient_id is None


def test_ehr_target_never_gets_a_patient_and_unlinked_gets_nothing(sekmet: Sekmet) -> None:
    chart = unique_chart("esketamine-sud")
    bundle = bundle_of(chart)
    target = Target(name="ehr", base_url=sekmet.base_url, write_policy="ehr", organization_identifier=ORG)
    permit = consent(substance_use_disclosure=True)
    with FhirClient(sekmet.base_url) as client:
        caps = client.capabilities()
        recorder = Recorder().attach(client)
        held = push_bundle(client, target, bundle, consents=[permit], now=NOW, capabilities=caps)
        assert held.held and "not linked" in held.held
        assert recorder.calls == []
        ehr_patient = sekmet.create(
            {
                "resourceType": "Patient",
                "identifier": [{"system": chart.patient.mrn.system, "value": chart.patient.mrn.value}],
                "name": [{"family": "Doe"}],
                "gender": "female",
                "birthDate": "1984-05-17",
            }
        )
        link = pull_patient(client, chart.patient.mrn.system, chart.patient.mrn.value)
        report = push_bundle(
            client, target, bundle, consents=[permit], now=NOW, links=Links(patient_id=link.patient_id)
        )
    assert report.ok, report.as_dict()
    assert not {r.resource_type for r in report.results} & {"Patient", "Practitioner", "Organization"}
    assert sekmet.count("Patient", f"identifier={chart.patient.mrn.system}|{chart.patient.mrn.value}") == 1
    own_system = f"{chart.clinic.identifier_system}/patient"
    assert sekmet.count("Patient", f"identifier={own_system}|{chart.patient.id}") == 0
    assert sekmet.count("Practitioner", f"identifier={chart.clinic.identifier_system}/practitioner|dr-ada") == 0
    enc = next(r for r in report.results if r.key.endswith("/session|s-esk-1"))
    server_enc = sekmet.read(f"Encounter/{enc.remote_id}")
    assert server_enc["subject"]["reference"] == f"Patient/{ehr_patient['id']}"
    assert server_enc["participant"][0]["individual"]["identifier"] == {
        "system": "http://hl7.org/fhir/sid/us-npi",
        "value": "1234567893",
    }
    assert server_enc["serviceProvider"]["identifier"] == {"system": ORG.system, "value": ORG.value}


def test_nothing_pushed_without_privacy_consent_or_part2_permission(sekmet: Sekmet) -> None:
    target = sandbox_target(sekmet.base_url)
    sud = bundle_of(unique_chart("esketamine-sud"))
    with FhirClient(sekmet.base_url) as client:
        recorder = Recorder().attach(client)
        none = push_bundle(client, target, sud, consents=[], now=NOW)
        assert none.held and "privacy consent" in none.held
        part2 = push_bundle(client, target, sud, consents=[consent()], now=NOW)
        assert part2.held and "42 CFR Part 2" in part2.held
        expired = push_bundle(
            client,
            target,
            sud,
            now=NOW,
            consents=[consent(substance_use_disclosure=True, period_end=NOW - timedelta(days=1))],
        )
        assert expired.held
    assert recorder.calls == []
    patient_system = next(
        e["resource"]["identifier"][0]["system"] for e in sud["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    assert sekmet.count("Patient", f"identifier={patient_system}|pt-2") == 0


@pytest.mark.parametrize(("dropped", "mode"), [(("transaction",), BATCH), (("transaction", "batch"), SINGLE)])
def test_target_without_transaction_support_still_receives_everything(
    sekmet: Sekmet, proxy: FaultProxy, dropped: tuple[str, ...], mode: str
) -> None:
    proxy.capability_transform = without_interactions(*dropped)
    proxy.metadata_content_type = "application/json"  # a real-server difference
    proxy.strip_location_on_200 = True  # matching conditional creates answered 200 without Location
    bundle = bundle_of(unique_chart("racemic-iv-trd"))
    base = f"{proxy.url}/fhir"
    with FhirClient(base) as client:
        first = push_bundle(client, sandbox_target(base), bundle, consents=[consent()], now=NOW)
        assert first.ok, first.as_dict()
        assert first.mode == mode
        again = push_bundle(client, sandbox_target(base), bundle, consents=[consent()], now=NOW)
    assert again.ok and again.totals()[CREATED] == 0
    assert {r.remote_id for r in again.results if r.outcome == EXISTING} <= set(
        first.remote[k].id for k in first.remote
    )
    assert_each_once(sekmet, bundle, again)
    encounter = next(r for r in first.results if r.resource_type == "Encounter")
    assert sekmet.read(f"Encounter/{encounter.remote_id}")["subject"]["reference"] == f"Patient/{first.patient_id}"


def test_search_first_when_the_server_has_no_conditional_interactions(sekmet: Sekmet, proxy: FaultProxy) -> None:
    every = ["create", "update", "read", "search-type"]
    proxy.capability_transform = only_types(
        {
            t: every
            for t in (
                "Patient",
                "Practitioner",
                "Organization",
                "Encounter",
                "Observation",
                "Condition",
                "EpisodeOfCare",
                "CarePlan",
                "Procedure",
                "MedicationRequest",
                "Consent",
            )
        },
        conditional=False,
    )
    bundle = bundle_of(unique_chart("discontinued-pcl5"))
    base = f"{proxy.url}/fhir"
    with FhirClient(base) as client:
        caps = parse_capabilities(client.capabilities())
        plan = plan_push(bundle, caps, PushPolicy(write_policy="sandbox"), Links())
        assert plan.mode == SINGLE and all(r.search_first for r in plan.requests if r.resource_type != "Provenance")
        first = execute_plan(client, plan)
        second = execute_plan(client, plan_push(bundle, caps, PushPolicy(write_policy="sandbox"), Links()))
    assert first.ok and second.ok, (first.as_dict(), second.as_dict())
    assert second.totals()[CREATED] == 0
    assert_each_once(sekmet, bundle, second)
    assert any(r.resource_type == "QuestionnaireResponse" and r.outcome == "skipped" for r in first.results)

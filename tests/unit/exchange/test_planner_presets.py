"""The pure planner against every preset's documented CapabilityStatement, for every fixture episode."""

from __future__ import annotations

import pytest

from mappings.bundle import to_transaction_bundle
from mappings.resources.document_reference import summary_text
from service.exchange.planner import (
    ADMINISTRATIVE_TYPES,
    NONE,
    SINGLE,
    TRANSACTION,
    Links,
    PushPolicy,
    entry_key,
    parse_capabilities,
    plan_push,
)
from service.exchange.targets import PRESETS, preset_fixture, target_from_dict
from tests.support.charts import CHARTS, NOTE

LINKS = Links(patient_id="ehr-pt-1", practitioner_ids={"th-carl": "ehr-prac-9"})


def plan_for(preset: str, chart: str, links: Links = LINKS):
    target = target_from_dict(
        preset,
        {
            "preset": preset,
            "organization_identifier": "urn:oid:2.16.840.1.1|org-1",
            **(
                {"auth": {"client_id": "c", "client_secret_env": "X", "private_key_path": "k"}}
                if preset in ("medplum",)
                else {}
            ),
            **({"auth": {"client_id": "c", "private_key_path": "k"}} if preset == "epic-sandbox" else {}),
        },
        environ={"X": "secret"},
    )
    caps = parse_capabilities(preset_fixture(preset, "capability-statement"))
    bundle = to_transaction_bundle(CHARTS[chart]())
    return target, bundle, plan_push(bundle, caps, PushPolicy.for_target(target), links)


@pytest.mark.parametrize("chart", sorted(CHARTS))
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_plans_every_episode_without_silent_drops(preset: str, chart: str) -> None:
    target, bundle, plan = plan_for(preset, chart)
    assert preset_fixture(preset, "capability-statement")["_source"]
    assert preset_fixture(preset, "smart-configuration")["_source"]
    if target.read_only:
        assert plan.mode == NONE and "read-only" in plan.held
        return
    planned = {r.key for r in plan.requests} | {s.key for s in plan.skipped} | {u.key for u in plan.unchanged}
    for entry in bundle["entry"]:
        rtype = entry["resource"]["resourceType"]
        key = entry_key(entry)
        linked = rtype == "Patient" or key.endswith("|th-carl")
        if rtype in ADMINISTRATIVE_TYPES and (target.write_policy == "ehr" or linked):
            assert key not in planned  # never created on an EHR; a linked patient is referenced
        else:
            assert key in planned, key  # sent or reported, never silently dropped
    for req in plan.requests:
        assert not any(
            str(v).startswith("urn:uuid:") and v not in {r.full_url for r in plan.requests} for v in _refs(req.resource)
        ), req.key
    if target.write_policy == "ehr":
        assert not {r.resource_type for r in plan.requests} & set(ADMINISTRATIVE_TYPES)


def _refs(node):
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node["reference"]
        for v in node.values():
            yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def test_epic_gets_session_summaries_in_single_mode() -> None:
    _, _, plan = plan_for("epic-sandbox", "racemic-iv-trd")
    assert plan.mode == SINGLE
    types = {r.resource_type for r in plan.requests}
    assert types == {"Condition", "Observation", "DocumentReference"}
    skipped = {s.resource_type for s in plan.skipped}
    assert {"MedicationAdministration", "Consent", "CarePlan"} <= skipped
    summaries = [r for r in plan.requests if r.resource_type == "DocumentReference" and "session-summary" in r.key]
    assert len(summaries) == 4  # one per session
    dosing = next(r for r in summaries if r.key.endswith("|s-dose-1"))
    text = summary_text(dosing.resource)
    assert "35 mg" in text and "Doses:" in text and "Vitals and monitoring:" in text
    # every section is there, in order; the dosing session has no questionnaire, so no score is listed
    sections = ["Doses:", "Vitals and monitoring:", "Scores:", "Side effects:", "Safety flags:"]
    assert [text.index(s) for s in sections] == sorted(text.index(s) for s in sections)
    assert "Scores:\n- none recorded\n" in text and "PHQ-9" not in text
    assert "Nausea" in text and NOTE not in text and "SECRET-NOTE-MARKER" not in text
    assert dosing.resource["subject"] == {"reference": "Patient/ehr-pt-1"}
    assert dosing.resource["category"][0]["coding"][0]["code"] == "clinical-note"
    authors = dosing.resource["author"]
    assert {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"} in [a.get("identifier") for a in authors]
    assert all(r.search_first for r in plan.requests)  # no conditional create documented: search, then create


def test_epic_gets_the_treatment_consent_as_a_document() -> None:
    _, bundle, plan = plan_for("epic-sandbox", "racemic-iv-trd")
    consents = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Consent"]
    documents = [r for r in plan.requests if r.resource_type == "DocumentReference" and "consent-document" in r.key]
    assert len(documents) == len(consents) >= 1
    document = documents[0].resource
    assert document["type"]["coding"] == [{"system": "http://loinc.org", "code": "59284-0"}]
    form = next(p["uri"] for p in consents[0]["policy"])
    assert {"contentType": "text/html", "url": form, "title": "Consent form (blank, versioned)"} in [
        c["attachment"] for c in document["content"]
    ]
    assert "Signed: " + consents[0]["dateTime"] in summary_text(document)
    assert document["subject"] == {"reference": "Patient/ehr-pt-1"}
    assert any("consent sent as a DocumentReference" in note for note in plan.notes)


def test_a_target_that_takes_consent_gets_no_consent_document() -> None:
    _, _, plan = plan_for("hapi-public", "racemic-iv-trd")
    assert not [r for r in plan.requests if "consent-document" in r.key]


def test_integration_session_author_uses_the_linked_practitioner() -> None:
    _, _, plan = plan_for("epic-sandbox", "racemic-iv-trd")
    doc = next(r for r in plan.requests if r.key.endswith("|s-int-1"))
    assert doc.resource["author"] == [{"reference": "Practitioner/ehr-prac-9"}]


def test_unlinked_patient_gets_nothing_on_an_ehr() -> None:
    _, _, plan = plan_for("epic-sandbox", "esketamine-sud", links=Links())
    assert plan.mode == NONE and plan.requests == [] and "not linked" in plan.held


def test_hapi_gets_one_transaction_with_everything() -> None:
    _, bundle, plan = plan_for("hapi-public", "racemic-iv-trd", links=Links())
    assert plan.mode == TRANSACTION and not plan.skipped
    assert len(plan.requests) == len(bundle["entry"])
    assert plan.to_bundle()["entry"][0]["request"]["ifNoneExist"].startswith("identifier=")


def test_oracle_open_is_read_only() -> None:
    _, _, plan = plan_for("oracle-open", "discontinued-pcl5")
    assert plan.mode == NONE and plan.held

"""Forward mapping: expected bundles, R4B structure, validation layers, identity, labels, corrections, notes."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import timedelta

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from mappings import terminology as t
from mappings.bundle import dumps, from_bundle, to_collection_bundle, to_transaction_bundle, without_notes
from service.domain.chart import EpisodeChart
from tests.support.charts import CHARTS, NOTE
from tests.support.paths import EXPECTED_DIR, REGENERATE
from validation import validate_bundle

FAMILIES = {
    "Organization",
    "Practitioner",
    "Patient",
    "Condition",
    "EpisodeOfCare",
    "CarePlan",
    "Encounter",
    "Procedure",
    "Consent",
    "MedicationRequest",
    "MedicationAdministration",
    "MedicationStatement",
    "Observation",
    "QuestionnaireResponse",
    "DetectedIssue",
    "Flag",
    "AdverseEvent",
    "Provenance",
    "Task",  # the Spravato REMS form's due date and sending
}


def resources(bundle: dict, resource_type: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def entry_of(bundle: dict, resource_type: str, value: str) -> dict:
    for entry in bundle["entry"]:
        resource = entry["resource"]
        idents = resource.get("identifier", [])
        idents = [idents] if isinstance(idents, dict) else idents
        if resource["resourceType"] == resource_type and any(i["value"] == value for i in idents):
            return entry
    raise AssertionError(f"no {resource_type} {value}")


def test_transaction_bundle_equals_the_expected_fixture_byte_for_byte(named_chart: tuple[str, EpisodeChart]) -> None:
    name, chart = named_chart
    path = EXPECTED_DIR / f"{name}.json"
    produced = orjson.dumps(to_transaction_bundle(chart), option=orjson.OPT_INDENT_2) + b"\n"
    if REGENERATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(produced)
    assert path.read_bytes() == produced, f"{path} differs: rerun with KAPFHIR_REGEN_FHIR_FIXTURES=1 and review"


def test_mapping_twice_is_byte_identical(named_chart: tuple[str, EpisodeChart]) -> None:
    _, chart = named_chart
    assert dumps(to_transaction_bundle(chart)) == dumps(to_transaction_bundle(chart))
    name = named_chart[0]
    assert dumps(to_transaction_bundle(CHARTS[name]())) == dumps(to_transaction_bundle(chart))


def test_every_resource_validates_with_fhir_resources_r4b(named_chart: tuple[str, EpisodeChart]) -> None:
    _, chart = named_chart
    for bundle in (to_transaction_bundle(chart), to_collection_bundle(chart)):
        Bundle.model_validate(bundle)
        for entry in bundle["entry"]:
            resource = entry["resource"]
            model = get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            assert model.get_resource_type() == resource["resourceType"]


def test_fixture_bundles_pass_every_validation_layer(named_chart: tuple[str, EpisodeChart]) -> None:
    _, chart = named_chart
    assert validate_bundle(to_transaction_bundle(chart)) == []


def test_the_fixtures_emit_every_resource_family() -> None:
    emitted = {e["resource"]["resourceType"] for f in CHARTS.values() for e in to_transaction_bundle(f())["entry"]}
    assert emitted == FAMILIES


def test_psychotherapy_notes_never_appear_in_any_output(named_chart: tuple[str, EpisodeChart]) -> None:
    _, chart = named_chart
    for bundle in (to_transaction_bundle(chart), to_collection_bundle(chart)):
        text = dumps(bundle).decode()
        assert "SECRET-NOTE-MARKER" not in text
        assert NOTE not in text
        assert "accident" not in text


def test_every_resource_carries_restricted_and_psychiatric_labels(named_chart: tuple[str, EpisodeChart]) -> None:
    _, chart = named_chart
    substance_use = name_has_sud = named_chart[0] == "esketamine-sud"
    for entry in to_transaction_bundle(chart)["entry"]:
        labels = {(c["system"], c["code"]) for c in entry["resource"]["meta"]["security"]}
        assert (t.V3_CONFIDENTIALITY, "R") in labels
        assert (t.V3_ACT_CODE, "PSY") in labels
        assert ((t.V3_ACT_CODE, "ETH") in labels) is substance_use is name_has_sud


def test_entries_are_conditional_creates_on_the_business_identifier() -> None:
    chart = CHARTS["discontinued-pcl5"]()
    bundle = to_transaction_bundle(chart)
    entry = entry_of(bundle, "Consent", "consent-p")
    system = "https://harbor-kap.example.org/fhir/id/consent"
    assert entry["resource"]["identifier"] == [{"system": system, "value": "consent-p"}]
    assert entry["request"] == {"method": "POST", "url": "Consent", "ifNoneExist": f"identifier={system}|consent-p"}
    assert entry["fullUrl"].startswith("urn:uuid:")
    conditions = [e["request"].get("ifNoneExist") or e["request"]["url"] for e in bundle["entry"]]
    assert len(conditions) == len(set(conditions))


def test_an_amended_record_is_a_conditional_update_of_the_same_resource() -> None:
    chart = CHARTS["racemic-iv-trd"]()
    bundle = to_transaction_bundle(chart)
    entry = entry_of(bundle, "AdverseEvent", "ae-1")
    system = "https://harbor-kap.example.org/fhir/id/side-effect"
    assert entry["request"] == {"method": "PUT", "url": f"AdverseEvent?identifier={system}|ae-1"}
    assert entry["resource"]["severity"]["coding"][0]["code"] == "moderate"
    original = replace(chart.episode.records["ae-1"], version=1)
    first = to_transaction_bundle(replace(chart, episode=replace(chart.episode, records={"ae-1": original})))
    assert entry_of(first, "AdverseEvent", "ae-1")["fullUrl"] == entry["fullUrl"]


def test_an_entered_in_error_record_maps_to_status_entered_in_error() -> None:
    bundle = to_transaction_bundle(CHARTS["racemic-iv-trd"]())
    wrong = [
        e
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Observation"
        and e["resource"]["identifier"][0]["value"].startswith("r-wrong.")
    ]
    assert wrong and all(e["resource"]["status"] == "entered-in-error" for e in wrong)
    assert all(e["request"]["method"] == "PUT" for e in wrong)


def test_a_repeated_push_creates_no_second_provenance() -> None:
    chart = CHARTS["racemic-iv-trd"]()
    first, second = to_transaction_bundle(chart), to_transaction_bundle(CHARTS["racemic-iv-trd"]())
    p1, p2 = first["entry"][-1], second["entry"][-1]
    assert p1["request"] == {"method": "PUT", "url": f"Provenance/{p1['resource']['id']}"}
    assert p1 == p2
    targets = {r["reference"] for r in p1["resource"]["target"]}
    assert targets == {e["fullUrl"] for e in first["entry"][:-1]}
    assert p1["resource"]["recorded"] == first["timestamp"]
    amended = copy.deepcopy(chart)
    dose = amended.episode.records["dose-1"]
    amended.episode.records["dose-1"] = replace(dose, version=2, updated_at=dose.updated_at + timedelta(days=1))
    assert to_transaction_bundle(amended)["entry"][-1]["resource"]["id"] != p1["resource"]["id"]


def test_dose_carries_medication_batch_performers_weight_and_waste() -> None:
    bundle = to_transaction_bundle(CHARTS["racemic-iv-trd"]())
    dose = entry_of(bundle, "MedicationAdministration", "dose-1")["resource"]
    medication = dose["contained"][0]
    assert medication["batch"] == {"lotNumber": "LOT-4471", "expirationDate": "2027-01-31"}
    assert {"system": t.NDC, "code": "67457-108-10"} in medication["code"]["coding"]
    assert dose["dosage"]["dose"] == {"value": 35.0, "unit": "mg", "system": t.UCUM, "code": "mg"}
    assert dose["dosage"]["route"]["coding"] == [t.ROUTE[t.Route.INTRAVENOUS]]
    assert [p["function"]["coding"][0]["code"] for p in dose["performer"]] == ["performer", "verifier"]
    weight = entry_of(bundle, "Observation", "w-1")
    assert dose["supportingInformation"] == [{"reference": weight["fullUrl"]}]
    waste = next(e for e in dose["extension"] if e["url"] == t.EXT_WASTE)
    assert {p["url"]: p.get("valueQuantity", {}).get("value") for p in waste["extension"]} == {
        "drawn": 50.0,
        "administered": 35.0,
        "wasted": 15.0,
        "wasteWitness": None,
    }
    off_label = next(e for e in dose["extension"] if e["url"] == t.EXT_OFF_LABEL)
    assert off_label["extension"][0] == {"url": "isOffLabelUse", "valueBoolean": True}


def test_esketamine_for_trd_is_on_label_and_sud_adds_the_eth_label() -> None:
    bundle = to_transaction_bundle(CHARTS["esketamine-sud"]())
    dose = entry_of(bundle, "MedicationAdministration", "dose-e1")["resource"]
    off_label = next(e for e in dose["extension"] if e["url"] == t.EXT_OFF_LABEL)
    assert off_label["extension"][0] == {"url": "isOffLabelUse", "valueBoolean": False}


def test_suicide_risk_is_a_detected_issue_and_an_active_flag() -> None:
    bundle = to_transaction_bundle(CHARTS["racemic-iv-trd"]())
    flags = resources(bundle, "Flag")
    assert len(flags) == 1 and flags[0]["status"] == "active"
    issue = next(
        r for r in resources(bundle, "DetectedIssue") if r["code"]["coding"][0]["code"] == "suicide-risk-positive"
    )
    assert issue["status"] == "final"
    assert issue["mitigation"][0]["action"]["text"] == "Assessed in person; safety plan."


def test_vital_signs_use_the_vital_sign_profiles_and_ucum() -> None:
    bundle = to_transaction_bundle(CHARTS["racemic-iv-trd"]())
    bp = entry_of(bundle, "Observation", "r-pre.bp")["resource"]
    assert t.US_CORE_BP in bp["meta"]["profile"]
    assert [c["code"]["coding"][0]["code"] for c in bp["component"]] == ["8480-6", "8462-4"]
    assert "valueQuantity" not in bp
    spo2 = entry_of(bundle, "Observation", "r-pre.spo2")["resource"]
    assert {c["code"] for c in spo2["code"]["coding"]} == {"59408-5", "2708-6"}
    timing = next(e for e in bp["extension"] if e["url"] == t.EXT_READING_TIMING)
    assert timing["valueCoding"]["code"] == "pre-dose"
    half = entry_of(bundle, "Observation", "r-during.bp")["resource"]
    assert half["component"][1]["dataAbsentReason"]["coding"][0]["code"] == "unknown"


def test_scores_are_survey_observations_derived_from_the_questionnaire_response() -> None:
    bundle = to_transaction_bundle(CHARTS["racemic-iv-trd"]())
    response = entry_of(bundle, "QuestionnaireResponse", "m-phq-1")
    total = entry_of(bundle, "Observation", "m-phq-1.total")["resource"]
    assert total["derivedFrom"] == [{"reference": response["fullUrl"]}]
    assert total["valueQuantity"] == {"value": 15, "unit": "{score}", "system": t.UCUM, "code": "{score}"}
    assert total["category"][0]["coding"][0]["code"] == "survey"
    assert response["resource"]["item"][8]["linkId"] == "/44260-8"


def test_bindings_catch_a_misspelt_required_code() -> None:
    bundle = to_transaction_bundle(CHARTS["racemic-iv-trd"]())
    index, episode = next(
        (i, e) for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "EpisodeOfCare"
    )
    episode["resource"]["status"] = "on-hold"
    issues = validate_bundle(bundle, ["bindings"])
    assert [(i.expression, i.code) for i in issues] == [(f"Bundle.entry[{index}].resource.status", "code-invalid")]
    assert "onhold" in issues[0].diagnostics


def test_invariants_catch_a_period_ending_before_it_starts_and_a_consent_without_policy() -> None:
    bundle = to_transaction_bundle(CHARTS["discontinued-pcl5"]())
    consent = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Consent")
    del consent["policy"]
    encounter = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter")
    encounter["period"]["end"] = "2020-01-01T00:00:00+00:00"
    keys = sorted(i.diagnostics.split(":")[0] for i in validate_bundle(bundle, ["invariants"]))
    assert keys == ["per-1", "ppc-1"]


def test_structure_errors_name_the_element() -> None:
    bundle = to_transaction_bundle(CHARTS["discontinued-pcl5"]())
    bundle["entry"][0]["resource"]["active"] = [1]
    issues = validate_bundle(bundle, ["structure"])
    assert [i.expression for i in issues] == ["Bundle.entry[0].resource.active"]


def test_profile_rules_require_labels_and_unique_conditions() -> None:
    bundle = to_transaction_bundle(CHARTS["discontinued-pcl5"]())
    bundle["entry"][1]["resource"]["meta"]["security"] = []
    bundle["entry"][2]["request"] = bundle["entry"][3]["request"]
    codes = {(i.code, i.expression) for i in validate_bundle(bundle, ["profile"])}
    assert ("security", "Bundle.entry[1].resource.meta.security") in codes
    assert any(code == "business-rule" and expr == "Bundle.entry[3].request" for code, expr in codes)


@pytest.mark.parametrize("name", sorted(CHARTS))
def test_fixture_bundles_map_back_to_the_same_chart(name: str) -> None:
    chart = CHARTS[name]()
    for bundle in (to_transaction_bundle(chart), to_collection_bundle(chart)):
        assert from_bundle(orjson.loads(dumps(bundle))) == without_notes(chart)


def test_an_indication_without_icd10cm_round_trips_with_its_snomed_code() -> None:
    chart = CHARTS["esketamine-sud"]()
    indications = [replace(i, icd10cm=None, snomed=i.snomed or "36474008") for i in chart.episode.indications]
    chart = replace(chart, episode=replace(chart.episode, indications=indications))
    bundle = to_transaction_bundle(chart)
    for resource in resources(bundle, "Condition"):
        assert t.ICD10CM not in {c["system"] for c in resource["code"]["coding"]}
    assert validate_bundle(bundle) == []
    assert from_bundle(orjson.loads(dumps(bundle))) == without_notes(chart)


def test_seriousness_maps_to_the_r4_adverse_event_seriousness_codes_and_back() -> None:
    chart = CHARTS["racemic-iv-trd"]()
    for serious, code in ((True, "serious"), (False, "non-serious")):
        records = {rid: replace(r, serious=serious) if rid == "ae-1" else r for rid, r in chart.episode.records.items()}
        changed = replace(chart, episode=replace(chart.episode, records=records))
        bundle = to_transaction_bundle(changed)
        event = entry_of(bundle, "AdverseEvent", "ae-1")["resource"]
        assert event["seriousness"]["coding"] == [
            {
                "system": "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness",
                "code": code,
                "display": code.capitalize(),
            }
        ]
        assert from_bundle(bundle).episode.records["ae-1"].serious is serious

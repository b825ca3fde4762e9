"""Pushing to a stricter server (what Medplum 5.1 refused): every resource lands, and what was adapted is reported.

* AdverseEvent: R4 defines no ``identifier`` search parameter for it, and sekmet (like Medplum) refuses a
  conditional create on one it does not know: it is created plainly once, then updated by the remembered id.
* QuestionnaireResponse and DetectedIssue: R4 defines ``identifier``, sekmet does not support it: the refused
  conditional create is sent again without the condition.
* Provenance (a client-assigned id) to a server without ``updateCreate`` (the fault proxy answers a PUT to a new
  id with 404, as Medplum did while its CapabilityStatement said ``updateCreate: true``): created by POST.
* The base ``bp`` profile claim (the fault proxy refuses it, as Medplum does): left out, up front when the
  target's CapabilityStatement or setting says so, else after the refusal.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import timedelta

import pytest
import requests

from mappings import terminology as t
from mappings.bundle import to_transaction_bundle
from service.domain.vocabulary import SideEffectSeverity
from service.exchange.client import FhirClient, Recorder
from service.exchange.planner import (
    CREATE_NOT_PUT,
    PLAIN_CREATE,
    PROFILE_REMOVED,
    Links,
    PlannedRequest,
    PushPolicy,
    adapt_profiles,
    parse_capabilities,
    plan_push,
    r4_defines_search_parameter,
    search_fits,
)
from service.exchange.push import (
    CREATED,
    EXISTING,
    UPDATED,
    push_bundle,
    refused_claims,
    refused_client_id,
    refused_condition,
)
from service.exchange.targets import load_targets, target_from_dict
from tests.support.charts import T0, unique_chart
from tests.support.exchange import NOW, assert_each_once, consent, push_again, sandbox_target
from tests.support.proxy import FaultProxy, without_interactions
from tests.support.sekmet import Sekmet

MODES = {"transaction": (), "batch": ("transaction",), "single": ("transaction", "batch")}


def listing(*types: str, transform=None):
    """A CapabilityStatement transform adding ``types`` as a server lists them (full CRUD, conditional
    interactions, no search parameters listed: as in Medplum's statement), after ``transform``."""

    def apply(doc: dict) -> dict:
        doc = transform(doc) if transform else doc
        for rest in doc.get("rest", []):
            model = next(r for r in rest["resource"] if r["type"] == "Observation")
            for rtype in types:
                rest["resource"] = [r for r in rest["resource"] if r["type"] != rtype]
                rest["resource"].append({**copy.deepcopy(model), "type": rtype, "searchParam": []})
        return doc

    return apply


def adapted(report, kind: str) -> dict[str, int]:
    """Resource type -> how many resources this kind of adaptation concerned."""
    out: dict[str, int] = {}
    for a in report.adapted():
        if a["kind"] == kind:
            out[a["type"]] = out.get(a["type"], 0) + a["count"]
    return out


def server_resources(sekmet: Sekmet, resource_type: str, patient_id: str) -> list[dict]:
    """The resources of a type on the server that belong to one patient (sekmet cannot search these by subject)."""
    resp = requests.get(f"{sekmet.base_url}/{resource_type}", params={"_count": "1000"}, timeout=10)
    resp.raise_for_status()
    out = []
    for entry in resp.json().get("entry", []):
        res = entry["resource"]
        refs = [res.get("subject"), res.get("patient"), *[x for x in res.get("target", [])]]
        if any(isinstance(r, dict) and r.get("reference") == f"Patient/{patient_id}" for r in refs):
            out.append(res)
    return out


def test_r4_search_parameter_table_decides() -> None:
    assert not r4_defines_search_parameter("AdverseEvent", "identifier")
    assert not r4_defines_search_parameter("Provenance", "identifier")
    assert r4_defines_search_parameter("Observation", "identifier")
    assert r4_defines_search_parameter("DocumentReference", "identifier")
    assert r4_defines_search_parameter("AdverseEvent", "_id")  # Resource-level parameters count


@pytest.mark.parametrize("mode", sorted(MODES))
def test_adverse_event_created_once_then_updated_by_the_remembered_id(
    sekmet: Sekmet, proxy: FaultProxy, mode: str
) -> None:
    proxy.capability_transform = listing("AdverseEvent", transform=without_interactions(*MODES[mode]))
    chart = unique_chart("racemic-iv-trd")
    base = f"{proxy.url}/fhir"
    target = sandbox_target(base)
    # the premise: this server refuses the conditional create the export's request carries
    refused = requests.post(
        f"{sekmet.base_url}/AdverseEvent",
        json={"resourceType": "AdverseEvent", "actuality": "actual", "subject": {"reference": "Patient/x"}},
        headers={"Content-Type": "application/fhir+json", "If-None-Exist": "identifier=urn:x|1"},
        timeout=10,
    )
    assert refused.status_code == 400
    with FhirClient(base) as client:
        first = push_bundle(client, target, to_transaction_bundle(chart), consents=[consent()], now=NOW)
        assert first.ok, first.as_dict()
        assert first.mode == mode
        ae = next(r for r in first.results if r.resource_type == "AdverseEvent")
        assert ae.outcome == CREATED and ae.remote_id
        assert adapted(first, PLAIN_CREATE) == {"AdverseEvent": 1}
        assert "R4 defines no 'identifier' search parameter for AdverseEvent" in str(first.as_dict()["adapted"])
        # unchanged: nothing is sent for it
        recorder = Recorder().attach(client)
        again = push_again(client, target, to_transaction_bundle(chart), first)
        assert again.ok and again.mode == "none" and recorder.calls == []
        assert next(r for r in again.results if r.key == ae.key).outcome == EXISTING
        # amended: updated in place, by the id the server gave it
        old = chart.episode.records["ae-1"]
        chart.episode.amend("ae-1", replace(old, severity=SideEffectSeverity.SEVERE), now=T0 + timedelta(hours=4))
        amended = push_bundle(
            client,
            target,
            to_transaction_bundle(chart),
            consents=[consent()],
            now=NOW,
            links=Links(patient_id=first.patient_id, remote={**first.remote, **again.remote}),
        )
    assert amended.ok, amended.as_dict()
    result = next(r for r in amended.results if r.key == ae.key)
    assert result.outcome == UPDATED and result.remote_id == ae.remote_id
    on_server = server_resources(sekmet, "AdverseEvent", first.patient_id)
    assert [r["id"] for r in on_server] == [ae.remote_id]  # one, never a second copy
    assert "severe" in str(on_server[0]["severity"]).lower()


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_refused_conditional_create_is_sent_again_without_the_condition(
    sekmet: Sekmet, proxy: FaultProxy, mode: str
) -> None:
    # R4 defines identifier for these; sekmet answers 400 "Unknown search parameter" (a transaction whole)
    proxy.capability_transform = listing(
        "QuestionnaireResponse", "DetectedIssue", "AdverseEvent", transform=without_interactions(*MODES[mode])
    )
    bundle = to_transaction_bundle(unique_chart("esketamine-sud"))
    base = f"{proxy.url}/fhir"
    with FhirClient(base) as client:
        report = push_bundle(
            client, sandbox_target(base), bundle, consents=[consent(substance_use_disclosure=True)], now=NOW
        )
    assert report.ok, report.as_dict()
    counts = adapted(report, PLAIN_CREATE)
    sent = {
        t: sum(e["resource"]["resourceType"] == t for e in bundle["entry"])
        for t in ("QuestionnaireResponse", "DetectedIssue")
    }
    assert sent["QuestionnaireResponse"] >= 2 and sent["DetectedIssue"] >= 4  # scales, REMS forms; the flags
    assert counts["QuestionnaireResponse"] == sent["QuestionnaireResponse"]
    assert counts["DetectedIssue"] == sent["DetectedIssue"]
    assert not [r for r in report.results if r.outcome == "skipped"]
    # each once (sekmet cannot search these by identifier: counted by patient)
    assert len(server_resources(sekmet, "QuestionnaireResponse", report.patient_id)) == sent["QuestionnaireResponse"]
    assert len(server_resources(sekmet, "DetectedIssue", report.patient_id)) == sent["DetectedIssue"]
    assert_each_once(
        sekmet, {"entry": [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter"]}, report
    )


@pytest.mark.parametrize("mode", sorted(MODES))
def test_provenance_reaches_a_server_without_update_create(sekmet: Sekmet, proxy: FaultProxy, mode: str) -> None:
    proxy.capability_transform = without_interactions(*MODES[mode])  # still says updateCreate: true
    proxy.no_update_create = True
    chart = unique_chart("discontinued-pcl5")
    base = f"{proxy.url}/fhir"
    target = sandbox_target(base)
    with FhirClient(base) as client:
        first = push_bundle(client, target, to_transaction_bundle(chart), consents=[consent()], now=NOW)
        assert first.ok, first.as_dict()
        assert [s for _m, _u, s in proxy.refusals] == [404]  # the PUT to a new id, once
        prov = next(r for r in first.results if r.resource_type == "Provenance")
        assert prov.outcome == CREATED and prov.remote_id
        assert adapted(first, CREATE_NOT_PUT) == {"Provenance": 1}
        assert sekmet.read(f"Provenance/{prov.remote_id}")["target"]
        # the next push through this client sends the new Provenance as a create up front: no refusal
        session = chart.episode.records["s-p-assess"]
        chart.episode.amend(
            "s-p-assess", replace(session, end=session.end + timedelta(minutes=5)), now=T0 + timedelta(days=6)
        )
        second = push_again(client, target, to_transaction_bundle(chart), first)
    assert second.ok, second.as_dict()
    assert len(proxy.refusals) == 1
    new_prov = next(r for r in second.results if r.resource_type == "Provenance")
    assert new_prov.outcome == CREATED and new_prov.remote_id != prov.remote_id
    assert adapted(second, CREATE_NOT_PUT) == {"Provenance": 1}


def test_update_create_false_in_the_capability_statement_plans_a_create(sekmet: Sekmet) -> None:
    with FhirClient(sekmet.base_url) as client:
        statement = copy.deepcopy(client.capabilities())
    for res in statement["rest"][0]["resource"]:
        res["updateCreate"] = False
    bundle = to_transaction_bundle(unique_chart("discontinued-pcl5"))
    plan = plan_push(bundle, parse_capabilities(statement), PushPolicy(write_policy="sandbox"), Links())
    prov = next(r for r in plan.requests if r.resource_type == "Provenance")
    assert (prov.method, prov.url, prov.guarded) == ("POST", "Provenance", False)
    assert "id" not in prov.resource
    assert not plan.skipped or all(s.resource_type != "Provenance" for s in plan.skipped)


def _bp_claims(sekmet: Sekmet, report) -> list[list[str]]:
    """The profile claims of every blood-pressure panel the push left on the server."""
    out = []
    for r in report.results:
        if r.resource_type == "Observation" and r.key.endswith(".bp") and r.remote_id:
            out.append(sekmet.read(f"Observation/{r.remote_id}").get("meta", {}).get("profile", []))
    return out


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_refused_profile_claim_is_left_out_and_the_resource_sent_again(
    sekmet: Sekmet, proxy: FaultProxy, mode: str
) -> None:
    proxy.capability_transform = without_interactions(*MODES[mode])
    proxy.refuse_profiles = {t.VITALSIGNS_BP}
    bundle = to_transaction_bundle(unique_chart("racemic-iv-trd"))
    base = f"{proxy.url}/fhir"
    with FhirClient(base) as client:
        report = push_bundle(client, sandbox_target(base), bundle, consents=[consent()], now=NOW)
        assert report.ok, report.as_dict()
        assert proxy.refusals  # the server did refuse the claim
        claims = _bp_claims(sekmet, report)
        assert len(claims) == 4 and all(t.VITALSIGNS_BP not in c and t.US_CORE_BP in c for c in claims)
        assert adapted(report, PROFILE_REMOVED) == {"Observation": 4}
        assert t.VITALSIGNS_BP in str(report.as_dict()["adapted"])
        assert client.learned.refused_profiles == {t.VITALSIGNS_BP}
        # the next push through this client leaves the claim out up front
        refusals = len(proxy.refusals)
        other = push_bundle(
            client,
            sandbox_target(base),
            to_transaction_bundle(unique_chart("racemic-iv-trd")),
            consents=[consent()],
            now=NOW,
        )
    assert other.ok and len(proxy.refusals) == refusals
    assert adapted(other, PROFILE_REMOVED) == {"Observation": 4}


@pytest.mark.parametrize("how", ["supported-profile", "target-setting"])
def test_claims_the_target_does_not_support_are_left_out_up_front(sekmet: Sekmet, proxy: FaultProxy, how: str) -> None:
    proxy.refuse_profiles = {t.VITALSIGNS_BP}
    base = f"{proxy.url}/fhir"
    target = sandbox_target(base)
    if how == "supported-profile":

        def supported(doc: dict) -> dict:
            for res in doc["rest"][0]["resource"]:
                if res["type"] == "Observation":
                    res["supportedProfile"] = [t.US_CORE_BP, t.US_CORE_HEART_RATE, t.US_CORE_PULSE_OX]
            return doc

        proxy.capability_transform = supported
    else:
        target = replace(target, drop_profiles=(t.VITALSIGNS_BP,))
    bundle = to_transaction_bundle(unique_chart("racemic-iv-trd"))
    with FhirClient(base) as client:
        report = push_bundle(client, target, bundle, consents=[consent()], now=NOW)
    assert report.ok, report.as_dict()
    assert proxy.refusals == []  # nothing refused: the claim never went out
    claims = _bp_claims(sekmet, report)
    assert len(claims) == 4 and all(t.VITALSIGNS_BP not in c and t.US_CORE_BP in c for c in claims)
    assert adapted(report, PROFILE_REMOVED)["Observation"] >= 4


def test_drop_profiles_is_a_target_setting(tmp_path) -> None:
    from_dict = target_from_dict("m", {"base_url": "https://ehr.example.org/fhir", "drop_profiles": [t.VITALSIGNS_BP]})
    assert from_dict.drop_profiles == (t.VITALSIGNS_BP,)
    assert PushPolicy.for_target(from_dict).drop_profiles == frozenset({t.VITALSIGNS_BP})
    env = {
        "KAPFHIR_TARGETS": "medplum",
        "KAPFHIR_TARGET_MEDPLUM_CLIENT_ID": "c",
        "KAPFHIR_TARGET_MEDPLUM_CLIENT_SECRET": "s",
        "KAPFHIR_TARGET_MEDPLUM_DROP_PROFILES": f"{t.VITALSIGNS_BP}, {t.VITALSIGNS_HEART_RATE}",
    }
    loaded = load_targets(env)["medplum"]
    assert loaded.drop_profiles == (t.VITALSIGNS_BP, t.VITALSIGNS_HEART_RATE)


# ----------------------------------------------------------------------------------------- pure decisions


def _request(**kw) -> PlannedRequest:
    base = {
        "key": "Observation?identifier=urn:x|1",
        "resource_type": "Observation",
        "full_url": "urn:uuid:1",
        "resource": {"resourceType": "Observation", "meta": {"profile": [t.VITALSIGNS_BP, t.US_CORE_BP]}},
        "action": "create",
        "method": "POST",
        "url": "Observation",
        "identifier_query": "identifier=urn:x|1",
        "if_none_exist": "identifier=urn:x|1",
    }
    return PlannedRequest(**{**base, **kw})


def _oo(diagnostics: str, expression: str | None = None) -> dict:
    issue = {"severity": "error", "code": "processing", "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def test_which_refusals_are_about_a_profile_claim() -> None:
    req = _request()
    assert refused_claims(req, 400, _oo(f"does not conform to {t.VITALSIGNS_BP}"), whole=False) == [t.VITALSIGNS_BP]
    # a refusal at meta.profile without naming one: every claim of that one resource
    assert refused_claims(req, 422, _oo("invalid", "Observation.meta.profile"), whole=False) == [
        t.VITALSIGNS_BP,
        t.US_CORE_BP,
    ]
    # a whole transaction: only claims it names
    assert refused_claims(req, 400, _oo("invalid", "Observation.meta.profile"), whole=True) == []
    assert refused_claims(req, 400, _oo("Observation.status: missing"), whole=False) == []
    assert refused_claims(req, 409, _oo(f"conflict {t.VITALSIGNS_BP}"), whole=False) == []  # not a content refusal
    assert refused_claims(req, 500, _oo(f"{t.VITALSIGNS_BP}"), whole=False) == []  # retried, not adapted


def test_which_refusals_are_about_a_condition_or_a_client_id() -> None:
    req = _request()
    assert refused_condition(req, 400, _oo("Unknown search parameter 'identifier' for Observation"), whole=False)
    assert not refused_condition(req, 400, _oo("Observation.status: missing"), whole=False)
    assert not refused_condition(req, 412, _oo("criteria matched 2 resources"), whole=False)  # a real conflict
    assert not refused_condition(req, 400, _oo("Unknown search parameter 'identifier' for Flag"), whole=True)
    update = _request(method="PUT", url="Observation?identifier=urn:x|1", if_none_exist=None)
    assert refused_condition(update, 400, _oo("Unknown search parameter 'identifier'"), whole=False)
    put_new = _request(method="PUT", url="Provenance/abc", if_none_exist=None, resource_type="Provenance")
    assert refused_client_id(put_new, 404) and refused_client_id(put_new, 405)
    assert not refused_client_id(put_new, 412) and not refused_client_id(put_new, 500)
    known = _request(method="PUT", url="Provenance/abc", if_none_exist=None, known_id="abc")
    assert not refused_client_id(known, 404)  # the server's own id: a 404 is a real failure


def test_supported_profiles_and_search_parameters_come_from_the_capability_statement() -> None:
    caps = parse_capabilities(
        {
            "rest": [
                {
                    "mode": "server",
                    "resource": [
                        {
                            "type": "Observation",
                            "interaction": [{"code": "create"}],
                            "supportedProfile": [f"{t.US_CORE_BP}|6.1.0"],
                            "searchParam": [{"name": "code", "type": "token"}],
                        }
                    ],
                }
            ]
        }
    )
    obs = caps.type("Observation")
    assert obs is not None and obs.supported_profiles == frozenset({t.US_CORE_BP})
    resource = {"resourceType": "Observation", "meta": {"profile": [t.VITALSIGNS_BP, f"{t.US_CORE_BP}|6.1.0"]}}
    removed = adapt_profiles(resource, obs, frozenset())
    assert [claim for claim, _why in removed] == [t.VITALSIGNS_BP]
    assert resource["meta"]["profile"] == [f"{t.US_CORE_BP}|6.1.0"]
    # the server lists its search parameters and identifier is not among them: no conditional create on it
    assert not search_fits("Observation", "identifier=urn:x|1", obs)
    assert search_fits("Observation", "code=http://loinc.org|85354-9", obs)
    only_bp = {"resourceType": "Observation", "meta": {"profile": [t.VITALSIGNS_BP]}}
    adapt_profiles(only_bp, obs, frozenset())
    assert "meta" not in only_bp  # no empty meta left behind

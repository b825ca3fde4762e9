"""Assembles an EpisodeChart into a transaction (or collection) Bundle, and maps a Bundle back; also the Bundles
that only wrap what others built (a target's transaction or batch of planned requests, a one-page searchset, the
/fhir API's search and history pages and its transaction-response and batch-response).

Transaction entries: ``POST`` with ``ifNoneExist: identifier=<system>|<value>``; a record with version > 1
(an amendment or an entered-in-error mark) and the safety flags (state without versions) map to a conditional
``PUT <Type>?identifier=<system>|<value>``; the Provenance is a ``PUT Provenance/<deterministic id>``.
Psychotherapy notes are never read here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from urllib.parse import urlencode

import orjson

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import (
    CONDITION,
    OUTCOME_SCORE,
    Mapped,
    MappingContext,
    PrimaryUrls,
)
from mappings.resources import (
    adverse_event,
    care_plan,
    condition,
    consent,
    detected_issue,
    encounter,
    episode_of_care,
    flag,
    medication_administration,
    medication_request,
    medication_statement,
    observation,
    organization,
    patient,
    practitioner,
    procedure,
    provenance,
    questionnaire_response,
    rems_form,
)
from mappings.resources._common import MappingRefusedError, ReverseContext, read_record_meta, record_fields
from service.domain import rems
from service.domain.chart import EpisodeChart
from service.domain.episode import Episode
from service.domain.model import (
    BodyWeight,
    Clinic,
    ClinicalSession,
    ConcomitantMedication,
    Consent,
    DosingOrder,
    DosingRecord,
    MonitoringReading,
    OutcomeMeasure,
    Record,
    RemsLedger,
    SafetyFlag,
    SideEffect,
)

EXT_EPISODE_OF_CARE = f"{t.FHIR_SD}/workflow-episodeOfCare"  # V: S1 §1.4 (core extension, context Observation)


def _primary_value(record: Record) -> str:
    if isinstance(record, MonitoringReading):
        return f"{record.id}.{observation.reading_suffixes(record)[0]}"
    return record.id


def latest_time(chart: EpisodeChart) -> datetime:
    """The latest stored timestamp of the chart: the Provenance's ``recorded`` and the Bundle's timestamp."""
    episode = chart.episode
    times = [episode.period_start, episode.created_at, episode.updated_at]
    for person in [chart.patient, *chart.practitioners]:
        times += [person.recorded_at, person.updated_at]
    for record in [*episode.records.values(), *chart.body_weights]:
        times += [record.recorded_at, record.updated_at]
    for item in episode.flags:
        times += [item.raised_at, item.resolved_at, item.acknowledgement.at if item.acknowledgement else None]
    times += [s.recorded_at for s in episode.rems.submissions]
    return max(x for x in times if x is not None)


def _body_weight(ctx: MappingContext, weight: BodyWeight, in_episode: bool, in_chart: bool) -> Mapped:
    mapped = observation.to_body_weight(ctx, weight)
    resource = mapped.resource
    if in_episode:
        resource["extension"].append(dt.extension(EXT_EPISODE_OF_CARE, valueReference=ctx.episode_of_care()))
    if in_chart:
        resource["extension"][0]["extension"].append(dt.extension("chartBodyWeight", valueBoolean=True))
    return mapped


def patient_body_weight(ctx: MappingContext, weight: BodyWeight) -> Mapped:
    """A body weight of the patient's chart (recorded outside any episode), as an episode's projection maps it."""
    return _body_weight(ctx, weight, in_episode=False, in_chart=True)


@dataclass(frozen=True)
class ChartPart:
    """The part of a chart a change touched, for mapping only that (a write to a long episode): these records,
    flags and practitioners, with the episode-level resources every change touches (Conditions, EpisodeOfCare,
    CarePlan) and the REMS forms (derived from several sessions). The clinic, the patient and the body weights are
    the context of everything: a change to them maps the whole chart."""

    record_ids: frozenset[str] = frozenset()
    flag_ids: frozenset[str] = frozenset()
    practitioner_ids: frozenset[str] = frozenset()


def map_chart(chart: EpisodeChart, part: ChartPart | None = None) -> tuple[MappingContext, list[Mapped]]:
    """Every resource of the chart; with ``part``, only those of that part (each mapped exactly as in the whole)."""
    ctx = MappingContext(chart)
    episode = chart.episode
    ctx.primary_url = PrimaryUrls(ctx, _primary_value)
    out = _context_resources(ctx, chart, part)
    out += [condition.to_condition(ctx, episode, i, ind) for i, ind in enumerate(episode.indications)]
    out.append(episode_of_care.to_episode_of_care(ctx, episode))
    out.append(care_plan.to_care_plan(ctx, episode))
    if part is None:
        chart_weight_ids = {w.id for w in chart.body_weights}
        episode_weight_ids = {w.id for w in episode.all_of(BodyWeight)}
        out += [_body_weight(ctx, w, w.id in episode_weight_ids, w.id in chart_weight_ids) for w in ctx.body_weights]
    out += list(_records(ctx, episode, None if part is None else part.record_ids))
    for form in rems.forms_of(chart):  # derived from the session records: the Spravato REMS form and its sending
        out += [rems_form.to_questionnaire_response(ctx, form), rems_form.to_task(ctx, form)]
    out += _flags(ctx, episode, None if part is None else part.flag_ids)
    return ctx, out


def _context_resources(ctx: MappingContext, chart: EpisodeChart, part: ChartPart | None) -> list[Mapped]:
    """The clinic, the patient and the practitioners: all of them for the whole chart, the named ones for a part."""
    if part is None:
        return [
            organization.to_organization(ctx, chart.clinic),
            *(practitioner.to_practitioner(ctx, p) for p in chart.practitioners),
            patient.to_patient(ctx, chart.patient),
        ]
    return [practitioner.to_practitioner(ctx, p) for p in chart.practitioners if p.id in part.practitioner_ids]


def _flags(ctx: MappingContext, episode: Episode, only: frozenset[str] | None) -> list[Mapped]:
    out: list[Mapped] = []
    for item in episode.flags:
        if only is None or item.id in only:
            out.append(detected_issue.to_detected_issue(ctx, item))
            if item.rule_id == flag.SUICIDE_RISK_RULE:
                out.append(flag.to_flag(ctx, item))
    return out


def reference_targets(ctx: MappingContext) -> dict[str, str]:
    """fullUrl -> ``Type/id`` of every resource the mapping named (mapped or referenced), whether or not this
    mapping produced it (a part of a chart refers to resources mapped before)."""
    return {url: f"{rtype}/{url.removeprefix('urn:uuid:')}" for (rtype, _, _), url in ctx._full_urls.items()}


def _records(ctx: MappingContext, episode: Episode, only: frozenset[str] | None = None) -> Iterator[Mapped]:
    for record in episode.records.values():
        if only is not None and record.id not in only:
            continue
        if isinstance(record, Consent):
            yield consent.to_consent(ctx, record)
        elif isinstance(record, DosingOrder):
            yield medication_request.to_medication_request(ctx, episode, record)
        elif isinstance(record, ClinicalSession):
            yield encounter.to_encounter(ctx, record)
            if record.kind in procedure.PSYCHOTHERAPY_KINDS:
                yield procedure.to_procedure(ctx, record)
        elif isinstance(record, DosingRecord):
            yield medication_administration.to_medication_administration(ctx, record)
        elif isinstance(record, MonitoringReading):
            yield from observation.to_reading_observations(ctx, record)
        elif isinstance(record, SideEffect):
            yield adverse_event.to_adverse_event(ctx, record)
        elif isinstance(record, ConcomitantMedication):
            yield medication_statement.to_medication_statement(ctx, record)
        elif isinstance(record, OutcomeMeasure):
            yield questionnaire_response.to_questionnaire_response(ctx, record)
            yield from observation.to_score_observations(ctx, record)


def _entry(ctx: MappingContext, mapped: Mapped, transaction: bool) -> dict:
    resource_type = mapped.resource["resourceType"]
    entry = {"fullUrl": ctx.full_url(resource_type, mapped.kind, mapped.value), "resource": mapped.resource}
    if transaction:
        condition_text = f"identifier={ctx.system(mapped.kind)}|{mapped.value}"
        if mapped.version > 1 or mapped.always_update:
            entry["request"] = {"method": "PUT", "url": f"{resource_type}?{condition_text}"}
        else:
            entry["request"] = {"method": "POST", "url": resource_type, "ifNoneExist": condition_text}
    return entry


def _bundle(chart: EpisodeChart, transaction: bool) -> dict:
    ctx, mapped = map_chart(chart)
    entries = [_entry(ctx, m, transaction) for m in mapped]
    recorded = dt.instant(latest_time(chart))
    prov = provenance.to_provenance(
        ctx, [(e["fullUrl"], m.version) for e, m in zip(entries, mapped, strict=True)], recorded
    )
    prov_entry = {"fullUrl": f"urn:uuid:{prov['id']}", "resource": prov}
    if transaction:
        prov_entry["request"] = {"method": "PUT", "url": f"Provenance/{prov['id']}"}
    return {
        "resourceType": "Bundle",
        "meta": {"security": ctx.security},
        "type": "transaction" if transaction else "collection",
        "timestamp": recorded,
        "entry": [*entries, prov_entry],
    }


def request_bundle(bundle_type: str, entries: list[dict]) -> dict:
    """A transaction or batch Bundle of request entries already built (what the exchange sends a target)."""
    return {"resourceType": "Bundle", "type": bundle_type, "entry": entries}


def collection_of(entries: list[dict]) -> dict:
    """A collection Bundle of entries already built: what a write is validated inside, as a transaction's entries."""
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def searchset_bundle(resources: list[dict], self_url: str, base: str) -> dict:
    """A searchset holding every match on one page: the total, a self link, each resource under its fullUrl
    (``base``/Type/id)."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "link": [{"relation": "self", "url": self_url}],
        "entry": [
            {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in resources
        ],
    }


# --- the Bundles of the /fhir API: a page of a search or a history, the answer to a transaction or batch -----------


def page_links(url: str, params: list[tuple[str, str]], total: int, count: int, offset: int) -> list[dict]:
    """Bundle.link of one page at ``url``: self (the query as asked), next and previous (by _offset)."""
    own = [(k, v) for k, v in params if k not in ("_offset",)]
    links = [{"relation": "self", "url": url + ("?" + urlencode(params) if params else "")}]
    if offset + count < total and count > 0:
        links.append({"relation": "next", "url": url + "?" + urlencode([*own, ("_offset", str(offset + count))])})
    if offset > 0:
        links.append(
            {"relation": "previous", "url": url + "?" + urlencode([*own, ("_offset", str(max(offset - count, 0)))])}
        )
    return links


def _page(bundle_type: str, entries: list[dict], total: int | None, links: list[dict], last_updated: str) -> dict:
    return {
        "resourceType": "Bundle",
        "meta": {"lastUpdated": last_updated},
        "type": bundle_type,
        "total": total,
        "link": links,
        "entry": entries,
    }


def searchset_page(entries: list[dict], total: int | None, links: list[dict], last_updated: str) -> dict:
    """One page of a search: the total unless ``_total=none`` asked it away (None), entries only when any."""
    bundle = _page("searchset", entries, total, links, last_updated)
    if total is None:
        bundle.pop("total")
    if not entries:
        bundle.pop("entry")
    return bundle


def search_entry(base: str, resource: dict, mode: str) -> dict:
    """A searchset entry: a match, or a resource an ``_include`` brought."""
    return stored_search_entry(base, resource["resourceType"], resource["id"], resource, mode)


def stored_search_entry(
    base: str, resource_type: str, resource_id: str, resource: dict | orjson.Fragment, mode: str
) -> dict:
    """A searchset entry whose resource may be JSON already serialised (an ``orjson.Fragment`` of a stored body,
    sent as it is)."""
    return {
        "fullUrl": f"{base}/{resource_type}/{resource_id}",
        "resource": resource,
        "search": {"mode": mode},
    }


def history_bundle(entries: list[dict], total: int, links: list[dict], last_updated: str) -> dict:
    """One page of the versions of a resource or a type, newest first."""
    return _page("history", entries, total, links, last_updated)


def history_entry(base: str, resource: dict) -> dict:
    """A version as the interaction that made it: version 1 a create (POST), later ones updates (PUT)."""
    meta = resource["meta"]
    return {
        "fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}",
        "resource": resource,
        "request": {
            "method": "PUT" if meta["versionId"] != "1" else "POST",
            "url": f"{resource['resourceType']}/{resource['id']}"
            if meta["versionId"] != "1"
            else resource["resourceType"],
        },
        "response": {
            "status": "200 OK" if meta["versionId"] != "1" else "201 Created",
            "etag": f'W/"{meta["versionId"]}"',
            "lastModified": meta["lastUpdated"],
        },
    }


def response_bundle(request_type: str, entries: list[dict]) -> dict:
    """The transaction-response or batch-response: one entry per entry of the request, in its order."""
    return {"resourceType": "Bundle", "type": f"{request_type}-response", "entry": entries}


def outcome_entry(status: str, outcome: dict) -> dict:
    """The answer to an entry that was refused or stored nothing: its status and an OperationOutcome."""
    return {"response": {"status": status, "outcome": outcome}}


def written_entry(
    resource_type: str, rid: str, created: bool, version_id: object = None, last_modified: str | None = None
) -> dict:
    """The answer to an entry that was stored: where (with its version when the projection has it), and whether it
    was created."""
    response: dict = {"status": "201 Created" if created else "200 OK"}
    if version_id is not None:
        response |= {
            "location": f"{resource_type}/{rid}/_history/{version_id}",
            "etag": f'W/"{version_id}"',
            "lastModified": last_modified,
        }
    else:
        response["location"] = f"{resource_type}/{rid}"
    return {"response": response}


def to_transaction_bundle(chart: EpisodeChart) -> dict:
    return _bundle(chart, transaction=True)


def to_collection_bundle(chart: EpisodeChart) -> dict:
    return _bundle(chart, transaction=False)


def dumps(bundle: dict) -> bytes:
    """Canonical bytes of a bundle (FHIR JSON, keys in mapping order)."""
    return orjson.dumps(bundle)


# --- reverse ----------------------------------------------------------------------------------------------


def from_bundle(bundle: dict) -> EpisodeChart:
    """A Bundle kapfhir produced (transaction or collection) back to the EpisodeChart it came from.

    Psychotherapy notes were never exported, so sessions come back with ``psychotherapy_notes=None``.
    """
    entries = bundle.get("entry", [])
    clinic, rctx = _clinic_context(entries)
    by_kind = _resources_by_kind(rctx, entries)
    patients = by_kind.get("patient", [])
    if not patients:
        raise MappingRefusedError("Bundle.entry.resource.ofType(Patient)", "the Patient is missing")
    episodes = by_kind.get("episode", [])
    plans = by_kind.get("care-plan", [])
    if not episodes or not plans:
        raise MappingRefusedError(
            "Bundle.entry.resource.ofType(EpisodeOfCare)", "the EpisodeOfCare and CarePlan are required"
        )
    records, chart_weights = _body_weights(rctx, by_kind.get("body-weight", []))
    records |= _clinical_records(rctx, by_kind)
    flags: list[SafetyFlag] = [detected_issue.from_detected_issue(rctx, r) for r in by_kind.get("safety-flag", [])]
    submissions = [s for r in by_kind.get(rems_form.TASK_KIND, []) for s in rems_form.from_task(rctx, r)]
    episode = Episode(
        **episode_of_care.from_episode_of_care(rctx, episodes[0]),
        **care_plan.from_care_plan(plans[0]),
        indications=[condition.from_condition(r) for r in by_kind.get(CONDITION, [])],
        records=records,
        flags=flags,
        rems=RemsLedger(
            time_zone=clinic.time_zone, submissions=sorted(submissions, key=lambda s: (s.recorded_at, s.id))
        ),
    )
    return EpisodeChart(
        clinic=clinic,
        patient=patient.from_patient(rctx, patients[0]),
        episode=episode,
        practitioners=[practitioner.from_practitioner(rctx, r) for r in by_kind.get("practitioner", [])],
        body_weights=chart_weights,
    )


def _clinic_context(entries: list[dict]) -> tuple[Clinic, ReverseContext]:
    """The clinic (from its Organization, which the Bundle must carry) and a reverse context indexing every entry
    under the clinic's identifier system."""
    org = next((e["resource"] for e in entries if e["resource"]["resourceType"] == "Organization"), None)
    if org is None:
        raise MappingRefusedError("Bundle.entry.resource.ofType(Organization)", "the clinic Organization is missing")
    clinic = organization.from_organization(org)
    rctx = ReverseContext(base=clinic.identifier_system)
    for entry in entries:
        rctx.index(entry["fullUrl"], entry["resource"])
    return clinic, rctx


def _resources_by_kind(rctx: ReverseContext, entries: list[dict]) -> dict[str, list[dict]]:
    """The resources by the record kind their identifier names (resources kapfhir did not write are left out)."""
    by_kind: dict[str, list[dict]] = {}
    for entry in entries:
        found = rctx.kind_of(entry["resource"])
        if found:
            by_kind.setdefault(found[0], []).append(entry["resource"])
    return by_kind


def _body_weights(rctx: ReverseContext, resources: list[dict]) -> tuple[dict[str, Record], list[BodyWeight]]:
    """(the weights recorded in the episode, by id; the weights of the patient's chart): a weight carrying the
    episode extension is an episode record, one marked ``chartBodyWeight`` belongs to the chart; it may be both."""
    records: dict[str, Record] = {}
    chart_weights: list[BodyWeight] = []
    for resource in resources:
        weight = observation.from_body_weight(rctx, resource)
        if dt.find_extension(resource, EXT_EPISODE_OF_CARE):
            records[weight.id] = weight
        if any(p["url"] == "chartBodyWeight" for p in dt.find_extension(resource, t.EXT_RECORD)["extension"]):
            chart_weights.append(weight)
    return records, chart_weights


def _clinical_records(rctx: ReverseContext, by_kind: dict[str, list[dict]]) -> dict[str, Record]:
    """Consents, orders, sessions, doses, side effects, concomitant medications, readings and outcome measures
    (each QuestionnaireResponse with the score Observations derived from it), by id."""
    records: dict[str, Record] = {}
    readers = {
        "consent": consent.from_consent,
        "dosing-order": medication_request.from_medication_request,
        "session": encounter.from_encounter,
        "dose": medication_administration.from_medication_administration,
        "side-effect": adverse_event.from_adverse_event,
        "concomitant-medication": medication_statement.from_medication_statement,
    }
    for kind, reader in readers.items():
        for resource in by_kind.get(kind, []):
            record = reader(rctx, resource)
            records[record.id] = record
    for reading in _from_readings(rctx, by_kind.get("monitoring-reading", [])):
        records[reading.id] = reading
    scores: dict[str, list[dict]] = {}
    for resource in by_kind.get(OUTCOME_SCORE, []):
        scores.setdefault(rctx.local_id_by_url[resource["derivedFrom"][0]["reference"]], []).append(resource)
    for resource in by_kind.get("outcome-measure", []):
        measure_id = rctx.own_id(resource)
        records[measure_id] = questionnaire_response.from_questionnaire_response(
            rctx, resource, scores.get(measure_id, [])
        )
    return records


def _from_readings(rctx: ReverseContext, resources: list[dict]) -> Iterator[MonitoringReading]:
    groups: dict[str, list[dict]] = {}
    for resource in resources:
        groups.setdefault(rctx.kind_of(resource)[1].rsplit(".", 1)[0], []).append(resource)
    for reading_id, group in groups.items():
        first = group[0]
        eie = first["status"] == "entered-in-error"
        values: dict = {}
        for resource in group:
            values |= observation.reading_values(resource)
        patient_url = first["subject"].get("reference")
        yield MonitoringReading(
            id=reading_id,
            **record_fields(read_record_meta(first, eie)),
            session_id=rctx.local_id(first["encounter"]),
            taken_at=dt.parse_datetime(first["effectiveDateTime"]),
            timing=observation.READING_TIMING_OF[dt.find_extension(first, t.EXT_READING_TIMING)["valueCoding"]["code"]],
            self_reported=any(p.get("reference") == patient_url for p in first.get("performer", ())),
            **values,
        )


def without_notes(chart: EpisodeChart) -> EpisodeChart:
    """The chart as the export sees it: psychotherapy notes removed (they are never mapped)."""
    records = {
        rid: replace(r, psychotherapy_notes=None) if isinstance(r, ClinicalSession) else r
        for rid, r in chart.episode.records.items()
    }
    return replace(chart, episode=replace(chart.episode, records=records))

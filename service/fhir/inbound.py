"""Inbound resources from an EHR (or clinic software) that do not carry a whole episode: each entry of a
``POST /fhir`` transaction is mapped into the domain through the reverse mappings of ``mappings`` and applied
with the use cases of ``service.service_layer.services`` (the domain rules run exactly as for ``/api/v1``).

What maps, and where it attaches (a reference ``Type/id`` to a resource /fhir serves, its absolute URL, an
``identifier`` reference, or the ``urn:uuid`` fullUrl of an earlier entry of the same Bundle):

- ``Patient``: by its MRN (the first identifier not under the clinic's base URI). An unknown MRN registers a
  patient; a known MRN is left as it is for ``POST`` (``ifNoneExist``) and amended for a conditional ``PUT``.
  ``POST`` without ``ifNoneExist`` for a registered MRN is a 409 (kapfhir keeps one patient per MRN).
- ``Condition``: an indication of the episode its ``encounter`` (one of our Encounters) or its
  ``workflow-episodeOfCare`` extension (one of our EpisodeOfCares) names; an indication with the same code is
  not added twice (a ``PUT`` replaces it).
- ``Observation`` body weight (LOINC 29463-7): a body weight of the patient its ``subject`` names.
- ``Observation`` vital sign / CADSS / MOAA/S with the codes kapfhir emits: a monitoring reading of the session
  its ``encounter`` names, at ``effectiveDateTime``, with the kapfhir ``reading-timing`` extension.
- ``QuestionnaireResponse`` (PHQ-9, GAD-7, PCL-5, C-SSRS screener items): an outcome measure of the episode of its
  ``encounter`` (or ``workflow-episodeOfCare`` extension); the domain computes total, band and risk level. A total
  score ``Observation`` ``derivedFrom`` it in the same Bundle is checked against the items (422 if they disagree).
- ``MedicationAdministration``: a dose of the session its ``context`` names (performers, request and weight
  resolved to our records); the safety rules run and raise flags, the dose is stored.

Refused (422, the OperationOutcome's expression names the element): any other type; a resource whose subject is
not the patient of the episode it attaches to; a reading without ``encounter`` or without reading timing; a score
Observation without its QuestionnaireResponse (kapfhir computes scores from items); a reference to a resource
kapfhir does not hold.
Records get deterministic ids (uuid5 of the type and the resource's first identifier, else of its content), so
posting the same transaction twice creates nothing new.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import MappingContext
from mappings.resources import condition as condition_map
from mappings.resources import medication_administration as ma_map
from mappings.resources import observation as obs_map
from mappings.resources import patient as patient_map
from mappings.resources import questionnaire_response as qr_map
from mappings.resources._common import MappingRefusedError, ReverseContext, identifiers
from service.adapters.fhir_store import fhir_resources
from service.adapters.serialization import to_data
from service.domain.chart import EpisodeChart
from service.domain.episode import Episode
from service.domain.errors import Conflict, DomainError, Incoherent, NotFound, StaleVersion
from service.domain.model import MonitoringReading, Patient
from service.fhir import projection
from service.service_layer import services

EXT_EPISODE_OF_CARE = f"{t.FHIR_SD}/workflow-episodeOfCare"
SUPPORTED = ("Patient", "Condition", "Observation", "QuestionnaireResponse", "MedicationAdministration")
_ORDER = {"Patient": 0, "Condition": 1, "MedicationAdministration": 2, "Observation": 3, "QuestionnaireResponse": 4}
_REF = re.compile(r"^(?:.*/fhir/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/\d+)?$")
_BOOKKEEPING = {"version", "recorded_at", "updated_at", "total", "severity_band", "risk_level"}
_STATUS = ((StaleVersion, 412), (Conflict, 409), (Incoherent, 422), (NotFound, 422), (DomainError, 422))


class InboundRefused(Exception):
    def __init__(self, status: int, expression: str, message: str, code: str = "business-rule") -> None:
        super().__init__(message)
        self.status, self.expression, self.message, self.code = status, expression, message, code


@dataclasses.dataclass
class Outcome:
    """What one entry did: the resource it maps to (type, logical id) and whether something was created."""

    resource_type: str
    id: str
    created: bool
    record_id: str | None = None  # the domain record it became


@dataclasses.dataclass
class _Target:
    resource_type: str
    id: str
    body: dict
    episode_id: str | None


def carries_episode(entries: list[dict]) -> bool:
    """A Bundle kapfhir (or clinic software) produced for a whole episode: Organization, EpisodeOfCare, CarePlan."""
    types = {e["resource"].get("resourceType") for e in entries}
    return {"Organization", "EpisodeOfCare", "CarePlan"} <= types


def record_id(resource_type: str, resource: dict) -> str:
    """A deterministic record id: the type and the first identifier, else the content."""
    found = [i for i in identifiers(resource) if i.get("value")]
    key = f"{found[0].get('system', '')}|{found[0]['value']}" if found else _content_key(resource)
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kapfhir-inbound|{resource_type}|{key}"))


def _content_key(resource: dict) -> str:
    body = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Inbound:
    """One transaction of inbound resources, applied in the caller's unit of work."""

    def __init__(self, uow: Any, ctx: services.Context) -> None:
        self.uow, self.ctx = uow, ctx
        self.session, self.clinic = uow.session, uow.clinic_id
        self.base = uow.repo.get_clinic().identifier_system.rstrip("/")
        self.urls: dict[str, str] = {}  # fullUrl of an entry already applied -> "Type/id" it maps to

    # --- references -----------------------------------------------------------------------------------------

    def _row(self, rtype: str, rid: str) -> _Target | None:
        self.uow.run_pending()  # what earlier entries changed must be projected before it is looked up
        r = fhir_resources
        row = self.session.execute(
            select(r.c.body, r.c.episode_id).where(
                r.c.clinic_id == self.clinic, r.c.resource_type == rtype, r.c.id == rid, r.c.is_current.is_(True)
            )
        ).one_or_none()
        return _Target(rtype, rid, orjson.loads(row.body), row.episode_id) if row else None

    def target(self, ref: Any, allowed: tuple[str, ...], expression: str) -> _Target:
        """The resource of ours a reference names; refused when it names nothing kapfhir holds."""
        if not isinstance(ref, dict):
            raise InboundRefused(422, expression, "a Reference is expected", "structure")
        text = ref.get("reference")
        if isinstance(text, str):
            text = self.urls.get(text, text)
            m = _REF.match(text)
            if m is None:
                raise InboundRefused(422, f"{expression}.reference", f"{text!r} names no resource kapfhir holds")
            rtype, rid = m.groups()
            found = self._row(rtype, rid) if rtype in allowed else None
            if found is None:
                raise InboundRefused(
                    422, f"{expression}.reference", f"no {'/'.join(allowed)} {rid!r} at this clinic ({text})"
                )
            return found
        ident = ref.get("identifier")
        if isinstance(ident, dict) and ident.get("value"):
            types = (ref["type"],) if ref.get("type") in allowed else allowed
            self.uow.run_pending()
            for rtype in types:
                ids = projection.find_by_identifier(
                    self.session, self.clinic, rtype, ident.get("system"), ident["value"]
                )
                if len(ids) > 1:
                    raise InboundRefused(
                        412,
                        f"{expression}.identifier",
                        f"{len(ids)} {rtype}s match {ident['value']!r}",
                        "multiple-matches",
                    )
                if ids:
                    found = self._row(rtype, ids[0])
                    if found is not None:
                        return found
            raise InboundRefused(
                422, f"{expression}.identifier", f"no {'/'.join(allowed)} with identifier {ident['value']!r}"
            )
        raise InboundRefused(422, expression, "the reference has neither reference nor identifier", "required")

    def local(self, found: _Target) -> str:
        """The domain id of one of our resources: the value of its business identifier."""
        for ident in identifiers(found.body):
            system = ident.get("system", "")
            if system.startswith(self.base + "/"):
                return ident["value"]
        raise InboundRefused(422, found.resource_type, f"{found.resource_type}/{found.id} is not a kapfhir record")

    def _localised(self, resource: dict, where: str) -> tuple[dict, ReverseContext]:
        """A copy whose references to our resources the reverse mapping can read: each one indexed by the URL it
        uses (identifier references rewritten to ``Type/id``)."""
        body = copy.deepcopy(resource)
        body["id"] = record_id(resource["resourceType"], resource)
        rctx = ReverseContext(base=self.base)
        for element, path in _references(body, where):
            text = element.get("reference")
            if isinstance(text, str) and text.startswith("#"):
                continue
            types = (element["type"],) if isinstance(element.get("type"), str) else tuple(_REFERABLE)
            try:
                found = self.target(element, types, path)
            except InboundRefused:
                continue  # only the references a mapping needs are checked, where it needs them
            url = f"{found.resource_type}/{found.id}"
            element.pop("identifier", None)
            element["reference"] = url
            rctx.index(url, found.body)
        return body, rctx

    # --- episode and patient --------------------------------------------------------------------------------

    def _episode_via(self, resource: dict, element: str, where: str) -> tuple[Episode, str | None]:
        """(episode, session id) from an Encounter reference, else the workflow-episodeOfCare extension."""
        if resource.get(element):
            enc = self.target(resource[element], ("Encounter", "EpisodeOfCare"), f"{where}.{element}")
            if enc.episode_id is None:
                raise InboundRefused(422, f"{where}.{element}", "the resource belongs to no episode")
            session = self.local(enc) if enc.resource_type == "Encounter" else None
            return self.uow.repo.get_episode(enc.episode_id), session
        ext = dt.find_extension(resource, EXT_EPISODE_OF_CARE)
        if ext and ext.get("valueReference"):
            eoc = self.target(
                ext["valueReference"], ("EpisodeOfCare",), f"{where}.extension('{EXT_EPISODE_OF_CARE}').value"
            )
            return self.uow.repo.get_episode(self.local(eoc)), None
        raise InboundRefused(
            422,
            f"{where}.{element}",
            f"it attaches to no episode: name one of our Encounters in {element} (or an EpisodeOfCare in the "
            f"{EXT_EPISODE_OF_CARE} extension)",
            "required",
        )

    def _same_patient(self, resource: dict, element: str, where: str, patient_id: str) -> None:
        ref = resource.get(element)
        if ref is None:
            raise InboundRefused(422, f"{where}.{element}", "the patient is required", "required")
        who = self.target(ref, ("Patient",), f"{where}.{element}")
        if self.local(who) != patient_id:
            raise InboundRefused(422, f"{where}.{element}", "is not the patient of the episode it attaches to")

    # --- entries --------------------------------------------------------------------------------------------

    def apply(self, entries: list[dict]) -> dict[int, Outcome]:
        """All entries or none (a transaction): the first refusal is raised."""
        return self._apply(entries, per_entry=False)[0]

    def apply_each(self, entries: list[dict]) -> tuple[dict[int, Outcome], dict[int, InboundRefused]]:
        """Each entry on its own (a batch): a refused entry is rolled back to its savepoint and reported, the
        others stand."""
        return self._apply(entries, per_entry=True)

    def _apply(self, entries: list[dict], *, per_entry: bool) -> tuple[dict[int, Outcome], dict[int, InboundRefused]]:
        order = sorted(range(len(entries)), key=lambda i: _ORDER.get(entries[i]["resource"]["resourceType"], 9))
        scores = _scores_by_source(entries)
        consumed = {i for items in scores.values() for i, _ in items}
        out: dict[int, Outcome] = {}
        failures: dict[int, InboundRefused] = {}
        for i in order:
            if i in consumed:
                continue
            if not per_entry:
                self._apply_one(entries, i, scores, out)
                continue
            try:
                with self.uow.savepoint():
                    self._apply_one(entries, i, scores, out)
            except InboundRefused as exc:
                failures[i] = exc
                for j, _ in scores.get(entries[i].get("fullUrl", ""), []):
                    failures[j] = exc  # a score stands or falls with its QuestionnaireResponse
        return out, failures

    def _apply_one(self, entries: list[dict], i: int, scores: dict, out: dict[int, Outcome]) -> None:
        entry = entries[i]
        resource = entry["resource"]
        rtype = resource["resourceType"]
        where = f"Bundle.entry[{i}].resource"
        try:
            if rtype == "Patient":
                result = self.patient(resource, entry["request"], where)
            elif rtype == "Condition":
                result = self.condition(resource, entry["request"]["method"], where)
            elif rtype == "Observation":
                result = self.observation(resource, where)
            elif rtype == "QuestionnaireResponse":
                result = self.questionnaire_response(resource, entry, scores, where)
            elif rtype == "MedicationAdministration":
                result = self.administration(resource, where)
            else:
                raise InboundRefused(
                    422,
                    f"{where}.resourceType",
                    f"a {rtype} is taken only inside the Bundle of a whole episode (Organization, EpisodeOfCare, "
                    f"CarePlan); alone kapfhir accepts {', '.join(SUPPORTED)}",
                    "not-supported",
                )
        except MappingRefusedError as exc:
            raise InboundRefused(422, _rebase(exc.expression, rtype, where), exc.reason) from None
        except DomainError as exc:
            status = next(s for cls, s in _STATUS if isinstance(exc, cls))
            detail = "; ".join(f"{e.field}: {e.message}" for e in exc.field_errors) or str(exc)
            raise InboundRefused(status, where, f"{exc} {detail}".strip(), "business-rule") from None
        out[i] = result
        if entry.get("fullUrl"):
            self.urls[entry["fullUrl"]] = f"{result.resource_type}/{result.id}"
        for j, score in scores.get(entry.get("fullUrl", ""), []):
            found = self._projected("Observation", _score_value(result, score))
            out[j] = Outcome("Observation", found or result.id, result.created)

    def patient(self, resource: dict, request: dict, where: str) -> Outcome:
        incoming = patient_map.from_patient(ReverseContext(base=self.base), resource)
        current = self.uow.repo.find_patient_by_mrn(incoming.mrn.system, incoming.mrn.value)
        if current is None:
            incoming = dataclasses.replace(
                incoming,
                id=str(
                    uuid.uuid5(
                        uuid.NAMESPACE_URL, f"kapfhir-inbound|Patient|{incoming.mrn.system}|{incoming.mrn.value}"
                    )
                ),
                version=1,
            )
            services.register_patient(self.uow, self.ctx, incoming)
            return Outcome("Patient", self._project_patient(incoming.id), True)
        if request["method"] == "POST" and not request.get("ifNoneExist"):
            raise InboundRefused(
                409,
                f"{where}.identifier",
                f"a patient with MRN {incoming.mrn.value!r} is registered: send ifNoneExist or a conditional PUT",
                "duplicate",
            )
        if request["method"] == "PUT" and _differs(incoming, current, {"id"}):
            amended = dataclasses.replace(incoming, id=current.id)
            services.amend_patient(self.uow, self.ctx, amended, reason="FHIR transaction", expected_version=None)
        return Outcome("Patient", self._project_patient(current.id), False)

    def _project_patient(self, patient_id: str) -> str:
        """The Patient's logical id. The use cases that stored it scheduled its projection; ``_projected`` runs
        that follow-up before it looks."""
        found = self._projected("Patient", patient_id)
        assert found is not None
        return found

    def condition(self, resource: dict, method: str, where: str) -> Outcome:
        episode, _ = self._episode_via(resource, "encounter", where)
        self._same_patient(resource, "subject", where, episode.patient_id)
        indication = condition_map.from_condition(resource)
        same = [
            i
            for i, known in enumerate(episode.indications)
            if (known.icd10cm, known.snomed) == (indication.icd10cm, indication.snomed)
            or (indication.icd10cm and known.icd10cm == indication.icd10cm)
            or (indication.snomed and known.snomed == indication.snomed)
        ]
        indications = list(episode.indications)
        created = not same
        if same and (method != "PUT" or to_data(indications[same[0]]) == to_data(indication)):
            index = same[0]
        else:
            if same:
                index = same[0]
                indications[index] = indication
            else:
                index = len(indications)
                indications.append(indication)
            services.amend_episode(
                self.uow,
                self.ctx,
                episode.id,
                indications=indications,
                care_team=episode.care_team,
                status=episode.status,
                reason="FHIR transaction: Condition",
                expected_version=None,
            )
        found = self._projected("Condition", f"{episode.id}.{index}")
        assert found is not None
        return Outcome("Condition", found, created)

    def observation(self, resource: dict, where: str) -> Outcome:
        body, rctx = self._localised(resource, where)
        if dt.code_in(body.get("code"), t.LOINC) == t.BODY_WEIGHT["code"]:
            who = self.target(body.get("subject"), ("Patient",), f"{where}.subject")
            patient_id = self.local(who)
            weight = obs_map.from_body_weight(rctx, body)
            weight = dataclasses.replace(weight, id=record_id("Observation", resource), version=1)
            try:
                self.uow.repo.get_patient_record(patient_id, weight.id)
                created = False
            except NotFound:
                services.record_patient_record(self.uow, self.ctx, patient_id, weight)
                created = True
            found = self._projected("Observation", weight.id)
            return Outcome("Observation", found or weight.id, created)
        if any(dt.code_in(c, t.OBSERVATION_CATEGORY) == "survey" for c in body.get("category", ())) or body.get(
            "derivedFrom"
        ):
            raise InboundRefused(
                422,
                f"{where}.derivedFrom",
                "a score is taken with the QuestionnaireResponse it is derived from, in the same Bundle: kapfhir "
                "computes scores from the items",
            )
        if not body.get("encounter"):
            raise InboundRefused(
                422,
                f"{where}.encounter",
                "a monitoring reading belongs to a session: name one of our Encounters",
                "required",
            )
        episode, session_id = self._episode_via(body, "encounter", where)
        self._same_patient(body, "subject", where, episode.patient_id)
        if session_id is None:
            raise InboundRefused(422, f"{where}.encounter", "a monitoring reading belongs to a session (an Encounter)")
        values = obs_map.reading_values(body)
        if not values:
            raise InboundRefused(422, f"{where}.value", "the reading has no value kapfhir reads", "required")
        timing = dt.find_extension(body, t.EXT_READING_TIMING)
        if not timing:
            raise InboundRefused(
                422,
                f"{where}.extension('{t.EXT_READING_TIMING}')",
                "the reading timing (pre-dose, during, post-dose, discharge) is required",
                "required",
            )
        if "effectiveDateTime" not in body:
            raise InboundRefused(
                422, f"{where}.effective", "the time of the reading (effectiveDateTime) is required", "required"
            )
        patient_ref = body["subject"].get("reference")
        reading = MonitoringReading(
            id=record_id("Observation", resource),
            entered_in_error=body.get("status") == "entered-in-error",
            session_id=session_id,
            taken_at=dt.parse_datetime(body["effectiveDateTime"]),
            timing=obs_map.READING_TIMING_OF[timing["valueCoding"]["code"]],
            self_reported=any(p.get("reference") == patient_ref for p in body.get("performer", ())),
            **values,
        )
        created = self._add(episode, reading)
        return Outcome("Observation", self._projected("Observation", reading.id) or reading.id, created)

    def questionnaire_response(
        self, resource: dict, entry: dict, scores: dict[str, list[tuple[int, dict]]], where: str
    ) -> Outcome:
        body, rctx = self._localised(resource, where)
        episode, session_id = self._episode_via(body, "encounter", where)
        self._same_patient(body, "subject", where, episode.patient_id)
        mine = [s for _, s in scores.get(entry.get("fullUrl", ""), [])]
        measure = qr_map.from_questionnaire_response(rctx, body, [])
        measure = dataclasses.replace(
            measure, id=record_id("QuestionnaireResponse", resource), version=1, session_id=session_id
        )
        measure.total = measure.severity_band = measure.risk_level = None
        submitted = next((int(s["valueQuantity"]["value"]) for s in mine if "valueQuantity" in s), None)
        created = self._add(episode, measure, submitted)
        found = self._projected("QuestionnaireResponse", measure.id)
        return Outcome("QuestionnaireResponse", found or measure.id, created, measure.id)

    def administration(self, resource: dict, where: str) -> Outcome:
        body, rctx = self._localised(resource, where)
        episode, session_id = self._episode_via(body, "context", where)
        self._same_patient(body, "subject", where, episode.patient_id)
        if session_id is None:
            raise InboundRefused(422, f"{where}.context", "a dose belongs to a session: name one of our Encounters")
        dose = ma_map.from_medication_administration(rctx, body)
        dose = dataclasses.replace(
            dose, id=record_id("MedicationAdministration", resource), version=1, session_id=session_id
        )
        dose.recorded_at = dose.updated_at = None
        created = self._add(episode, dose)
        return Outcome(
            "MedicationAdministration", self._projected("MedicationAdministration", dose.id) or dose.id, created
        )

    def _add(self, episode: Episode, record: Any, submitted_total: int | None = None) -> bool:
        """Adds the record through the domain unless the same record (its deterministic id) is there already."""
        if record.id in episode.records:
            return False
        services.add_records(self.uow, self.ctx, episode.id, [("", record)], submitted_total=submitted_total)
        return True

    def _projected(self, rtype: str, value: str) -> str | None:
        self.uow.run_pending()
        ids = projection.find_by_identifier(self.session, self.clinic, rtype, None, value)
        if not ids:
            prefixed = projection.find_by_identifier_prefix(self.session, self.clinic, rtype, value + ".")
            ids = prefixed
        return ids[0] if ids else None


_REFERABLE = ("Patient", "Practitioner", "Encounter", "EpisodeOfCare", "MedicationRequest", "Observation", "Condition")


def _references(value: Any, path: str) -> Iterator[tuple[dict, str]]:
    if isinstance(value, dict):
        if ("reference" in value or ("identifier" in value and isinstance(value.get("identifier"), dict))) and (
            set(value) <= {"reference", "identifier", "type", "display", "extension", "id"}
        ):
            yield value, path
            return
        for key, item in value.items():
            if key == "contained":
                continue
            if isinstance(item, list):
                for i, element in enumerate(item):
                    yield from _references(element, f"{path}.{key}[{i}]")
            else:
                yield from _references(item, f"{path}.{key}")


def _scores_by_source(entries: list[dict]) -> dict[str, list[tuple[int, dict]]]:
    """Score Observations derivedFrom a QuestionnaireResponse entry of the same Bundle, by that entry's fullUrl."""
    sources = {
        e.get("fullUrl")
        for e in entries
        if e["resource"].get("resourceType") == "QuestionnaireResponse" and e.get("fullUrl")
    }
    out: dict[str, list[tuple[int, dict]]] = {}
    for i, e in enumerate(entries):
        resource = e["resource"]
        if resource.get("resourceType") != "Observation":
            continue
        for ref in resource.get("derivedFrom", ()) or ():
            if isinstance(ref, dict) and ref.get("reference") in sources:
                out.setdefault(ref["reference"], []).append((i, resource))
    return out


def _score_value(result: Outcome, score: dict) -> str:
    return f"{result.record_id}.{'total' if 'valueQuantity' in score else 'risk'}"


def _differs(a: Any, b: Any, ignore: set[str]) -> bool:
    skip = _BOOKKEEPING | ignore
    return {k: v for k, v in to_data(a).items() if k not in skip} != {
        k: v for k, v in to_data(b).items() if k not in skip
    }


def _rebase(expression: str, rtype: str, where: str) -> str:
    return where + expression[len(rtype) :] if expression.startswith(rtype) else f"{where}.{expression}"


def project_patient_alone(session: Any, clinic_id: str, clinic: Any, patient: Patient, now: datetime) -> None:
    """The Patient of a patient without an episode, mapped by the same mapping as in an episode's projection."""
    stub = Episode(id="", patient_id=patient.id, indications=[], period_start=patient.recorded_at or now)
    ctx = MappingContext(EpisodeChart(clinic=clinic, patient=patient, episode=stub))
    mapped = patient_map.to_patient(ctx, patient)
    url = ctx.full_url("Patient", mapped.kind, mapped.value)
    body = copy.deepcopy(mapped.resource)
    body.pop("id", None)
    resource = {"resourceType": body.pop("resourceType"), "id": url.removeprefix("urn:uuid:"), **body}
    projection.store_resources(
        session, clinic_id, [resource], episode_id=None, patient_ref=f"Patient/{resource['id']}", now=now
    )

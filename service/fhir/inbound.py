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
from collections.abc import Callable, Iterator
from datetime import date, datetime
from enum import Enum
from typing import Any
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import bindparam, select

from mappings import bundle as bundle_map
from mappings import datatypes as dt
from mappings import terminology as t
from mappings.bundle import from_bundle
from mappings.context import ORGANIZATION, PRIMARY, MappingContext, full_url_of
from mappings.resources import adverse_event as adverse_event_map
from mappings.resources import condition as condition_map
from mappings.resources import consent as consent_map
from mappings.resources import encounter as encounter_map
from mappings.resources import medication_administration as ma_map
from mappings.resources import medication_request as medication_request_map
from mappings.resources import medication_statement as medication_statement_map
from mappings.resources import observation as obs_map
from mappings.resources import patient as patient_map
from mappings.resources import practitioner as practitioner_map
from mappings.resources import provenance
from mappings.resources import questionnaire_response as qr_map
from mappings.resources._common import MappingRefusedError, ReverseContext, identifiers
from service.adapters.fhir_store import fhir_resources
from service.adapters.serialization import to_data
from service.domain.chart import EpisodeChart
from service.domain.episode import Episode, flag_id
from service.domain.errors import Conflict, DomainError, Incoherent, NotFound, StaleVersion
from service.domain.model import (
    RECORD_KIND_OF,
    BodyWeight,
    ClinicalSession,
    ConcomitantMedication,
    Consent,
    DosingOrder,
    DosingRecord,
    Identifier,
    MonitoringReading,
    OutcomeMeasure,
    Patient,
    SideEffect,
)
from service.domain.vocabulary import AdministrativeGender, EpisodeStatus, FlagStatus, Phase
from service.fhir import projection
from service.service_layer import services

EXT_EPISODE_OF_CARE = f"{t.FHIR_SD}/workflow-episodeOfCare"
_PRIMARY_TYPE = {cls: rtype for cls, (rtype, _) in PRIMARY.items()}
SUPPORTED = ("Patient", "Condition", "Observation", "QuestionnaireResponse", "MedicationAdministration")
_ORDER = {"Patient": 0, "Condition": 1, "MedicationAdministration": 2, "Observation": 3, "QuestionnaireResponse": 4}
_INSTANCE_URL = re.compile(r"(?:.*/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})")
_REF = re.compile(r"^(?:.*/fhir/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/\d+)?$")
# A reference's target (built once: every reference of every inbound entry runs it).
_CURRENT_BODY = select(fhir_resources.c.body, fhir_resources.c.episode_id).where(
    fhir_resources.c.clinic_id == bindparam("clinic_id"),
    fhir_resources.c.resource_type == bindparam("rtype"),
    fhir_resources.c.id == bindparam("rid"),
    fhir_resources.c.is_current.is_(True),
)
# Bookkeeping, what the domain derives, and notes that are never exported: never a reason to amend a record.
_BOOKKEEPING = {
    "version",
    "recorded_at",
    "updated_at",
    "total",
    "severity_band",
    "risk_level",
    "off_label",
    "psychotherapy_notes",
}
_STATUS = ((StaleVersion, 412), (Conflict, 409), (Incoherent, 422), (NotFound, 422), (DomainError, 422))


# (SMART interaction, FHIR type) -> None, raising when the caller's scopes do not allow that domain operation.
Authorize = Callable[[str, str], None]


def _anyone(interaction: str, resource_type: str) -> None:
    return None


# What a reverse mapping raises on valid FHIR that lacks what a KAP record needs (a session without a period...).
UNMAPPABLE = (KeyError, ValueError, TypeError, AttributeError, IndexError, StopIteration)


def unmappable(exc: Exception, where: str) -> InboundRefused:
    missing = f" (missing {exc.args[0]!r})" if isinstance(exc, KeyError) and exc.args else ""
    return InboundRefused(
        422, where, f"the {where.split('.')[-1]} does not map into a KAP record{missing}", "business-rule"
    )


# If-Match: * (RFC 9110, 13.1.1) holds for any current version of the resource.
ANY_VERSION = -1
_ETAG = re.compile(r'\s*(?:W/)?"?([0-9]{1,18})"?\s*')


def if_match_version(raw: str) -> int | None:
    """The version an If-Match header or a Bundle entry's ``request.ifMatch`` names (``W/"3"``, ``"3"``, ``3``), or
    ANY_VERSION for ``*``; None when it names no version."""
    if raw.strip() == "*":
        return ANY_VERSION
    match = _ETAG.fullmatch(raw)
    return int(match.group(1)) if match else None


def check_if_match(stored: Any, expected: int | None, where: str) -> None:
    """412 when an update's If-Match names another version than the current one (``stored``: the resource exists;
    an update of one that does not answers 404, whatever its preconditions, RFC 9110 13.2.2)."""
    if expected not in (None, ANY_VERSION, stored.version_id):
        message = f"{stored.resource_type}/{stored.id} is at version {stored.version_id}"
        raise InboundRefused(412, where, message, "conflict")


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


def record_id(clinic_id: str, resource_type: str, resource: dict) -> str:
    """A deterministic record id: the clinic, the type and the first identifier, else the content. The clinic is
    part of it so that two clinics sending the same identifier get two records and identical answers."""
    found = [i for i in identifiers(resource) if i.get("value")]
    key = f"{found[0].get('system', '')}|{found[0]['value']}" if found else _content_key(resource)
    return scoped_id(clinic_id, f"{resource_type}|{key}")


def scoped_id(clinic_id: str, key: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kapfhir-inbound|{clinic_id}|{key}"))


def _content_key(resource: dict) -> str:
    body = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Inbound:
    """One transaction of inbound resources, applied in the caller's unit of work."""

    def __init__(self, uow: Any, ctx: services.Context, authorize: Authorize | None = None) -> None:
        self.uow, self.ctx = uow, ctx
        self.authorize: Authorize = authorize or _anyone
        self.session, self.clinic = uow.session, uow.clinic_id
        self.base = uow.repo.get_clinic().identifier_system.rstrip("/")
        self.urls: dict[str, str] = {}  # fullUrl of an entry already applied -> "Type/id" it maps to

    # --- references -----------------------------------------------------------------------------------------

    def _row(self, rtype: str, rid: str) -> _Target | None:
        self.uow.run_pending()  # what earlier entries changed must be projected before it is looked up
        params = {"clinic_id": self.clinic, "rtype": rtype, "rid": rid}
        row = self.session.execute(_CURRENT_BODY, params).one_or_none()
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
        body["id"] = record_id(self.clinic, resource["resourceType"], resource)
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
        rtype = entry["resource"]["resourceType"]
        where = f"Bundle.entry[{i}].resource"
        by_id = _INSTANCE_URL.fullmatch(entry["request"]["url"])
        try:
            result = self._apply_resource(entry, by_id, scores, where)
        except MappingRefusedError as exc:
            raise InboundRefused(422, _rebase(exc.expression, rtype, where), exc.reason) from None
        except DomainError as exc:
            status = next(s for cls, s in _STATUS if isinstance(exc, cls))
            detail = "; ".join(f"{e.field}: {e.message}" for e in exc.field_errors) or str(exc)
            raise InboundRefused(status, where, f"{exc} {detail}".strip(), "business-rule") from None
        except UNMAPPABLE as exc:
            raise unmappable(exc, where) from None
        out[i] = result
        if entry.get("fullUrl"):
            self.urls[entry["fullUrl"]] = f"{result.resource_type}/{result.id}"
        for j, score in scores.get(entry.get("fullUrl", ""), []):
            found = self._projected("Observation", _score_value(result, score))
            out[j] = Outcome("Observation", found or result.id, result.created)

    def _apply_resource(self, entry: dict, by_id: re.Match | None, scores: dict, where: str) -> Outcome:
        """One entry, by what it is: an update of a served resource by id, else by its type where it attaches."""
        resource = entry["resource"]
        rtype = resource["resourceType"]
        if entry["request"]["method"] == "PUT" and by_id and by_id.group(1) == rtype:
            return self._update_by_id(rtype, by_id.group(2), resource, where, entry["request"].get("ifMatch"))
        if entry["request"].get("ifMatch") is not None:
            raise InboundRefused(
                422,
                f"{where.removesuffix('.resource')}.request.ifMatch",
                "ifMatch is read on an update by id (PUT Type/id); a create or a conditional update cannot carry it",
                "not-supported",
            )
        if rtype == "Patient":
            return self.patient(resource, entry["request"], where)
        if rtype == "Condition":
            return self.condition(resource, entry["request"]["method"], where)
        if rtype == "Observation":
            return self.observation(resource, where)
        if rtype == "QuestionnaireResponse":
            return self.questionnaire_response(resource, entry, scores, where)
        if rtype == "MedicationAdministration":
            return self.administration(resource, where)
        if rtype == "Practitioner":
            return self._practitioner(resource)
        if rtype in _KIND_OF_TYPE:
            return self._new_record(resource, rtype, where)
        raise InboundRefused(
            422,
            f"{where}.resourceType",
            f"a {rtype} is taken only inside the Bundle of a whole episode (Organization, EpisodeOfCare, "
            f"CarePlan); alone kapfhir accepts {', '.join(SUPPORTED)}",
            "not-supported",
        )

    def _update_by_id(self, rtype: str, rid: str, resource: dict, where: str, if_match: str | None) -> Outcome:
        """A transaction or batch entry ``PUT Type/id`` of a resource kapfhir serves: an update (on the version its
        ``request.ifMatch`` names, as the update interaction honours If-Match)."""
        self.uow.run_pending()
        stored = projection.read(self.session, self.clinic, rtype, rid)
        if stored is None:
            raise InboundRefused(
                404, f"{where}.id", f"no {rtype}/{rid}: kapfhir assigns ids (create with POST)", "not-found"
            )
        if if_match is not None:  # its form is checked with the entry's request
            check_if_match(stored, if_match_version(if_match), f"{where.removesuffix('.resource')}.request.ifMatch")
        if resource.get("id") not in (None, rid):
            raise InboundRefused(400, f"{where}.id", f"the resource's id must be {rid!r} (the entry's url)", "value")
        return self.update(stored, {**resource, "id": rid})

    def patient(self, resource: dict, request: dict, where: str) -> Outcome:
        incoming = patient_map.from_patient(ReverseContext(base=self.base), resource)
        current = self.uow.repo.find_patient_by_mrn(incoming.mrn.system, incoming.mrn.value)
        if current is None:
            incoming = dataclasses.replace(
                incoming,
                id=scoped_id(self.clinic, f"Patient|{incoming.mrn.system}|{incoming.mrn.value}"),
                version=1,
            )
            self.authorize("c", "Patient")
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
            self.authorize("u", "Patient")
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
            self.authorize("u" if same else "c", "Condition")
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
            weight = dataclasses.replace(weight, id=record_id(self.clinic, "Observation", resource), version=1)
            try:
                self.uow.repo.get_patient_record(patient_id, weight.id)
                created = False
            except NotFound:
                self.authorize("c", "Observation")
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
            id=record_id(self.clinic, "Observation", resource),
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
            measure, id=record_id(self.clinic, "QuestionnaireResponse", resource), version=1, session_id=session_id
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
            dose, id=record_id(self.clinic, "MedicationAdministration", resource), version=1, session_id=session_id
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
        self.authorize("c", _PRIMARY_TYPE[type(record)])
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


def project_patient_alone(
    session: Any, clinic_id: str, clinic: Any, patient: Patient, now: datetime, body_weights: list[BodyWeight]
) -> None:
    """The Patient of a patient without an episode and their body weights (an EHR's, or /api/v1's), mapped by the
    same mapping as in an episode's projection: served under /fhir before any episode is opened."""
    stub = Episode(id="", patient_id=patient.id, indications=[], period_start=patient.recorded_at or now)
    chart = EpisodeChart(clinic=clinic, patient=patient, episode=stub, body_weights=body_weights)
    ctx, patient_ref = MappingContext(chart), projection.patient_compartment(chart)
    _store_alone(session, clinic_id, ctx, patient_map.to_patient(ctx, patient), now, patient_ref)
    for weight in body_weights:
        _store_alone(session, clinic_id, ctx, bundle_map.patient_body_weight(ctx, weight), now, patient_ref)


def project_practitioner_alone(session: Any, clinic_id: str, clinic: Any, practitioner: Any, now: datetime) -> None:
    """The Practitioner as an episode's projection maps it, stored before any episode names them; an episode's
    projection later stores the same resource (with that episode's labels)."""
    if projection.read(
        session, clinic_id, "Practitioner", _practitioner_fhir_id(clinic.identifier_system.rstrip("/"), practitioner.id)
    ):
        return
    stub_patient = Patient(
        id="",
        mrn=Identifier(system="", value=""),
        name=practitioner.name,
        birth_date=date(1900, 1, 1),
        gender=AdministrativeGender.UNKNOWN,
    )
    stub = Episode(id="", patient_id="", indications=[], period_start=practitioner.recorded_at or now)
    ctx = MappingContext(EpisodeChart(clinic=clinic, patient=stub_patient, episode=stub, practitioners=[practitioner]))
    _store_alone(session, clinic_id, ctx, practitioner_map.to_practitioner(ctx, practitioner), now, None)


def _store_alone(
    session: Any, clinic_id: str, ctx: MappingContext, mapped: Any, now: datetime, patient_ref: str | None
) -> None:
    """Stores one resource mapped outside a chart, and the Provenance of a new version. ``patient_ref``: the
    compartment (``Patient/{id}``) it belongs to, if any."""
    resource = projection.served_alone(ctx, mapped)
    result = projection.store_resources(
        session, clinic_id, [resource], episode_id=None, patient_ref=patient_ref, now=now
    )
    version, changed = result[(resource["resourceType"], resource["id"])]
    if changed:  # the Provenance of this write, as for an episode's
        target = f"{resource['resourceType']}/{resource['id']}/_history/{version}"
        prov = provenance.to_standalone_provenance(ctx, target, version, dt.instant(now))
        projection.store_resources(session, clinic_id, [prov], episode_id=None, patient_ref=patient_ref, now=now)


# --- a whole episode (a Bundle kapfhir or clinic software produced) -------------------------------------------------

# Records are added in this order so that what a record refers to (its session, order, dose) is there first.
_RECORD_ORDER = (
    Consent,
    DosingOrder,
    ClinicalSession,
    DosingRecord,
    MonitoringReading,
    SideEffect,
    OutcomeMeasure,
    ConcomitantMedication,
    BodyWeight,
)
_TERMINAL_PHASES = (Phase.COMPLETED, Phase.DISCONTINUED)


def identifier_condition(text: Any, expression: str) -> tuple[str | None, str]:
    """``identifier=system|value`` (the only condition kapfhir resolves) -> (system, value)."""
    if not isinstance(text, str):
        raise InboundRefused(400, expression, "a condition is a string such as identifier=system|value", "structure")
    pairs = parse_qsl(text, keep_blank_values=True)
    if len(pairs) != 1 or pairs[0][0] != "identifier" or not pairs[0][1]:
        raise InboundRefused(
            400, expression, f"unsupported condition {text!r}: use identifier=system|value", "not-supported"
        )
    system, _, value = pairs[0][1].rpartition("|")
    return (system or None), value


@dataclasses.dataclass(frozen=True)
class CarriedEpisode:
    """The episode a Bundle carries, the identifier base of the Bundle, and the ids it got here (old -> new)."""

    chart: EpisodeChart
    base: str
    renames: dict[str, str]

    def stored_value(self, kind: str, value: str, clinic_id: str) -> str:
        """The business identifier value a resource of the Bundle has here."""
        if kind == ORGANIZATION:
            return clinic_id
        if value in self.renames:
            return self.renames[value]
        head, dot, tail = value.partition(".")
        return self.renames.get(head, head) + dot + tail


def carried_episode(bundle: dict, clinic_id: str, own_base: str) -> CarriedEpisode:
    """The episode a Bundle carries. Ids of another clinic's export are renamed into this clinic's own (the same
    Bundle always gets the same ids), so no id is shared between clinics."""
    try:
        chart = from_bundle(bundle)
    except MappingRefusedError as exc:
        raise InboundRefused(422, exc.expression, exc.reason) from None
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, StopIteration) as exc:
        raise InboundRefused(
            422, "Bundle", f"the Bundle does not map into a KAP episode ({type(exc).__name__})"
        ) from None
    base = chart.clinic.identifier_system.rstrip("/")
    renames: dict[str, str] = {}
    if base != own_base.rstrip("/"):
        ids = [chart.patient.id, chart.episode.id, *chart.episode.records, *(p.id for p in chart.practitioners)]
        ids += [w.id for w in chart.body_weights]
        renames = {old: scoped_id(clinic_id, f"{base}|{old}") for old in ids}
        old_flags = [f.id for f in chart.episode.flags]
        chart = _renamed(chart, renames)
        for old, flag in zip(old_flags, chart.episode.flags, strict=True):
            renames[old] = flag_id(chart.episode.id, flag.rule_id, flag.record_ids)
    return CarriedEpisode(chart, base, renames)


def _renamed(value: Any, ids: dict[str, str]) -> Any:
    """``value`` with every string that is one of ``ids`` replaced, in dataclasses, lists and dicts alike."""
    if isinstance(value, str) and not isinstance(value, Enum):
        return ids.get(value, value)
    if isinstance(value, list):
        return [_renamed(v, ids) for v in value]
    if isinstance(value, dict):
        return {_renamed(k, ids): _renamed(v, ids) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _renamed(getattr(value, f.name), ids) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    return value


def import_chart(
    uow: Any, ctx: services.Context, chart: EpisodeChart, may_update: Callable[[str], bool], authorize: Authorize
) -> str:
    """Applies a whole episode through the use cases, as the domain API would have recorded it: practitioners,
    patient, body weights, the episode, its records, phase transitions and flag acknowledgements. What is there
    already is left as it is unless the sender may update it (a PUT entry); every operation needs the scope of its
    meaning. Returns the episode id."""
    # The Bundle is answered entry by entry from what the projection stored: every resource of the episode.
    uow.project_whole(chart.episode.id)
    known = _import_practitioners(uow, ctx, chart, authorize)  # ids of the Bundle -> the ids here (NPI, MRN)
    patient_id = _import_patient(uow, ctx, chart.patient, may_update, authorize)
    _adopt_healthcare_setting(uow, ctx, chart, authorize)
    if patient_id != chart.patient.id:
        known[chart.patient.id] = patient_id
    if known:
        chart = _renamed(chart, known)
    _import_body_weights(uow, ctx, chart, patient_id, authorize)
    incoming = chart.episode
    existing, created = _import_episode_header(uow, ctx, incoming, patient_id, may_update, authorize)
    transitions = incoming.phase_history[len(existing.phase_history) :]
    _transition(uow, ctx, incoming.id, [t for t in transitions if t.to_phase not in _TERMINAL_PHASES], authorize)
    _import_records(uow, ctx, incoming, may_update, authorize)
    _transition(uow, ctx, incoming.id, [t for t in transitions if t.to_phase in _TERMINAL_PHASES], authorize)
    current = uow.repo.get_episode(incoming.id)
    if incoming.status is not current.status and not transitions and (created or may_update(incoming.id)):
        authorize("u", "EpisodeOfCare")
        services.amend_episode(
            uow,
            ctx,
            incoming.id,
            indications=current.indications,
            care_team=current.care_team,
            status=incoming.status,
            reason="FHIR transaction",
            expected_version=None,
        )
    _acknowledge(uow, ctx, incoming, authorize)
    _import_rems_submissions(uow, ctx, incoming, authorize)
    return incoming.id


def _import_practitioners(uow: Any, ctx: services.Context, chart: EpisodeChart, authorize: Authorize) -> dict[str, str]:
    """Registers the Bundle's practitioners not known here; returns the ids of those known here under another id
    (the same NPI): Bundle id -> id here."""
    repo = uow.repo
    known: dict[str, str] = {}
    for practitioner in chart.practitioners:
        if not repo.missing_practitioners({practitioner.id}):
            continue
        same = repo.find_practitioner_by_npi(practitioner.npi) if practitioner.npi else None
        if same is not None:
            known[practitioner.id] = same.id
            continue
        authorize("c", "Practitioner")
        services.register_practitioner(uow, ctx, dataclasses.replace(practitioner, version=1))
    return known


def _import_body_weights(
    uow: Any, ctx: services.Context, chart: EpisodeChart, patient_id: str, authorize: Authorize
) -> None:
    """The patient's body weights the Bundle carries that are not recorded here (a weight is never amended here)."""
    known_weights = {w.id for w in uow.repo.body_weights(patient_id)}
    for weight in chart.body_weights:
        if weight.id not in known_weights:
            authorize("c", "Observation")
            services.record_patient_record(uow, ctx, patient_id, _fresh(weight))


def _import_episode_header(
    uow: Any,
    ctx: services.Context,
    incoming: Episode,
    patient_id: str,
    may_update: Callable[[str], bool],
    authorize: Authorize,
) -> tuple[Episode, bool]:
    """(the episode here, whether it was opened now): opened when new, its indications and care team amended when
    the sender may update it; an episode of another patient is refused."""
    try:
        existing: Episode | None = uow.repo.get_episode(incoming.id)
    except NotFound:
        existing = None
    if existing is not None and existing.patient_id != patient_id:
        raise InboundRefused(
            422, "Bundle.entry.resource.ofType(EpisodeOfCare).patient", "the episode has another patient"
        )
    if existing is None:
        authorize("c", "EpisodeOfCare")
        opened = services.open_episode(
            uow,
            ctx,
            patient_id=patient_id,
            indications=incoming.indications,
            care_team=incoming.care_team,
            period_start=incoming.period_start,
            status=EpisodeStatus.ACTIVE if incoming.status is not EpisodeStatus.PLANNED else incoming.status,
            episode_id=incoming.id,
        )
        return opened, True
    if _header(incoming) != _header(existing) and may_update(incoming.id):
        authorize("u", "EpisodeOfCare")
        services.amend_episode(
            uow,
            ctx,
            incoming.id,
            indications=incoming.indications,
            care_team=incoming.care_team,
            status=existing.status,
            reason="FHIR transaction",
            expected_version=None,
        )
    return existing, False


def _adopt_healthcare_setting(uow: Any, ctx: services.Context, chart: EpisodeChart, authorize: Authorize) -> None:
    """A Bundle of this very clinic brings its REMS healthcare setting and time zone when none is recorded here."""
    clinic = uow.repo.get_clinic()
    same = (chart.clinic.id, chart.clinic.identifier_system) == (clinic.id, clinic.identifier_system)
    if same and clinic.setting is None and chart.clinic.setting is not None:
        authorize("u", "Organization")
        services.set_healthcare_setting(uow, ctx, time_zone=chart.clinic.time_zone, setting=chart.clinic.setting)


def _import_rems_submissions(uow: Any, ctx: services.Context, incoming: Episode, authorize: Authorize) -> None:
    """REMS form sendings the sender recorded, through the use case: a form that is complete here is recorded as
    sent at that time (the same form twice is one sending); one that is incomplete here stays unsent, and its
    due/overdue flags say so."""
    current = uow.repo.get_episode(incoming.id)
    known = {(s.session_id, s.submitted_at) for s in current.rems.submissions} | {
        s.id for s in current.rems.submissions
    }
    for sent in sorted(incoming.rems.submissions, key=lambda x: x.submitted_at):
        if sent.id in known or (sent.session_id, sent.submitted_at) in known:
            continue
        authorize("c", "Task")
        try:
            with uow.savepoint():
                services.submit_rems_form(
                    uow,
                    ctx,
                    incoming.id,
                    sent.session_id,
                    channel=sent.channel,
                    submitted_at=sent.submitted_at,
                    confirmation_number=sent.confirmation_number,
                    submitted_by=sent.submitted_by,
                )
        except (Incoherent, NotFound):
            continue


def _import_patient(
    uow: Any, ctx: services.Context, patient: Patient, may_update: Callable[[str], bool], authorize: Authorize
) -> str:
    try:
        current: Patient | None = uow.repo.get_patient(patient.id)
    except NotFound:
        current = uow.repo.find_patient_by_mrn(patient.mrn.system, patient.mrn.value)
    if current is None:
        authorize("c", "Patient")
        services.register_patient(uow, ctx, dataclasses.replace(patient, version=1))
        return patient.id
    if _differs(patient, current, {"id"}) and may_update(patient.id):
        authorize("u", "Patient")
        services.amend_patient(
            uow, ctx, dataclasses.replace(patient, id=current.id), reason="FHIR transaction", expected_version=None
        )
    return current.id


def _import_records(
    uow: Any, ctx: services.Context, incoming: Episode, may_update: Callable[[str], bool], authorize: Authorize
) -> None:
    """The episode's records: new ones added together (in the order they refer to each other), then each known one
    amended or marked entered in error when it differs and the sender may update it."""
    existing = uow.repo.get_episode(incoming.id)
    rank = {cls: i for i, cls in enumerate(_RECORD_ORDER)}
    ordered = sorted(incoming.records.values(), key=lambda r: rank.get(type(r), len(rank)))
    new = [r for r in ordered if r.id not in existing.records]
    for record in new:
        authorize("c", _PRIMARY_TYPE[type(record)])
    if new:
        totals = {r.id: r.total for r in new if isinstance(r, OutcomeMeasure)}
        services.add_records(
            uow,
            ctx,
            incoming.id,
            [(f"{RECORD_KIND_OF[type(r)]}[{r.id}].", _fresh(r, entered_in_error=False)) for r in new],
            submitted_totals=totals,
        )
    for record in ordered:
        _update_record(uow, ctx, incoming.id, record, existing.records.get(record.id), may_update, authorize)


def _update_record(
    uow: Any,
    ctx: services.Context,
    episode_id: str,
    record: Any,
    current: Any,
    may_update: Callable[[str], bool],
    authorize: Authorize,
) -> None:
    """One record of the Bundle against the one here (``current``, None when just added): amended when its content
    differs, then marked entered in error when the Bundle says so; a record here that is entered in error stays so."""
    rtype = _PRIMARY_TYPE[type(record)]
    if current is not None and not current.entered_in_error and _differs(record, current, {"entered_in_error"}):
        if not may_update(record.id):
            return
        authorize("u", rtype)
        if isinstance(record, ClinicalSession) and record.psychotherapy_notes is None:
            record = dataclasses.replace(record, psychotherapy_notes=current.psychotherapy_notes)  # not exported
        services.amend_record(
            uow,
            ctx,
            episode_id,
            _fresh(record, entered_in_error=False),
            reason="FHIR transaction",
            expected_version=None,
            submitted_total=record.total if isinstance(record, OutcomeMeasure) else None,
        )
    if record.entered_in_error and (current is None or not current.entered_in_error):
        if current is not None and not may_update(record.id):
            return
        authorize("u", rtype)
        services.mark_entered_in_error(
            uow, ctx, episode_id, type(record), record.id, reason="FHIR transaction", expected_version=None
        )


def _transition(uow: Any, ctx: services.Context, episode_id: str, transitions: list, authorize: Authorize) -> None:
    for transition in transitions:
        authorize("u", "EpisodeOfCare")
        services.transition_phase(
            uow,
            ctx,
            episode_id,
            to_phase=transition.to_phase,
            at=transition.at,
            reason=transition.reason,
            expected_version=None,
        )


def _acknowledge(uow: Any, ctx: services.Context, incoming: Episode, authorize: Authorize) -> None:
    """Acknowledgements the sender recorded, for flags the domain raised here too (matched by rule and records)."""
    current = {f.key: f for f in uow.repo.get_episode(incoming.id).flags}
    for flag in incoming.flags:
        mine = current.get(flag.key)
        if flag.acknowledgement is None or mine is None or mine.acknowledgement is not None:
            continue
        if mine.status is not FlagStatus.OPEN:
            continue
        authorize("u", "DetectedIssue")
        services.acknowledge_flag(
            uow,
            ctx,
            incoming.id,
            mine.id,
            by=flag.acknowledgement.by,
            comment=flag.acknowledgement.comment,
            at=flag.acknowledgement.at,
        )


def _fresh(record: Any, **changes: Any) -> Any:
    """A copy of an imported record as the use cases take a new one: the domain sets versions and derived values."""
    return dataclasses.replace(record, version=1, recorded_at=None, updated_at=None, **changes)


def _header(episode: Episode) -> tuple:
    return (to_data(episode)["indications"], to_data(episode)["care_team"])


# --- single resources: create, update, delete (the REST interactions of one resource) -------------------------------

# Kind of our business identifier -> reverse mapping of the record it holds.
_READERS: dict[str, Callable[[ReverseContext, dict], Any]] = {
    "consent": consent_map.from_consent,
    "dosing-order": medication_request_map.from_medication_request,
    "session": encounter_map.from_encounter,
    "dose": ma_map.from_medication_administration,
    "side-effect": adverse_event_map.from_adverse_event,
    "concomitant-medication": medication_statement_map.from_medication_statement,
    "body-weight": obs_map.from_body_weight,
    "outcome-measure": lambda rctx, resource: qr_map.from_questionnaire_response(rctx, resource, []),
}
_KIND_OF_TYPE = {rtype: kind for rtype, kind in PRIMARY.values() if kind in _READERS and rtype != "Observation"}
# Where a new record names its episode (an Encounter or EpisodeOfCare reference, else the workflow extension).
_EPISODE_ELEMENT = {
    "Encounter": "episodeOfCare",
    "MedicationRequest": "encounter",
    "AdverseEvent": "encounter",
    "MedicationStatement": "context",
    "Consent": "encounter",  # R4 Consent has none: the workflow-episodeOfCare extension is used
}
# The REST interactions each type supports, as far as it maps to the domain (the CapabilityStatement says the same).
CREATE_TYPES = frozenset(
    {"Patient", "Practitioner", "Condition", "Observation", "QuestionnaireResponse", "MedicationAdministration"}
    | set(_KIND_OF_TYPE)
)
UPDATE_TYPES = frozenset({"Patient", "DetectedIssue", "Observation"} | set(_KIND_OF_TYPE))
DELETE_TYPES = frozenset({"Observation"} | set(_KIND_OF_TYPE))
# What is derived from the records and never written as such: the reason a write answers 405.
DERIVED_TYPES = {
    "CarePlan": "the CarePlan is derived from the episode's phases and sessions: change those",
    "Procedure": "the psychotherapy Procedure is derived from its session (Encounter): change the Encounter",
    "Flag": "the suicide-risk Flag is raised by the safety rules from the scale answers",
    "Organization": "the Organization is the clinic itself, registered with `kapfhir clinics add`",
    "Provenance": "Provenance is written by kapfhir for every change",
    "AuditEvent": "AuditEvents are written by kapfhir for every request",
    "EpisodeOfCare": "an episode is opened with POST /api/v1/episodes or a whole-episode Bundle, and changes "
    "through its records and phase transitions",
    "DetectedIssue": "safety flags are raised by the rules; a flag is acknowledged with an update (status final and "
    "a mitigation by a practitioner)",
    "Condition": "an indication is added with create; it is changed through the episode",
    "Practitioner": "practitioners are registered with create and kept as they are",
    "Patient": "patients are kept: correct them with an update",
}


class RestWrite(Inbound):
    """One resource written through the REST interactions, as domain commands (the use cases)."""

    def create(self, resource: dict, if_none_exist: str | None) -> Outcome:
        rtype = resource["resourceType"]
        request = {"method": "POST", "url": rtype, **({"ifNoneExist": if_none_exist} if if_none_exist else {})}
        where = rtype
        try:
            if rtype in ("Patient", "Condition", "Observation", "QuestionnaireResponse", "MedicationAdministration"):
                self.urls = {}
                entry = {"resource": resource, "request": request}
                outcome = self._apply([entry], per_entry=False)[0].get(0)
                if outcome is None:  # a score Observation alone: it comes with its QuestionnaireResponse
                    raise InboundRefused(422, f"{rtype}.derivedFrom", "kapfhir computes scores from the items")
                return outcome
            if rtype == "Practitioner":
                return self._practitioner(resource)
            if rtype in _KIND_OF_TYPE:
                return self._new_record(resource, rtype, where)
        except MappingRefusedError as exc:
            raise InboundRefused(422, exc.expression, exc.reason) from None
        except DomainError as exc:
            raise _domain_refusal(exc, where) from None
        except UNMAPPABLE as exc:
            raise unmappable(exc, where) from None
        raise InboundRefused(405, rtype, _not_written(rtype), "not-supported")

    def _practitioner(self, resource: dict) -> Outcome:
        new_id = record_id(self.clinic, "Practitioner", resource)
        incoming = practitioner_map.from_practitioner(ReverseContext(base=self.base), {**resource, "id": new_id})
        incoming = dataclasses.replace(incoming, id=new_id, version=1)
        if not self.uow.repo.missing_practitioners({incoming.id}):
            return Outcome("Practitioner", self._projected("Practitioner", incoming.id) or incoming.id, False)
        self.authorize("c", "Practitioner")
        services.register_practitioner(self.uow, self.ctx, incoming)
        return Outcome("Practitioner", _practitioner_fhir_id(self.base, incoming.id), True)

    def _new_record(self, resource: dict, rtype: str, where: str) -> Outcome:
        body, rctx = self._localised(resource, where)
        element = _EPISODE_ELEMENT[rtype]
        if isinstance(body.get(element), list):
            body = {**body, element: body[element][0] if body[element] else None}
        episode, session_id = self._episode_via(body, element, where)
        if body.get("subject") or body.get("patient"):
            self._same_patient(body, "subject" if body.get("subject") else "patient", where, episode.patient_id)
        record = _READERS[_KIND_OF_TYPE[rtype]](rctx, body)
        changes: dict[str, Any] = {"id": body["id"], "version": 1, "recorded_at": None, "updated_at": None}
        if hasattr(record, "session_id") and session_id is not None and getattr(record, "session_id", None) is None:
            changes["session_id"] = session_id
        record = dataclasses.replace(record, **changes)
        created = self._add(episode, record)
        return Outcome(rtype, self._projected(rtype, record.id) or record.id, created, record.id)

    # --- update and delete of a stored resource -------------------------------------------------------------------

    def update(self, stored: Any, resource: dict) -> Outcome:
        """``stored``: the current version (``projection.Stored``) of the resource the update names."""
        rtype = stored.resource_type
        found = _Target(rtype, stored.id, stored.body, stored.episode_id)
        kind, value = self._kind(found)
        where = rtype
        try:
            if rtype == "Patient":
                incoming = patient_map.from_patient(ReverseContext(base=self.base), resource)
                current = self.uow.repo.get_patient(value)
                if _differs(incoming, current, {"id"}):
                    self.authorize("u", "Patient")
                    services.amend_patient(
                        self.uow,
                        self.ctx,
                        dataclasses.replace(incoming, id=current.id),
                        reason="FHIR update",
                        expected_version=None,
                    )
                return Outcome(rtype, stored.id, False)
            if rtype == "DetectedIssue":
                return self._acknowledge(found, value, resource)
            if found.episode_id is None and kind != "body-weight":
                raise InboundRefused(405, rtype, _not_written(rtype), "not-supported")
            if kind == "monitoring-reading":
                return self._update_reading(found, value, resource, where)
            if kind in _READERS and kind != "body-weight":
                return self._update_record(found, kind, value, resource, where)
        except MappingRefusedError as exc:
            raise InboundRefused(422, exc.expression, exc.reason) from None
        except DomainError as exc:
            raise _domain_refusal(exc, where) from None
        except UNMAPPABLE as exc:
            raise unmappable(exc, where) from None
        raise InboundRefused(405, rtype, _not_written(rtype), "not-supported")

    def _update_record(self, found: _Target, kind: str, record_id_: str, resource: dict, where: str) -> Outcome:
        episode = self.uow.repo.get_episode(found.episode_id)
        current = episode.records.get(record_id_)
        if current is None:
            raise InboundRefused(405, where, _not_written(found.resource_type), "not-supported")
        body, rctx = self._localised({**resource, "identifier": found.body.get("identifier")}, where)
        rctx.index(f"{found.resource_type}/{found.id}", found.body)
        incoming = _READERS[kind](rctx, body)
        incoming = dataclasses.replace(incoming, id=current.id)
        if getattr(incoming, "session_id", "") is None and getattr(current, "session_id", None) is not None:
            incoming = dataclasses.replace(incoming, session_id=current.session_id)
        if isinstance(incoming, ClinicalSession) and incoming.psychotherapy_notes is None:
            incoming = dataclasses.replace(incoming, psychotherapy_notes=current.psychotherapy_notes)
        return self._amend(found, episode, current, incoming)

    def _update_reading(self, found: _Target, value: str, resource: dict, where: str) -> Outcome:
        episode = self.uow.repo.get_episode(found.episode_id)
        reading_id = value.rsplit(".", 1)[0]
        current = episode.records.get(reading_id)
        if not isinstance(current, MonitoringReading):
            raise InboundRefused(405, where, _not_written("Observation"), "not-supported")
        values = obs_map.reading_values(resource)
        if not values:
            raise InboundRefused(422, f"{where}.value", "the reading has no value kapfhir reads", "required")
        incoming = dataclasses.replace(
            current,
            entered_in_error=resource.get("status") == "entered-in-error",
            **values,
        )
        if "effectiveDateTime" in resource:
            incoming = dataclasses.replace(incoming, taken_at=dt.parse_datetime(resource["effectiveDateTime"]))
        return self._amend(found, episode, current, incoming)

    def _amend(self, found: _Target, episode: Episode, current: Any, incoming: Any) -> Outcome:
        if current.entered_in_error:
            raise InboundRefused(
                409, found.resource_type, "the record is entered-in-error and can no longer be changed", "conflict"
            )
        if incoming.entered_in_error:
            self.authorize("u", found.resource_type)
            services.mark_entered_in_error(
                self.uow, self.ctx, episode.id, type(current), current.id, reason="FHIR update", expected_version=None
            )
        elif _differs(incoming, current, {"entered_in_error"}):
            self.authorize("u", found.resource_type)
            services.amend_record(
                self.uow,
                self.ctx,
                episode.id,
                dataclasses.replace(incoming, version=current.version, recorded_at=None, updated_at=None),
                reason="FHIR update",
                expected_version=None,
            )
        return Outcome(found.resource_type, found.id, False, current.id)

    def _acknowledge(self, found: _Target, flag_id_: str, resource: dict) -> Outcome:
        """A DetectedIssue with a mitigation acknowledges the flag (as POST .../acknowledgement does)."""
        mitigations = resource.get("mitigation") or []
        if resource.get("status") != "final" or not mitigations:
            raise InboundRefused(
                422,
                "DetectedIssue.mitigation",
                "a flag is acknowledged with status final and a mitigation whose author is a practitioner of this "
                "clinic; nothing else of a DetectedIssue is written",
                "business-rule",
            )
        episode = self.uow.repo.get_episode(found.episode_id)
        flag = next((f for f in episode.flags if f.id == flag_id_), None)
        if flag is None or flag.acknowledgement is not None:
            return Outcome("DetectedIssue", found.id, False)
        author = mitigations[-1].get("author")
        if not isinstance(author, dict):
            raise InboundRefused(422, "DetectedIssue.mitigation.author", "who acknowledges is required", "required")
        who = self.target(author, ("Practitioner",), "DetectedIssue.mitigation.author")
        self.authorize("u", "DetectedIssue")
        note = mitigations[-1].get("action", {}).get("text")
        services.acknowledge_flag(self.uow, self.ctx, episode.id, flag.id, by=self.local(who), comment=note)
        return Outcome("DetectedIssue", found.id, False)

    def delete(self, stored: Any) -> Outcome:
        """DELETE marks the record entered-in-error: it stays readable, out of the rules, with its history."""
        rtype = stored.resource_type
        found = _Target(rtype, stored.id, stored.body, stored.episode_id)
        kind, value = self._kind(found)
        if found.episode_id is None or (kind not in _READERS and kind != "monitoring-reading"):
            reason = DERIVED_TYPES.get(rtype) or (
                f"a {rtype} is not deleted: kapfhir keeps what was recorded "
                "(patients, practitioners and episodes are corrected with an update)"
            )
            raise InboundRefused(405, rtype, reason, "not-supported")
        episode = self.uow.repo.get_episode(found.episode_id)
        record_id_ = value.rsplit(".", 1)[0] if kind == "monitoring-reading" else value
        current = episode.records.get(record_id_)
        if current is None:
            raise InboundRefused(405, rtype, _not_written(rtype), "not-supported")
        if current.entered_in_error:
            return Outcome(rtype, found.id, False, current.id)
        self.authorize("d", rtype)
        services.mark_entered_in_error(
            self.uow, self.ctx, episode.id, type(current), current.id, reason="FHIR delete", expected_version=None
        )
        return Outcome(rtype, found.id, False, current.id)

    def _kind(self, found: _Target) -> tuple[str, str]:
        """(kind, value) of our business identifier: the record a served resource stands for."""
        ours = ReverseContext(base=self.base).kind_of(found.body)
        if ours is None or not ours[1]:
            raise InboundRefused(405, found.resource_type, _not_written(found.resource_type), "not-supported")
        return ours


def _not_written(rtype: str) -> str:
    return DERIVED_TYPES.get(rtype) or (
        f"this {rtype} is not written through /fhir: it is derived by kapfhir or not part of a KAP episode"
    )


def _domain_refusal(exc: DomainError, where: str) -> InboundRefused:
    status = next(s for cls, s in _STATUS if isinstance(exc, cls))
    errors = exc.field_errors
    expression = f"{where}.{errors[0].field}" if len(errors) == 1 else where
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors) or str(exc)
    return InboundRefused(status, expression, f"{exc} {detail}".strip(), "business-rule")


def _practitioner_fhir_id(base: str, practitioner_id: str) -> str:
    return full_url_of(base, "Practitioner", "practitioner", practitioner_id).removeprefix("urn:uuid:")

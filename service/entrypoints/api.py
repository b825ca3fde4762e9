"""The domain REST API under /api/v1. Views parse, call one use case, render."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from flask import Blueprint, Response, g, request, url_for
from marshmallow import Schema

from mappings.bundle import dumps, to_collection_bundle, to_transaction_bundle
from mappings.terminology import REMS_QUESTIONNAIRE_URL
from service.adapters import outbox
from service.adapters.serialization import from_data, record_from_data
from service.domain import rems
from service.domain.episode import Episode
from service.domain.model import (
    RECORD_KIND_OF,
    BodyWeight,
    CareTeamMember,
    ClinicalSession,
    ConcomitantMedication,
    Consent,
    DosingOrder,
    DosingRecord,
    HealthcareSetting,
    Indication,
    MonitoringReading,
    OutcomeMeasure,
    Patient,
    Practitioner,
    PrivacyConsent,
    Record,
    SideEffect,
)
from service.entrypoints import outcome_schemas as o
from service.entrypoints import rems_pdf
from service.entrypoints import schemas as s
from service.entrypoints.http import (
    ApiProblem,
    dumper,
    if_match_version,
    json_response,
    load,
    query_args,
    read,
    state,
    write,
)
from service.entrypoints.routes import (
    ANY_OBJECT,
    EPISODE_TYPES,
    Route,
    SessionWithContent,
    declare,
    items_schema,
    page_schema_of,
    route,
)
from service.service_layer import services
from service.service_layer.services import Context, new_id
from service.service_layer.unit_of_work import UnitOfWork

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@dataclass(frozen=True)
class Collection:
    """A kind of episode record and how the API exposes it."""

    path: str
    cls: type[Record]
    schema: type[Schema]
    create_schema: type[Schema]
    # FHIR resource types the record maps to (what a scope must cover; see the security issue).
    fhir_types: tuple[str, ...]


def _amend_schema(schema: type[Schema]) -> type[Schema]:
    return type(f"Amend{schema.__name__}", (schema,), {"amendment_reason": s.Text(1000, required=True, load_only=True)})


COLLECTIONS: dict[str, Collection] = {
    c.path: c
    for c in (
        Collection("consents", Consent, s.ConsentSchema, s.ConsentSchema, ("Consent",)),
        Collection("dosing-orders", DosingOrder, s.DosingOrderSchema, s.DosingOrderSchema, ("MedicationRequest",)),
        Collection("sessions", ClinicalSession, s.SessionSchema, s.SessionCreateSchema, ("Encounter", "Procedure")),
        Collection("doses", DosingRecord, s.DoseSchema, s.DoseSchema, ("MedicationAdministration",)),
        Collection(
            "monitoring-readings",
            MonitoringReading,
            s.MonitoringReadingSchema,
            s.MonitoringReadingSchema,
            ("Observation",),
        ),
        Collection("side-effects", SideEffect, s.SideEffectSchema, s.SideEffectSchema, ("AdverseEvent",)),
        Collection(
            "outcome-measures",
            OutcomeMeasure,
            s.OutcomeMeasureSchema,
            s.OutcomeMeasureSchema,
            ("QuestionnaireResponse", "Observation"),
        ),
        Collection(
            "concomitant-medications",
            ConcomitantMedication,
            s.ConcomitantMedicationSchema,
            s.ConcomitantMedicationSchema,
            ("MedicationStatement",),
        ),
    )
}
AMEND_SCHEMAS: dict[str, type[Schema]] = {path: _amend_schema(c.schema) for path, c in COLLECTIONS.items()}
_REQUIRED_FOR_RECORD = {"dose": "session_id", "monitoring-reading": "session_id"}


def _pagination() -> tuple[int, int]:
    args = query_args()
    return args["limit"], args["offset"]


def _page(items: list[Any], total: int, limit: int, offset: int) -> dict[str, Any]:
    return {"items": items, "total": total, "limit": limit, "offset": offset}


# --- practitioners ----------------------------------------------------------------------------------------------


@route(
    bp,
    "/practitioners",
    "POST",
    Route(
        "Register a practitioner",
        response=s.PractitionerSchema,
        request=s.PractitionerSchema,
        status=201,
        access=("c", ("Practitioner",)),
    ),
)
def register_practitioner() -> Response:
    data = load(s.PractitionerSchema())

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        practitioner = services.register_practitioner(uow, ctx, from_data(Practitioner, {**data, "id": new_id()}))
        return json_response(
            dumper(s.PractitionerSchema).dump(practitioner),
            201,
            version=practitioner.version,
            location=url_for("api.get_practitioner", practitioner_id=practitioner.id),
        )

    return write(run)


@route(
    bp,
    "/practitioners",
    "GET",
    Route(
        "List practitioners",
        response=page_schema_of(s.PractitionerSchema, "PractitionerPage"),
        access=("s", ("Practitioner",)),
        query=s.PaginationSchema,
    ),
)
def list_practitioners() -> Response:
    limit, offset = _pagination()

    def run(uow: UnitOfWork) -> Response:
        page = uow.repo.list_practitioners(limit=limit, offset=offset)
        return json_response(_page(dumper(s.PractitionerSchema, many=True).dump(page.items), page.total, limit, offset))

    return read(run)


@route(
    bp,
    "/practitioners/<practitioner_id>",
    "GET",
    Route("Read a practitioner", response=s.PractitionerSchema, access=("r", ("Practitioner",))),
)
def get_practitioner(practitioner_id: str) -> Response:
    def run(uow: UnitOfWork) -> Response:
        practitioner = uow.repo.get_practitioner(practitioner_id)
        return json_response(dumper(s.PractitionerSchema).dump(practitioner), version=practitioner.version)

    return read(run)


# --- patients --------------------------------------------------------------------------------------------------


@route(
    bp,
    "/patients",
    "POST",
    Route(
        "Register a patient", response=s.PatientSchema, request=s.PatientSchema, status=201, access=("c", ("Patient",))
    ),
)
def register_patient() -> Response:
    data = load(s.PatientSchema())

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        patient = services.register_patient(uow, ctx, from_data(Patient, {**data, "id": new_id()}))
        return json_response(
            dumper(s.PatientSchema).dump(patient),
            201,
            version=patient.version,
            location=url_for("api.get_patient", patient_id=patient.id),
        )

    return write(run)


@route(
    bp,
    "/patients",
    "GET",
    Route(
        "List patients",
        response=page_schema_of(s.PatientSchema, "PatientPage"),
        access=("s", ("Patient",)),
        query=s.PaginationSchema,
    ),
)
def list_patients() -> Response:
    limit, offset = _pagination()

    def run(uow: UnitOfWork) -> Response:
        page = uow.repo.list_patients(limit=limit, offset=offset)
        return json_response(_page(dumper(s.PatientSchema, many=True).dump(page.items), page.total, limit, offset))

    return read(run)


@route(
    bp, "/patients/<patient_id>", "GET", Route("Read a patient", response=s.PatientSchema, access=("r", ("Patient",)))
)
def get_patient(patient_id: str) -> Response:
    def run(uow: UnitOfWork) -> Response:
        patient = uow.repo.get_patient(patient_id)
        return json_response(dumper(s.PatientSchema).dump(patient), version=patient.version)

    return read(run)


@route(
    bp,
    "/patients/<patient_id>",
    "PUT",
    Route(
        "Amend a patient (If-Match optional)",
        response=s.PatientSchema,
        request=s.AmendPatientSchema,
        access=("u", ("Patient",)),
    ),
)
def amend_patient(patient_id: str) -> Response:
    data = load(s.AmendPatientSchema())
    reason = data.pop("amendment_reason")
    expected = if_match_version()

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        patient = services.amend_patient(
            uow, ctx, from_data(Patient, {**data, "id": patient_id}), reason=reason, expected_version=expected
        )
        return json_response(dumper(s.PatientSchema).dump(patient), version=patient.version)

    return write(run)


@route(
    bp,
    "/patients/<patient_id>/history",
    "GET",
    Route(
        "Versions of a patient", response=items_schema(s.VersionEntrySchema, "VersionList"), access=("r", ("Patient",))
    ),
)
def patient_history(patient_id: str) -> Response:
    def run(uow: UnitOfWork) -> Response:
        uow.repo.get_patient(patient_id)
        return json_response(
            {"items": dumper(s.VersionEntrySchema, many=True).dump(uow.repo.history("patient", patient_id))}
        )

    return read(run)


@route(
    bp,
    "/patients/<patient_id>/body-weights",
    "POST",
    Route(
        "Record a body weight",
        response=s.BodyWeightSchema,
        request=s.BodyWeightSchema,
        status=201,
        access=("c", ("Observation",)),
    ),
)
def record_body_weight(patient_id: str) -> Response:
    data = load(s.BodyWeightSchema())

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        weight = services.record_patient_record(uow, ctx, patient_id, from_data(BodyWeight, {**data, "id": new_id()}))
        return json_response(dumper(s.BodyWeightSchema).dump(weight), 201, version=weight.version)

    return write(run)


@route(
    bp,
    "/patients/<patient_id>/privacy-consents",
    "POST",
    Route(
        "Record a privacy consent (permission to share with one organization)",
        response=s.PrivacyConsentSchema,
        request=s.PrivacyConsentSchema,
        status=201,
        access=("c", ("Consent",)),
    ),
)
def record_privacy_consent(patient_id: str) -> Response:
    data = load(s.PrivacyConsentSchema())

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        consent = services.record_patient_record(
            uow, ctx, patient_id, from_data(PrivacyConsent, {**data, "id": new_id()})
        )
        return json_response(dumper(s.PrivacyConsentSchema).dump(consent), 201, version=consent.version)

    return write(run)


@route(
    bp,
    "/patients/<patient_id>/privacy-consents",
    "GET",
    Route(
        "Privacy consents of a patient",
        response=items_schema(s.PrivacyConsentSchema, "PrivacyConsentList"),
        access=("s", ("Consent",)),
    ),
)
def list_privacy_consents(patient_id: str) -> Response:
    def run(uow: UnitOfWork) -> Response:
        uow.repo.get_patient(patient_id)
        consents = uow.repo.patient_records(patient_id, "privacy-consent")
        return json_response({"items": dumper(s.PrivacyConsentSchema, many=True).dump(consents)})

    return read(run)


@route(
    bp,
    "/patients/<patient_id>/privacy-consents/<consent_id>/withdrawal",
    "POST",
    Route(
        "Withdraw a privacy consent",
        response=s.PrivacyConsentSchema,
        request=s.ConsentWithdrawalSchema,
        access=("u", ("Consent",)),
    ),
)
def withdraw_privacy_consent(patient_id: str, consent_id: str) -> Response:
    data = load(s.ConsentWithdrawalSchema())
    expected = if_match_version()

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        consent = services.withdraw_privacy_consent(
            uow, ctx, patient_id, consent_id, at=data["at"], reason=data["reason"], expected_version=expected
        )
        return json_response(dumper(s.PrivacyConsentSchema).dump(consent), version=consent.version)

    return write(run)


@route(
    bp,
    "/patients/<patient_id>/body-weights",
    "GET",
    Route(
        "Body weights of a patient",
        response=items_schema(s.BodyWeightSchema, "BodyWeightList"),
        access=("s", ("Observation",)),
    ),
)
def list_body_weights(patient_id: str) -> Response:
    def run(uow: UnitOfWork) -> Response:
        uow.repo.get_patient(patient_id)
        return json_response({"items": dumper(s.BodyWeightSchema, many=True).dump(uow.repo.body_weights(patient_id))})

    return read(run)


@route(
    bp,
    "/patients/<patient_id>/body-weights/<record_id>",
    "GET",
    Route("Read a body weight", response=s.BodyWeightSchema, access=("r", ("Observation",))),
)
def get_body_weight(patient_id: str, record_id: str) -> Response:
    def run(uow: UnitOfWork) -> Response:
        weight = uow.repo.get_patient_record(patient_id, record_id)
        return json_response(dumper(s.BodyWeightSchema).dump(weight), version=weight.version)

    return read(run)


# --- episodes --------------------------------------------------------------------------------------------------


def _episode_detail(episode: Episode) -> dict[str, Any]:
    body = dumper(s.EpisodeSummarySchema).dump(episode)
    for path, collection in COLLECTIONS.items():
        records = sorted(episode.all_of(collection.cls), key=lambda r: (r.recorded_at, r.id))  # type: ignore[arg-type, return-value]
        body[path.replace("-", "_")] = dumper(collection.schema, many=True).dump(records)
    body["timeline"] = _timeline(episode)
    body["open_flags"] = dumper(s.SafetyFlagSchema, many=True).dump(episode.open_flags())
    return body


def _timeline(episode: Episode) -> list[dict[str, Any]]:
    """What happened, in clinical order. Summaries carry codes and numbers only, never notes."""
    entries: list[tuple[Any, str, str, str]] = []
    for t in episode.phase_history:
        entries.append((t.at, "phase-transition", "", f"{t.from_phase} -> {t.to_phase}"))
    for record in episode.current(Record):
        kind = RECORD_KIND_OF[type(record)]
        if isinstance(record, Consent):
            entries.append((record.signed_at, kind, record.id, f"consent form {record.form_version} signed"))
            if record.withdrawn_at:
                entries.append((record.withdrawn_at, "consent-withdrawn", record.id, "consent withdrawn"))
        elif isinstance(record, DosingOrder):
            entries.append(
                (
                    record.ordered_at,
                    kind,
                    record.id,
                    f"order {record.medication} {record.dose_value:g} {record.dose_unit} {record.route}",
                )
            )
        elif isinstance(record, ClinicalSession):
            entries.append(
                (record.start, kind, record.id, f"{record.kind} session ({record.modality}), {record.status}")
            )
        elif isinstance(record, DosingRecord):
            per_kg = f", {record.dose_mg_per_kg} mg/kg" if record.dose_mg_per_kg else ""
            entries.append(
                (record.start, kind, record.id, f"{record.medication} {record.dose_mg:g} mg {record.route}{per_kg}")
            )
        elif isinstance(record, SideEffect):
            entries.append((record.onset_at, kind, record.id, f"{record.kind} ({record.severity})"))
        elif isinstance(record, OutcomeMeasure):
            result = (
                f"total {record.total} ({record.severity_band})"
                if record.total is not None
                else f"risk {record.risk_level}"
            )
            entries.append((record.administered_at, kind, record.id, f"{record.instrument} {result}"))
    for flag in episode.flags:
        entries.append((flag.raised_at, "safety-flag", flag.id, f"{flag.rule_id} ({flag.severity}, {flag.status})"))
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    return [
        {"at": at.isoformat(), "kind": kind, "record_id": rid, "summary": summary} for at, kind, rid, summary in entries
    ]


@route(
    bp,
    "/episodes",
    "POST",
    Route(
        "Open a KAP episode",
        response=s.EpisodeDetailSchema,
        request=s.EpisodeCreateSchema,
        status=201,
        access=("c", ("EpisodeOfCare", "Condition")),
    ),
)
def open_episode() -> Response:
    data = load(s.EpisodeCreateSchema())

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        episode = services.open_episode(
            uow,
            ctx,
            patient_id=data["patient_id"],
            indications=[from_data(Indication, i) for i in data["indications"]],
            care_team=[from_data(CareTeamMember, m) for m in data["care_team"]],
            period_start=data["period_start"],
            status=data["status"],
        )
        return json_response(
            _episode_detail(episode),
            201,
            version=episode.version,
            location=url_for("api.get_episode", episode_id=episode.id),
        )

    return write(run)


@route(
    bp,
    "/episodes",
    "GET",
    Route(
        "List episodes",
        response=page_schema_of(s.EpisodeSummarySchema, "EpisodePage"),
        access=("s", ("EpisodeOfCare",)),
        query=s.EpisodeQuerySchema,
    ),
)
def list_episodes() -> Response:
    limit, offset = _pagination()
    filters = {k: query_args()[k] for k in ("patient_id", "status", "phase")}

    def run(uow: UnitOfWork) -> Response:
        page = services.list_episodes(uow, limit=limit, offset=offset, **filters)
        return json_response(
            _page(dumper(s.EpisodeSummarySchema, many=True).dump(page.items), page.total, limit, offset)
        )

    return read(run)


@route(
    bp,
    "/episodes/<episode_id>",
    "GET",
    Route(
        "Read a whole episode with its timeline and open safety flags",
        response=s.EpisodeDetailSchema,
        access=("r", EPISODE_TYPES),
    ),
)
def get_episode(episode_id: str) -> Response:
    def run(uow: UnitOfWork) -> Response:
        episode = services.get_episode(uow, episode_id)
        return json_response(_episode_detail(episode), version=episode.version)

    return read(run)


@route(
    bp,
    "/episodes/<episode_id>",
    "PUT",
    Route(
        "Amend an episode's indications, care team or status",
        response=s.EpisodeDetailSchema,
        request=s.EpisodeAmendSchema,
        access=("u", ("EpisodeOfCare", "Condition")),
    ),
)
def amend_episode(episode_id: str) -> Response:
    data = load(s.EpisodeAmendSchema())
    expected = if_match_version()

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        episode = services.amend_episode(
            uow,
            ctx,
            episode_id,
            indications=[from_data(Indication, i) for i in data["indications"]],
            care_team=[from_data(CareTeamMember, m) for m in data["care_team"]],
            status=data["status"],
            reason=data["amendment_reason"],
            expected_version=expected,
        )
        return json_response(_episode_detail(episode), version=episode.version)

    return write(run)


@route(
    bp,
    "/episodes/<episode_id>/history",
    "GET",
    Route(
        "Versions of an episode",
        response=items_schema(s.VersionEntrySchema, "VersionList"),
        access=("r", ("EpisodeOfCare",)),
    ),
)
def episode_history(episode_id: str) -> Response:
    def run(uow: UnitOfWork) -> Response:
        uow.repo.get_episode(episode_id)
        return json_response(
            {"items": dumper(s.VersionEntrySchema, many=True).dump(uow.repo.history("episode", episode_id))}
        )

    return read(run)


@route(
    bp,
    "/episodes/<episode_id>/phase-transitions",
    "POST",
    Route(
        "Move the episode to another phase",
        response=s.EpisodeDetailSchema,
        request=s.PhaseTransitionSchema,
        status=201,
        access=("u", ("EpisodeOfCare", "CarePlan")),
    ),
)
def transition_phase(episode_id: str) -> Response:
    data = load(s.PhaseTransitionSchema())
    expected = if_match_version()

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        episode = services.transition_phase(
            uow,
            ctx,
            episode_id,
            to_phase=data["to_phase"],
            at=data["at"],
            reason=data["reason"],
            expected_version=expected,
        )
        return json_response(_episode_detail(episode), 201, version=episode.version)

    return write(run)


@route(
    bp,
    "/episodes/<episode_id>/fhir",
    "GET",
    Route(
        "The episode as a FHIR R4 Bundle (transaction or collection)",
        response=None,
        access=("r", (*EPISODE_TYPES, "Patient", "Practitioner", "Organization", "Flag", "Provenance")),
        query=s.FhirExportQuerySchema,
        export=True,
    ),
)
def export_episode_fhir(episode_id: str) -> Response:
    """The episode as an R4 Bundle: a transaction (conditional, idempotent) or a collection."""
    kind = query_args()["type"]

    def run(uow: UnitOfWork) -> Response:
        chart = services.episode_chart(uow, episode_id)
        bundle = to_transaction_bundle(chart) if kind == "transaction" else to_collection_bundle(chart)
        return Response(dumps(bundle), mimetype="application/fhir+json")

    return read(run)


@route(
    bp,
    "/targets",
    "GET",
    Route("Configured EHR targets (no secrets)", response=ANY_OBJECT, access=("s", ("Endpoint",))),
)
def list_targets() -> Response:
    """The configured EHR targets (no secrets)."""
    targets = state().settings.targets
    return read(lambda uow: json_response({"items": [t.public_view() for t in targets.values()]}))


@route(
    bp,
    "/episodes/<episode_id>/sync",
    "GET",
    Route(
        "Sync status of the episode per target, with remote ids", response=ANY_OBJECT, access=("r", ("EpisodeOfCare",))
    ),
)
def episode_sync_status(episode_id: str) -> Response:
    """Per target: the job's status (queued, held with its reason, delivered, dead with the last error) and
    the server's id and version of every resource pushed."""

    def run(uow: UnitOfWork) -> Response:
        uow.repo.get_episode(episode_id)
        body = []
        for job in outbox.jobs_of(uow.session, uow.clinic_id, episode_id):
            remote = outbox.remote_records(uow.session, uow.clinic_id, job.target, episode_id)
            body.append(
                {
                    "target": job.target,
                    "status": job.status,
                    "attempts": job.attempts,
                    "next_attempt_at": job.next_attempt_at.isoformat(),
                    "held_reason": job.held_reason,
                    "last_error": job.last_error,
                    "updated_at": job.updated_at.isoformat(),
                    "resources": [
                        {
                            "key": key,
                            "resource_type": r["resource_type"],
                            "remote_id": r["id"],
                            "remote_version": r["version"],
                        }
                        for key, r in sorted(remote.items())
                    ],
                }
            )
        return json_response({"items": body})

    return read(run)


@route(
    bp,
    "/episodes/<episode_id>/sync/retry",
    "POST",
    Route("Re-queue the episode's dead letters and held jobs", response=ANY_OBJECT, access=("u", ("EpisodeOfCare",))),
)
def retry_episode_sync(episode_id: str) -> Response:
    """Re-queues the episode's dead letters (and held jobs, whose reason may have gone)."""

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        uow.repo.get_episode(episode_id)
        count = outbox.requeue(uow.session, uow.clinic_id, episode_id, ctx.now, (outbox.DEAD, outbox.HELD))
        return json_response({"requeued": count})

    return write(run)


# --- records of an episode ---------------------------------------------------------------------------------------


def _collection(path: str) -> Collection:
    collection = COLLECTIONS.get(path)
    if collection is None:
        raise ApiProblem(404, "Not found", f"No record collection '{path}'.")
    return collection


def _build(collection: Collection, data: dict[str, Any], record_id: str) -> tuple[Record, int | None]:
    data = dict(data)
    submitted_total = data.pop("total", None) if collection.cls is OutcomeMeasure else None
    kind = RECORD_KIND_OF[collection.cls]
    field = _REQUIRED_FOR_RECORD.get(kind)
    if field and not data.get(field):
        raise ApiProblem(
            422,
            "Invalid content",
            f"{field} is required.",
            [{"field": field, "message": "Missing data for required field."}],
        )
    return record_from_data(kind, {**data, "id": record_id}), submitted_total


def _record_response(
    collection: Collection, record: Record, status: int = 200, episode_id: str | None = None
) -> Response:
    location = (
        url_for("api.get_record", episode_id=episode_id, collection=collection.path, record_id=record.id)
        if episode_id
        else None
    )
    return json_response(dumper(collection.schema).dump(record), status, version=record.version, location=location)


def add_record(episode_id: str, collection: str) -> Response:
    coll = _collection(collection)
    data = load(coll.create_schema())
    if coll.cls is ClinicalSession:
        doses = data.pop("doses")
        readings = data.pop("monitoring_readings")
        side_effects = data.pop("side_effects")
    record, submitted_total = _build(coll, data, new_id())
    children: list[tuple[str, Record]] = []
    if coll.cls is ClinicalSession:
        dose_ids = [new_id() for _ in doses]
        children += [
            (f"doses[{i}].", from_data(DosingRecord, {**d, "id": dose_ids[i], "session_id": record.id}))
            for i, d in enumerate(doses)
        ]
        children += [
            (f"monitoring_readings[{i}].", from_data(MonitoringReading, {**r, "id": new_id(), "session_id": record.id}))
            for i, r in enumerate(readings)
        ]
        for i, effect in enumerate(side_effects):
            index = effect.pop("dose_index", None)
            dose_id = dose_ids[index] if index is not None else None
            children.append(
                (
                    f"side_effects[{i}].",
                    from_data(SideEffect, {**effect, "id": new_id(), "session_id": record.id, "dose_id": dose_id}),
                )
            )

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        stored, _ = services.add_records(
            uow, ctx, episode_id, [("", record), *children], submitted_total=submitted_total
        )
        response = _record_response(coll, stored[0], 201, episode_id)
        if children:
            body = dumper(coll.schema).dump(stored[0])
            body["doses"] = dumper(s.DoseSchema, many=True).dump([c for c in stored if isinstance(c, DosingRecord)])
            body["monitoring_readings"] = dumper(s.MonitoringReadingSchema, many=True).dump(
                [c for c in stored if isinstance(c, MonitoringReading)]
            )
            body["side_effects"] = dumper(s.SideEffectSchema, many=True).dump(
                [c for c in stored if isinstance(c, SideEffect)]
            )
            response.set_data(json_response(body).get_data())
        return response

    return write(run)


def list_records(episode_id: str, collection: str) -> Response:
    coll = _collection(collection)
    kind_filter = query_args().get("kind")

    def run(uow: UnitOfWork) -> Response:
        records = services.list_records(uow, episode_id, coll.cls)
        if kind_filter is not None:
            records = [r for r in records if getattr(r, "kind", None) is kind_filter]
        return json_response({"items": dumper(coll.schema, many=True).dump(records)})

    return read(run)


def get_record(episode_id: str, collection: str, record_id: str) -> Response:
    coll = _collection(collection)

    def run(uow: UnitOfWork) -> Response:
        return _record_response(coll, services.get_record(uow, episode_id, coll.cls, record_id))

    return read(run)


def amend_record(episode_id: str, collection: str, record_id: str) -> Response:
    coll = _collection(collection)
    data = load(AMEND_SCHEMAS[collection]())
    reason = data.pop("amendment_reason")
    expected = if_match_version()
    record, submitted_total = _build(coll, data, record_id)

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        amended = services.amend_record(
            uow, ctx, episode_id, record, reason=reason, expected_version=expected, submitted_total=submitted_total
        )
        return _record_response(coll, amended)

    return write(run)


def mark_entered_in_error(episode_id: str, collection: str, record_id: str) -> Response:
    coll = _collection(collection)
    data = load(s.EnteredInErrorSchema())
    expected = if_match_version()

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        marked = services.mark_entered_in_error(
            uow, ctx, episode_id, coll.cls, record_id, reason=data["reason"], expected_version=expected
        )
        return _record_response(coll, marked)

    return write(run)


def record_history(episode_id: str, collection: str, record_id: str) -> Response:
    coll = _collection(collection)

    def run(uow: UnitOfWork) -> Response:
        kind = RECORD_KIND_OF[coll.cls]
        entries = services.record_history(uow, episode_id, coll.cls, record_id)
        items = []
        for entry in entries:
            # Rendered through the record's schema, so that what the API never shows (notes) stays hidden.
            item = dumper(s.VersionEntrySchema).dump(entry)
            item["data"] = dumper(coll.schema).dump(record_from_data(kind, entry.data))
            items.append(item)
        return json_response({"items": items})

    return read(run)


@route(
    bp,
    "/episodes/<episode_id>/consents/<consent_id>/withdrawal",
    "POST",
    Route(
        "Withdraw a consent", response=s.ConsentSchema, request=s.ConsentWithdrawalSchema, access=("u", ("Consent",))
    ),
)
def withdraw_consent(episode_id: str, consent_id: str) -> Response:
    data = load(s.ConsentWithdrawalSchema())
    expected = if_match_version()

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        consent = services.withdraw_consent(
            uow, ctx, episode_id, consent_id, at=data["at"], reason=data["reason"], expected_version=expected
        )
        return _record_response(COLLECTIONS["consents"], consent)

    return write(run)


# --- safety flags -------------------------------------------------------------------------------------------------


@route(
    bp,
    "/episodes/<episode_id>/safety-flags",
    "GET",
    Route(
        "Safety flags of an episode",
        response=items_schema(s.SafetyFlagSchema, "SafetyFlagList"),
        access=("s", ("DetectedIssue",)),
        query=s.FlagQuerySchema,
    ),
)
def list_safety_flags(episode_id: str) -> Response:
    status = query_args()["status"]

    def run(uow: UnitOfWork) -> Response:
        flags = services.get_episode(uow, episode_id).flags
        if status is not None:
            flags = [f for f in flags if f.status is status]
        return json_response({"items": dumper(s.SafetyFlagSchema, many=True).dump(flags)})

    return read(run)


@route(
    bp,
    "/episodes/<episode_id>/safety-flags/<flag_id>/acknowledgement",
    "POST",
    Route(
        "Acknowledge a safety flag",
        response=s.SafetyFlagSchema,
        request=s.FlagAcknowledgementSchema,
        access=("u", ("DetectedIssue",)),
    ),
)
def acknowledge_safety_flag(episode_id: str, flag_id: str) -> Response:
    data = load(s.FlagAcknowledgementSchema())

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        flag = services.acknowledge_flag(uow, ctx, episode_id, flag_id, by=data["by"], comment=data["comment"])
        return json_response(dumper(s.SafetyFlagSchema).dump(flag))

    return write(run)


# One concrete URL rule per collection, so the URL map (and the OpenAPI contract) names every route; one declaration
# per view, whose facts follow the collection named in the rule's defaults.
_RECORD_VIEWS = (
    # view, rule suffix, method, SMART interaction
    (add_record, "", "POST", "c"),
    (list_records, "", "GET", "s"),
    (get_record, "/<record_id>", "GET", "r"),
    (amend_record, "/<record_id>", "PUT", "u"),
    (mark_entered_in_error, "/<record_id>/entered-in-error", "POST", "u"),
    (record_history, "/<record_id>/history", "GET", "r"),
)


def _record_route(view: Any, interaction: str, defaults: Mapping[str, Any]) -> Route:
    """The facts of one record view for the collection in ``defaults``."""
    collection = COLLECTIONS[defaults["collection"]]
    noun = collection.path.replace("-", " ")
    name = collection.schema.__name__.removesuffix("Schema")
    access = (interaction, collection.fhir_types)
    if view is add_record:
        response = SessionWithContent if collection.cls.__name__ == "ClinicalSession" else collection.schema
        return Route(f"Record {noun}", access=access, response=response, request=collection.create_schema, status=201)
    if view is list_records:
        query = s.SessionQuerySchema if collection.path == "sessions" else None
        return Route(
            f"List {noun}", access=access, response=items_schema(collection.schema, f"{name}List"), query=query
        )
    if view is get_record:
        return Route(f"Read one of the {noun}", access=access, response=collection.schema)
    if view is amend_record:
        return Route(
            f"Amend one of the {noun} (a new version with a reason)",
            access=access,
            response=collection.schema,
            request=AMEND_SCHEMAS[collection.path],
        )
    if view is mark_entered_in_error:
        return Route(
            f"Mark one of the {noun} entered-in-error",
            access=access,
            response=collection.schema,
            request=s.EnteredInErrorSchema,
        )
    return Route(
        f"Versions of one of the {noun}", access=access, response=items_schema(s.VersionEntrySchema, "VersionList")
    )


for _view, _suffix, _method, _interaction in _RECORD_VIEWS:
    declare(
        f"api.{_view.__name__}",
        Route(
            f"{_view.__name__} of a record collection",
            variant=lambda defaults, v=_view, i=_interaction: _record_route(v, i, defaults),
        ),
    )
    for _path in COLLECTIONS:
        bp.add_url_rule(
            f"/episodes/<episode_id>/{_path}{_suffix}",
            view_func=_view,
            methods=[_method],
            defaults={"collection": _path},
        )


# --- measurement-based care: outcome figures and view links --------------------------------------------------------


@route(
    bp,
    "/outcomes",
    "GET",
    Route(
        "Outcome measures of the clinic: response, remission, per indication, time to first response",
        response=o.OutcomesSchema,
        access=("r", ("MeasureReport", "Observation")),
        query=o.OutcomesQuerySchema,
    ),
)
def outcomes() -> Response:
    from service.entrypoints import outcome_schemas as os_
    from service.service_layer import outcomes as uc

    args = query_args()

    def run(uow: UnitOfWork) -> Response:
        summary = uc.outcomes_summary(
            uow, args["from_"], args["to"], pcl5_cut_point=state().settings.safety.pcl5_cut_point
        )
        return json_response(dumper(os_.OutcomesSchema).dump(os_.outcomes_body(summary)))

    return read(run)


@route(
    bp,
    "/episodes/<episode_id>/view-link",
    "POST",
    Route(
        "A 5-minute signed link to the episode page",
        response=o.ViewLinkSchema,
        access=("r", (*EPISODE_TYPES, "Patient")),
    ),
)
def create_episode_view_link(episode_id: str) -> Response:
    from service.entrypoints import outcome_schemas as os_
    from service.entrypoints import views
    from service.entrypoints.http import principal

    # Through write(): its audit commits with the answer, and an Idempotency-Key replays the same link.
    def run(uow: UnitOfWork, ctx: Context) -> Response:
        uow.repo.get_episode(episode_id)  # 404 for an unknown episode or another clinic's
        link = views.episode_link(episode_id, principal(), ctx.now)
        return json_response(dumper(os_.ViewLinkSchema).dump(link))

    return write(run)


@route(
    bp,
    "/outcomes/view-link",
    "POST",
    Route(
        "A 5-minute signed link to the outcomes page",
        response=o.ViewLinkSchema,
        access=("r", ("MeasureReport", "Observation")),
        query=o.OutcomesQuerySchema,
    ),
)
def create_outcomes_view_link() -> Response:
    from service.entrypoints import outcome_schemas as os_
    from service.entrypoints import views
    from service.entrypoints.http import principal

    args = query_args()

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        link = views.outcomes_link(args["from_"], args["to"], principal(), ctx.now)
        return json_response(dumper(os_.ViewLinkSchema).dump(link))

    return write(run)


# --- Spravato REMS Patient Monitoring Form -------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def _rems_form_body(form: rems.RemsForm, now: datetime) -> dict[str, Any]:
    body = {
        "episode_id": form.episode_id,
        "session_id": form.session_id,
        "patient_id": form.patient_id,
        "questionnaire": REMS_QUESTIONNAIRE_URL,
        "status": form.status,
        "missing": form.missing,
        "missing_fields": form.missing_fields,
        "treatment_date": form.treatment_date,
        "due_date": form.due_date,
        "overdue": form.is_overdue(now),
        "submission_state": form.submission_state,
        "corrected_submission_needed": form.submission_state == rems.AMENDED,
        "submission": form.submission,
        "submissions": form.submissions,
        "fields_": [
            {
                "key": f.key,
                "section": section.title,
                "text": f.text,
                "required": f.required,
                "answer": _json_value(form.answers.get(f.key)),
                "sources": form.sources.get(f.key, []),
            }
            for section in rems.SECTIONS
            for f in section.fields
        ],
    }
    return dumper(s.RemsFormSchema).dump(body)


def _rems_audit_entities(episode_id: str, session_id: str) -> list[dict[str, str]]:
    """What a REMS form access touches, for the audit trail: the episode and the session the form reports."""
    return [{"type": "EpisodeOfCare", "id": episode_id}, {"type": "Encounter", "id": session_id}]


@route(
    bp,
    "/clinic/healthcare-setting",
    "GET",
    Route(
        "The clinic's time zone and healthcare setting (REMS form)",
        response=s.HealthcareSettingSchema,
        access=("r", ("Organization",)),
    ),
)
def get_healthcare_setting() -> Response:
    def run(uow: UnitOfWork) -> Response:
        clinic = uow.repo.get_clinic()
        setting = clinic.setting or HealthcareSetting()
        body = {"name": clinic.name, "time_zone": clinic.time_zone, **vars(setting)}
        return json_response(dumper(s.HealthcareSettingSchema).dump(body))

    return read(run)


@route(
    bp,
    "/clinic/healthcare-setting",
    "PUT",
    Route(
        "Set the clinic's time zone and healthcare setting (REMS form)",
        response=s.HealthcareSettingSchema,
        request=s.HealthcareSettingSchema,
        access=("u", ("Organization",)),
    ),
)
def set_healthcare_setting() -> Response:
    data = load(s.HealthcareSettingSchema())
    time_zone = data.pop("time_zone")

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        clinic = services.set_healthcare_setting(uow, ctx, time_zone=time_zone, setting=HealthcareSetting(**data))
        body = {"name": clinic.name, "time_zone": clinic.time_zone, **vars(clinic.setting or HealthcareSetting())}
        return json_response(dumper(s.HealthcareSettingSchema).dump(body))

    return write(run)


@route(
    bp,
    "/episodes/<episode_id>/sessions/<session_id>/rems-form",
    "GET",
    Route(
        "The session's Spravato REMS Patient Monitoring Form (JSON, or PDF with Accept: application/pdf)",
        response=s.RemsFormSchema,
        access=("r", ("QuestionnaireResponse", "Task")),
    ),
)
def get_rems_form(episode_id: str, session_id: str) -> Response:
    """The session's REMS form as JSON (answers with the records they come from, what is missing), or as the
    printable PDF with ``Accept: application/pdf``."""
    wants_pdf = request.accept_mimetypes.best_match(["application/json", "application/pdf"]) == "application/pdf"
    g.audit_entities = _rems_audit_entities(episode_id, session_id)

    def run(uow: UnitOfWork) -> Response:
        form = services.rems_form(uow, episode_id, session_id)
        now = datetime.now(UTC)
        if wants_pdf:
            pdf = rems_pdf.render(form, generated_at=now.strftime("%Y-%m-%d %H:%M UTC"))
            response = Response(pdf, mimetype="application/pdf")
            response.headers["Content-Disposition"] = f'inline; filename="rems-form-{session_id}.pdf"'
            return response
        return json_response(_rems_form_body(form, now))

    return read(run)


@route(
    bp,
    "/episodes/<episode_id>/sessions/<session_id>/rems-form/submission",
    "POST",
    Route(
        "Record that the REMS form was sent (portal or fax); idempotent",
        response=s.RemsFormSchema,
        request=s.RemsSubmissionSchema,
        status=201,
        access=("c", ("Task",)),
    ),
)
def submit_rems_form(episode_id: str, session_id: str) -> Response:
    """Records how and when the form was sent. 201 the first time; the same form again answers 200 with the
    submission already recorded; an incomplete form is refused (422 naming what is missing)."""
    data = load(s.RemsSubmissionSchema())

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        submission, form, created = services.submit_rems_form(uow, ctx, episode_id, session_id, **data)
        g.audit_entities = [*_rems_audit_entities(episode_id, session_id), {"type": "Task", "id": submission.id}]
        return json_response(
            _rems_form_body(form, ctx.now),
            201 if created else 200,
            location=url_for("api.get_rems_form", episode_id=episode_id, session_id=session_id),
        )

    return write(run)


@route(
    bp,
    "/rems-forms",
    "GET",
    Route(
        "The clinic's REMS forms (status=due: still to send)",
        response=items_schema(s.RemsFormSchema, "RemsFormList"),
        access=("s", ("QuestionnaireResponse", "Task")),
        query=s.RemsFormQuerySchema,
    ),
)
def list_rems_forms() -> Response:
    """The clinic's REMS forms; ``status=due`` lists what must still be sent (unsent, or changed since sent)."""
    status = query_args()["status"]

    def run(uow: UnitOfWork) -> Response:
        now = datetime.now(UTC)
        forms = services.list_rems_forms(uow, now=now, status=status)
        return json_response({"items": [_rems_form_body(f, now) for f in forms]})

    return read(run)


@route(
    bp,
    "/rems-forms/deadline-review",
    "POST",
    Route(
        "Bring the REMS form deadline flags up to today's date", response=ANY_OBJECT, access=("u", ("DetectedIssue",))
    ),
)
def review_rems_deadlines() -> Response:
    """Brings the rems-form-due/-overdue safety flags up to today's date; run daily by a scheduler."""

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        return json_response({"flags_changed": services.review_rems_deadlines(uow, ctx)})

    return write(run)

"""The domain REST API under /api/v1. Views parse, call one use case, render."""

from __future__ import annotations

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


@bp.post("/practitioners")
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


@bp.get("/practitioners")
def list_practitioners() -> Response:
    limit, offset = _pagination()

    def run(uow: UnitOfWork) -> Response:
        page = uow.repo.list_practitioners(limit=limit, offset=offset)
        return json_response(_page(dumper(s.PractitionerSchema, many=True).dump(page.items), page.total, limit, offset))

    return read(run)


@bp.get("/practitioners/<practitioner_id>")
def get_practitioner(practitioner_id: str) -> Response:
    def run(uow: UnitOfWork) -> Response:
        practitioner = uow.repo.get_practitioner(practitioner_id)
        return json_response(dumper(s.PractitionerSchema).dump(practitioner), version=practitioner.version)

    return read(run)


# --- patients --------------------------------------------------------------------------------------------------


@bp.post("/patients")
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


@bp.get("/patients")
def list_patients() -> Response:
    limit, offset = _pagination()

    def run(uow: UnitOfWork) -> Response:
        page = uow.repo.list_patients(limit=limit, offset=offset)
        return json_response(_page(dumper(s.PatientSchema, many=True).dump(page.items), page.total, limit, offset))

    return read(run)


@bp.get("/patients/<patient_id>")
def get_patient(patient_id: str) -> Response:
    def run(uow: UnitOfWork) -> Response:
        patient = uow.repo.get_patient(patient_id)
        return json_response(dumper(s.PatientSchema).dump(patient), version=patient.version)

    return read(run)


@bp.put("/patients/<patient_id>")
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


@bp.get("/patients/<patient_id>/history")
def patient_history(patient_id: str) -> Response:
    def run(uow: UnitOfWork) -> Response:
        uow.repo.get_patient(patient_id)
        return json_response(
            {"items": dumper(s.VersionEntrySchema, many=True).dump(uow.repo.history("patient", patient_id))}
        )

    return read(run)


@bp.post("/patients/<patient_id>/body-weights")
def record_body_weight(patient_id: str) -> Response:
    data = load(s.BodyWeightSchema())

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        weight = services.record_patient_record(uow, ctx, patient_id, from_data(BodyWeight, {**data, "id": new_id()}))
        return json_response(dumper(s.BodyWeightSchema).dump(weight), 201, version=weight.version)

    return write(run)


@bp.post("/patients/<patient_id>/privacy-consents")
def record_privacy_consent(patient_id: str) -> Response:
    data = load(s.PrivacyConsentSchema())

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        consent = services.record_patient_record(
            uow, ctx, patient_id, from_data(PrivacyConsent, {**data, "id": new_id()})
        )
        return json_response(dumper(s.PrivacyConsentSchema).dump(consent), 201, version=consent.version)

    return write(run)


@bp.get("/patients/<patient_id>/privacy-consents")
def list_privacy_consents(patient_id: str) -> Response:
    def run(uow: UnitOfWork) -> Response:
        uow.repo.get_patient(patient_id)
        consents = uow.repo.patient_records(patient_id, "privacy-consent")
        return json_response({"items": dumper(s.PrivacyConsentSchema, many=True).dump(consents)})

    return read(run)


@bp.post("/patients/<patient_id>/privacy-consents/<consent_id>/withdrawal")
def withdraw_privacy_consent(patient_id: str, consent_id: str) -> Response:
    data = load(s.ConsentWithdrawalSchema())
    expected = if_match_version()

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        consent = services.withdraw_privacy_consent(
            uow, ctx, patient_id, consent_id, at=data["at"], reason=data["reason"], expected_version=expected
        )
        return json_response(dumper(s.PrivacyConsentSchema).dump(consent), version=consent.version)

    return write(run)


@bp.get("/patients/<patient_id>/body-weights")
def list_body_weights(patient_id: str) -> Response:
    def run(uow: UnitOfWork) -> Response:
        uow.repo.get_patient(patient_id)
        return json_response({"items": dumper(s.BodyWeightSchema, many=True).dump(uow.repo.body_weights(patient_id))})

    return read(run)


@bp.get("/patients/<patient_id>/body-weights/<record_id>")
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


@bp.post("/episodes")
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


@bp.get("/episodes")
def list_episodes() -> Response:
    limit, offset = _pagination()
    filters = {k: query_args()[k] for k in ("patient_id", "status", "phase")}

    def run(uow: UnitOfWork) -> Response:
        page = services.list_episodes(uow, limit=limit, offset=offset, **filters)
        return json_response(
            _page(dumper(s.EpisodeSummarySchema, many=True).dump(page.items), page.total, limit, offset)
        )

    return read(run)


@bp.get("/episodes/<episode_id>")
def get_episode(episode_id: str) -> Response:
    def run(uow: UnitOfWork) -> Response:
        episode = services.get_episode(uow, episode_id)
        return json_response(_episode_detail(episode), version=episode.version)

    return read(run)


@bp.put("/episodes/<episode_id>")
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


@bp.get("/episodes/<episode_id>/history")
def episode_history(episode_id: str) -> Response:
    def run(uow: UnitOfWork) -> Response:
        uow.repo.get_episode(episode_id)
        return json_response(
            {"items": dumper(s.VersionEntrySchema, many=True).dump(uow.repo.history("episode", episode_id))}
        )

    return read(run)


@bp.post("/episodes/<episode_id>/phase-transitions")
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


@bp.get("/episodes/<episode_id>/fhir")
def export_episode_fhir(episode_id: str) -> Response:
    """The episode as an R4 Bundle: a transaction (conditional, idempotent) or a collection."""
    kind = query_args()["type"]

    def run(uow: UnitOfWork) -> Response:
        chart = services.episode_chart(uow, episode_id)
        bundle = to_transaction_bundle(chart) if kind == "transaction" else to_collection_bundle(chart)
        return Response(dumps(bundle), mimetype="application/fhir+json")

    return read(run)


@bp.get("/targets")
def list_targets() -> Response:
    """The configured EHR targets (no secrets)."""
    targets = state().settings.targets
    return read(lambda uow: json_response({"items": [t.public_view() for t in targets.values()]}))


@bp.get("/episodes/<episode_id>/sync")
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


@bp.post("/episodes/<episode_id>/sync/retry")
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


@bp.post("/episodes/<episode_id>/consents/<consent_id>/withdrawal")
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


@bp.get("/episodes/<episode_id>/safety-flags")
def list_safety_flags(episode_id: str) -> Response:
    status = query_args()["status"]

    def run(uow: UnitOfWork) -> Response:
        flags = services.get_episode(uow, episode_id).flags
        if status is not None:
            flags = [f for f in flags if f.status is status]
        return json_response({"items": dumper(s.SafetyFlagSchema, many=True).dump(flags)})

    return read(run)


@bp.post("/episodes/<episode_id>/safety-flags/<flag_id>/acknowledgement")
def acknowledge_safety_flag(episode_id: str, flag_id: str) -> Response:
    data = load(s.FlagAcknowledgementSchema())

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        flag = services.acknowledge_flag(uow, ctx, episode_id, flag_id, by=data["by"], comment=data["comment"])
        return json_response(dumper(s.SafetyFlagSchema).dump(flag))

    return write(run)


# One concrete URL rule per collection, so the URL map (and the OpenAPI contract) names every route.
for _path in COLLECTIONS:
    bp.add_url_rule(
        f"/episodes/<episode_id>/{_path}", view_func=add_record, methods=["POST"], defaults={"collection": _path}
    )
    bp.add_url_rule(
        f"/episodes/<episode_id>/{_path}", view_func=list_records, methods=["GET"], defaults={"collection": _path}
    )
    bp.add_url_rule(
        f"/episodes/<episode_id>/{_path}/<record_id>",
        view_func=get_record,
        methods=["GET"],
        defaults={"collection": _path},
    )
    bp.add_url_rule(
        f"/episodes/<episode_id>/{_path}/<record_id>",
        view_func=amend_record,
        methods=["PUT"],
        defaults={"collection": _path},
    )
    bp.add_url_rule(
        f"/episodes/<episode_id>/{_path}/<record_id>/entered-in-error",
        view_func=mark_entered_in_error,
        methods=["POST"],
        defaults={"collection": _path},
    )
    bp.add_url_rule(
        f"/episodes/<episode_id>/{_path}/<record_id>/history",
        view_func=record_history,
        methods=["GET"],
        defaults={"collection": _path},
    )


# --- measurement-based care: outcome figures and view links --------------------------------------------------------


@bp.get("/outcomes")
def outcomes() -> Response:
    from service.entrypoints import outcome_schemas as os_
    from service.service_layer import outcomes as uc

    args = query_args()

    def run(uow: UnitOfWork) -> Response:
        summary = uc.outcomes_summary(
            uow, args["from_"], args["to"], pcl5_cut_point=state().settings.safety.pcl5_cut_point
        )
        return json_response(dumper(os_.OutcomesSchema).dump(os_.outcomes_body(summary)))


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


@bp.get("/clinic/healthcare-setting")
def get_healthcare_setting() -> Response:
    def run(uow: UnitOfWork) -> Response:
        clinic = uow.repo.get_clinic()
        setting = clinic.setting or HealthcareSetting()
        body = {"name": clinic.name, "time_zone": clinic.time_zone, **vars(setting)}
        return json_response(dumper(s.HealthcareSettingSchema).dump(body))

    return read(run)


@bp.post("/episodes/<episode_id>/view-link")
def create_episode_view_link(episode_id: str) -> Response:
    from service.entrypoints import outcome_schemas as os_
    from service.entrypoints import views
    from service.entrypoints.http import principal

    # Through write(): its audit commits with the answer, and an Idempotency-Key replays the same link.
    def run(uow: UnitOfWork, ctx: Context) -> Response:
        uow.repo.get_episode(episode_id)  # 404 for an unknown episode or another clinic's
        link = views.episode_link(episode_id, principal(), ctx.now)
        return json_response(dumper(os_.ViewLinkSchema).dump(link))


@bp.put("/clinic/healthcare-setting")
def set_healthcare_setting() -> Response:
    data = load(s.HealthcareSettingSchema())
    time_zone = data.pop("time_zone")

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        clinic = services.set_healthcare_setting(uow, ctx, time_zone=time_zone, setting=HealthcareSetting(**data))
        body = {"name": clinic.name, "time_zone": clinic.time_zone, **vars(clinic.setting or HealthcareSetting())}
        return json_response(dumper(s.HealthcareSettingSchema).dump(body))

    return write(run)


@bp.post("/outcomes/view-link")
def create_outcomes_view_link() -> Response:
    from service.entrypoints import outcome_schemas as os_
    from service.entrypoints import views
    from service.entrypoints.http import principal

    args = query_args()

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        link = views.outcomes_link(args["from_"], args["to"], principal(), ctx.now)
        return json_response(dumper(os_.ViewLinkSchema).dump(link))


@bp.get("/episodes/<episode_id>/sessions/<session_id>/rems-form")
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


@bp.post("/episodes/<episode_id>/sessions/<session_id>/rems-form/submission")
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


@bp.get("/rems-forms")
def list_rems_forms() -> Response:
    """The clinic's REMS forms; ``status=due`` lists what must still be sent (unsent, or changed since sent)."""
    status = query_args()["status"]

    def run(uow: UnitOfWork) -> Response:
        now = datetime.now(UTC)
        forms = services.list_rems_forms(uow, now=now, status=status)
        return json_response({"items": [_rems_form_body(f, now) for f in forms]})

    return read(run)


@bp.post("/rems-forms/deadline-review")
def review_rems_deadlines() -> Response:
    """Brings the rems-form-due/-overdue safety flags up to today's date; run daily by a scheduler."""

    def run(uow: UnitOfWork, ctx: Context) -> Response:
        return json_response({"flags_changed": services.review_rems_deadlines(uow, ctx)})

    return write(run)

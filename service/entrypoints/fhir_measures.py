"""The measures under /fhir: ``GET /fhir/Measure``, ``GET /fhir/Measure/{id}`` and R4's
``GET /fhir/Measure/{id}/$evaluate-measure?periodStart=&periodEnd=[&subject=Patient/{id}]``.

A blueprint nested in the /fhir blueprint (endpoints ``fhir.measures.*``): /fhir content negotiation, and errors as
OperationOutcome; each route declares its scopes where it is defined (``service.entrypoints.routes``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from flask import Blueprint, Response, g, request

from mappings.bundle import searchset_bundle
from mappings.resources.measure import to_served_measure
from mappings.resources.measure_report import patient_fhir_id, to_measure_report
from service.domain.errors import NotFound
from service.domain.measures import MEASURES
from service.entrypoints import fhir_api
from service.entrypoints.http import state
from service.entrypoints.routes import Route, route
from service.service_layer import outcomes

bp = Blueprint("measures", __name__, url_prefix="/Measure")

_SEARCH_PARAMS = {"_id", "url", "status", "name", "_format", "_count"}  # six Measures: one page
_EVALUATE_PARAMS = {"periodStart", "periodEnd", "subject", "reportType", "measure", "_format"}


def _cut_point() -> int:
    return state().settings.safety.pcl5_cut_point


def _served(measure_id: str) -> dict:
    return to_served_measure(MEASURES[measure_id], pcl5_cut_point=_cut_point())


def _unknown(allowed: set[str]) -> None:
    for name in request.args:
        if name not in allowed:
            raise fhir_api._problem(
                400, "Invalid search", name, f"parameter {name!r} is not supported here", "not-supported"
            )


@route(
    bp,
    "",
    "GET",
    Route(
        "FHIR search of the Measures kapfhir publishes",
        access=("s", ("Measure",)),
        operation=fhir_api.openapi_operation,
    ),
    endpoint="search",
    prefix="fhir",
)
def search_measures() -> Response:
    _unknown(_SEARCH_PARAMS)
    wanted = {k: request.args.getlist(k) for k in ("_id", "url", "status", "name") if k in request.args}

    def matches(resource: dict) -> bool:
        fields = {"_id": resource["id"], "url": resource["url"], "status": resource["status"], "name": resource["name"]}
        return all(fields[k] in ",".join(v).split(",") for k, v in wanted.items())

    def run(uow: Any) -> Response:
        found = [r for r in (_served(mid) for mid in MEASURES) if matches(r)]
        base = request.url_root.rstrip("/") + "/fhir"
        g.audit_entities = [{"type": "Measure", "id": r["id"]} for r in found]
        return fhir_api.fhir_response(searchset_bundle(found, request.url, base))

    return fhir_api._read(run)


def _measure_or_404(rid: str) -> None:
    if rid not in MEASURES:
        raise fhir_api._problem(404, "Not found", "id", f"no Measure/{rid}", "not-found")


@route(
    bp,
    "/<rid>",
    "GET",
    Route("FHIR read of a Measure", access=("r", ("Measure",)), operation=fhir_api.openapi_operation),
    endpoint="read",
    prefix="fhir",
)
def read_measure(rid: str) -> Response:
    _measure_or_404(rid)
    g.audit_entities = [{"type": "Measure", "id": rid}]
    return fhir_api._read(lambda uow: fhir_api.fhir_response(_served(rid), 200, {"ETag": 'W/"1"'}))


def _day(name: str) -> date:
    value = request.args.get(name)
    if not value:
        raise fhir_api._problem(400, "Invalid parameter", name, f"{name} is required (a date, YYYY-MM-DD)", "required")
    try:
        # R4 declares both as date; a dateTime's date part is taken (kapfhir counts whole days).
        return date.fromisoformat(value[:10])
    except ValueError:
        raise fhir_api._problem(400, "Invalid parameter", name, f"{name} {value!r} is not a date", "invalid") from None


def _subject() -> str | None:
    subject = request.args.get("subject")
    if subject is None:
        return None
    fhir_id = subject.removeprefix("Patient/")
    if "/" in fhir_id or not fhir_id:
        raise fhir_api._problem(400, "Invalid parameter", "subject", "subject is Patient/{id}", "invalid")
    return fhir_id


# the figures derive from the scores: reading them needs what reading the scores needs
@route(
    bp,
    "/<rid>/$evaluate-measure",
    "GET",
    Route(
        "FHIR $evaluate-measure: a summary or individual MeasureReport",
        access=("r", ("MeasureReport", "Observation")),
        operation=fhir_api.openapi_operation,
    ),
    endpoint="evaluate",
    prefix="fhir",
)
def evaluate_measure(rid: str) -> Response:
    _measure_or_404(rid)
    _unknown(_EVALUATE_PARAMS)
    start, end = _day("periodStart"), _day("periodEnd")
    if end < start:
        raise fhir_api._problem(400, "Invalid parameter", "periodEnd", "periodEnd is before periodStart", "invalid")
    subject = _subject()
    report_type = request.args.get("reportType", "subject" if subject else "population")
    if report_type not in ("subject", "population") or (report_type == "subject") != (subject is not None):
        raise fhir_api._problem(
            400,
            "Invalid parameter",
            "reportType",
            "reportType is 'subject' with a subject, else 'population'",
            "invalid",
        )

    def run(uow: Any) -> Response:
        patient_id = None
        if subject is not None:
            clinic = uow.repo.get_clinic()
            patient_id = next((p for p in outcomes.patient_ids(uow) if patient_fhir_id(clinic, p) == subject), None)
            if patient_id is None:
                raise NotFound(f"No Patient/{subject} with episodes at this clinic.")
        evaluation = outcomes.evaluate_measure(uow, rid, start, end, pcl5_cut_point=_cut_point(), patient_id=patient_id)
        report = to_measure_report(
            evaluation.result, evaluation.clinic, generated_at=datetime.now(UTC), patient_id=patient_id
        )
        g.audit_entities = [{"type": "Measure", "id": rid}] + ([{"type": "Patient", "id": subject}] if subject else [])
        return fhir_api.fhir_response(report)

    return fhir_api._read(run)


# Nested in /fhir once, when this module is first imported (create_app imports it before registering /fhir).
fhir_api.bp.register_blueprint(bp)

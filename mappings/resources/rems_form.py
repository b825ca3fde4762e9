"""The Spravato REMS Patient Monitoring Form as FHIR: the kapfhir Questionnaire, a QuestionnaireResponse per
outpatient esketamine session (derived from the record by service.domain.rems, never typed in), and a Task per
form: its due date and whether, how, when and by whom it was sent.

The Questionnaire follows the form's sections and wording (sources in service/domain/rems.py). linkIds are the
domain's field keys; groups are the form's sections. The Task's ``restriction.period.end`` is the due date (7
calendar days in the clinic's time zone); a form changed after it was sent goes back to ``requested`` with business
status ``amended``.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import Mapped, MappingContext
from mappings.resources._common import ReverseContext, kap_profile, start
from service.domain import rems
from service.domain.model import RemsSubmission
from service.domain.vocabulary import RemsChannel

FORM_KIND = "rems-form"
TASK_KIND = "rems-form-submission"

_ITEM_TYPE = {
    "text": "string",
    "date": "date",
    "integer": "integer",
    "decimal": "decimal",
    "yes-no": "boolean",
    "choice": "choice",
}
_SEX = {"male": "Male", "female": "Female", "other": "Other"}


def _option(field: rems.Field, value: str) -> dict:
    if field.key == "patient.sex":
        return t.coding(t.ADMINISTRATIVE_GENDER, value, _SEX[value])
    return t.REMS_DOSE_OPTION[value]


def _enable_when(field: rems.Field) -> list[dict]:
    assert field.enabled_when is not None
    key, value = field.enabled_when
    answer = {"answerBoolean": value} if isinstance(value, bool) else {"answerCoding": _option(rems.FIELDS[key], value)}
    return [{"question": key, "operator": "=", **answer}]


def _question(field: rems.Field) -> dict:
    item: dict[str, Any] = {"linkId": field.key, "text": field.text, "type": _ITEM_TYPE[field.kind]}
    if field.enabled_when is not None:
        item["enableWhen"] = _enable_when(field)
    item["required"] = field.required
    if field.options:
        item["answerOption"] = [{"valueCoding": _option(field, o)} for o in field.options]
    return item


def questionnaire() -> dict:
    """The kapfhir-published Questionnaire of the form (a conformance resource, see mappings/conformance/build.py)."""
    url = t.REMS_QUESTIONNAIRE_URL
    return {
        "resourceType": "Questionnaire",
        "id": url.rsplit("/", 1)[-1],
        "url": url,
        "version": t.CONFORMANCE_VERSION,
        "name": "SpravatoRemsPatientMonitoringForm",
        "title": "SPRAVATO REMS Patient Monitoring Form - Outpatient Use Only",
        "status": "draft",
        "date": "2026-11-29",
        "publisher": "kapfhir",
        "description": (
            "The Spravato (esketamine) REMS Patient Monitoring Form, to be completed after every outpatient "
            "treatment session and submitted within 7 days (portal or fax). Fields and wording from the form "
            "(Janssen, 11/2021; transcription at https://manualspro.net/445029-spravato-patient-monitoring-form-"
            "instructions), the program's form overview (https://jnjmedicalconnect.com/products/spravato/video-"
            "spravato-rems-patient-monitoring-form-overview: first treatment, opioids, respiratory depression) and "
            "the FDA REMS page (https://www.accessdata.fda.gov/scripts/cder/rems/index.cfm?event=IndvRemsDetails."
            "page&REMS=386). The pulse-oximetry, sedation, dissociation and respiratory-depression items of the "
            "current form could not be read verbatim: their wording here is kapfhir's. kapfhir fills it from the "
            "session record; it is never typed in."
        ),
        "subjectType": ["Patient"],
        "item": [
            {
                "linkId": section.key,
                "text": section.title,
                "type": "group",
                "required": True,
                "item": [_question(f) for f in section.fields],
            }
            for section in rems.SECTIONS
        ],
    }


def _answer(field: rems.Field, value: Any) -> dict:
    if field.kind == "yes-no":
        return {"valueBoolean": bool(value)}
    if field.kind == "date":
        return {"valueDate": dt.day(value) if isinstance(value, date) else str(value)}
    if field.kind == "integer":
        return {"valueInteger": int(value)}
    if field.kind == "decimal":
        return {"valueDecimal": float(value)}
    if field.kind == "choice":
        return {"valueCoding": _option(field, value)}
    return {"valueString": str(value)}


def response_status(form: rems.RemsForm) -> str:
    if form.status == rems.IN_PROGRESS:
        return "in-progress"
    return "amended" if form.submission_state == rems.AMENDED else "completed"


def to_questionnaire_response(ctx: MappingContext, form: rems.RemsForm) -> Mapped:
    resource = start(ctx, "QuestionnaireResponse", FORM_KIND, form.session_id, [kap_profile("questionnaireresponse")])
    groups = []
    for section in rems.SECTIONS:
        answered = [
            {"linkId": f.key, "text": f.text, "answer": [_answer(f, form.answers[f.key])]}
            for f in section.fields
            if f.key in form.answers
        ]
        if answered:
            groups.append({"linkId": section.key, "text": section.title, "item": answered})
    resource |= {
        "questionnaire": t.REMS_QUESTIONNAIRE_URL,
        "status": response_status(form),
        "subject": ctx.patient(),
        "encounter": ctx.record(form.session_id, "Encounter", "session"),
    }
    if form.latest_change is not None:
        resource["authored"] = dt.instant(form.latest_change)
    if form.monitoring_practitioner_id is not None:
        resource["author"] = ctx.practitioner(form.monitoring_practitioner_id)
    resource["item"] = groups
    # Derived: it changes whenever the session's records do, so it is sent as a conditional update every time.
    return Mapped(resource, FORM_KIND, form.session_id, always_update=True)


def to_task(ctx: MappingContext, form: rems.RemsForm) -> Mapped:
    ledger = [_submission_extension(s) for s in form.submissions]
    resource = start(ctx, "Task", TASK_KIND, form.session_id, [kap_profile("task")], extensions=ledger)
    state = form.submission_state
    sent = form.submission
    resource |= {
        "status": "completed" if state == rems.SUBMITTED else "requested",
        "businessStatus": dt.codeable_concept(t.REMS_BUSINESS_STATUS[state]),
        "intent": "order",
        "priority": "routine",
        "code": dt.codeable_concept(t.REMS_TASK),
        "focus": {"reference": ctx.full_url("QuestionnaireResponse", FORM_KIND, form.session_id)},
        "for": ctx.patient(),
        "encounter": ctx.record(form.session_id, "Encounter", "session"),
        "authoredOn": dt.day(form.treatment_date),
        "requester": ctx.organization(),
        # The form is due by the end of this calendar day in the clinic's time zone.
        "restriction": {"period": {"end": dt.day(form.due_date)}},
    }
    if sent is not None:
        resource["executionPeriod"] = {"end": dt.instant(sent.submitted_at)}
        resource["lastModified"] = dt.instant(sent.recorded_at)
        resource["owner"] = ctx.practitioner(sent.submitted_by)
        resource["input"] = [
            {
                "type": dt.codeable_concept(t.REMS_CHANNEL_TYPE),
                "valueCodeableConcept": dt.codeable_concept(t.REMS_CHANNEL[str(sent.channel)]),
            }
        ]
        output = [
            {
                "type": dt.codeable_concept(t.REMS_SENT_FORM),
                "valueReference": {"reference": ctx.full_url("QuestionnaireResponse", FORM_KIND, form.session_id)},
            }
        ]
        if sent.confirmation_number:
            output.insert(
                0, {"type": dt.codeable_concept(t.REMS_CONFIRMATION), "valueString": sent.confirmation_number}
            )
        resource["output"] = output
    return Mapped(resource, TASK_KIND, form.session_id, always_update=True)


def _submission_extension(sent: RemsSubmission) -> dict:
    parts = [
        dt.extension("id", valueString=sent.id),
        dt.extension("channel", valueCode=str(sent.channel)),
        dt.extension("submittedAt", valueDateTime=dt.instant(sent.submitted_at)),
    ]
    if sent.confirmation_number:
        parts.append(dt.extension("confirmationNumber", valueString=sent.confirmation_number))
    parts += [
        dt.extension("submittedBy", valueString=sent.submitted_by),
        dt.extension("formDigest", valueString=sent.form_digest),
        dt.extension("recorded", valueDateTime=dt.instant(sent.recorded_at)),
        dt.extension("recordedBy", valueString=sent.recorded_by),
    ]
    return dt.complex_extension(t.EXT_REMS_SUBMISSION, parts)


def from_task(rctx: ReverseContext, resource: dict) -> list[RemsSubmission]:
    """Every sending of the form, from the Task's rems-form-submission extensions."""
    session_id = rctx.own_id(resource)
    out = []
    for ext in dt.find_extensions(resource, t.EXT_REMS_SUBMISSION):
        parts = {p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in ext["extension"]}
        out.append(
            RemsSubmission(
                id=parts["id"],
                session_id=session_id,
                channel=RemsChannel(parts["channel"]),
                submitted_at=dt.parse_datetime(parts["submittedAt"]),
                confirmation_number=parts.get("confirmationNumber"),
                submitted_by=parts["submittedBy"],
                form_digest=parts["formDigest"],
                recorded_at=dt.parse_datetime(parts["recorded"]),
                recorded_by=parts["recordedBy"],
            )
        )
    return out

"""QuestionnaireResponse per administration of PHQ-9, GAD-7, PCL-5 or the C-SSRS screener.

linkIds are ``/<item code>`` as in the US Core PHQ-9 example; ordinal answers carry ``ordinalValue``; C-SSRS
answers are booleans. The totals, bands and risk level are Observations (observation.py) derived from it.
No US Core claim: us-core-questionnaireresponse derives from SDC sdc-questionnaireresponse, not available offline,
so fhircraft cannot check it.
"""

from __future__ import annotations

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import PRIMARY, Mapped, MappingContext
from mappings.resources._common import (
    MappingRefusedError,
    RecordMeta,
    ReverseContext,
    kap_profile,
    read_record_meta,
    record_fields,
    start_record,
)
from service.domain.model import OutcomeMeasure
from service.domain.vocabulary import Instrument, SuicideRiskLevel

_, KIND = PRIMARY[OutcomeMeasure]
_INSTRUMENT_OF_URL = {url: i for i, url in t.QUESTIONNAIRE_URL.items()}


def _ordinal(answer: dict, value: int) -> dict:
    return {**answer, "extension": [dt.extension(t.EXT_ORDINAL_VALUE, valueDecimal=value)]}


def _item(code: str, answer: dict) -> dict:
    return {"linkId": f"/{code}", "answer": [answer]}


def to_questionnaire_response(ctx: MappingContext, measure: OutcomeMeasure) -> Mapped:
    resource = start_record(ctx, "QuestionnaireResponse", KIND, measure, [kap_profile("questionnaireresponse")])
    codes = t.ITEM_CODES[measure.instrument]
    if measure.instrument is Instrument.CSSRS_SCREENER:
        items = [_item(code, {"valueBoolean": bool(v)}) for code, v in zip(codes, measure.items, strict=True)]
        if measure.behaviour_within_3_months is not None:
            items.append(_item(t.CSSRS_BEHAVIOUR_3_MONTHS, {"valueBoolean": measure.behaviour_within_3_months}))
    else:
        answers = t.ANSWERS[measure.instrument]
        items = [
            _item(code, {"valueCoding": _ordinal(answers[v], v)}) for code, v in zip(codes, measure.items, strict=True)
        ]
    if measure.difficulty is not None:
        items.append(_item(t.PHQ9_DIFFICULTY, {"valueCoding": t.DIFFICULTY_ANSWERS[measure.difficulty]}))
    if measure.entered_in_error:
        status = "entered-in-error"
    else:
        status = "amended" if measure.version > 1 else "completed"
    resource |= {
        "questionnaire": t.QUESTIONNAIRE_URL[measure.instrument],
        "status": status,
        "subject": ctx.patient(),
        "authored": dt.instant(measure.administered_at),
        "item": items,
    }
    if measure.session_id is not None:
        resource["encounter"] = ctx.record(measure.session_id, "Encounter", "session")
    return Mapped(resource, KIND, measure.id, measure.version)


def _instrument(resource: dict, answers: dict[str, dict]) -> Instrument:
    known = _INSTRUMENT_OF_URL.get(resource.get("questionnaire", "").split("|")[0])
    if known is not None:
        return known
    for instrument, codes in t.ITEM_CODES.items():
        if all(code in answers for code in codes):
            return instrument
    raise MappingRefusedError(
        "QuestionnaireResponse.questionnaire",
        "not a kapfhir Questionnaire, and the items are not those of PHQ-9, GAD-7, PCL-5 or C-SSRS",
    )


def _answer_value(instrument: Instrument, answer: dict, expression: str) -> int:
    if instrument is Instrument.CSSRS_SCREENER:
        if "valueBoolean" not in answer:
            raise MappingRefusedError(f"{expression}.valueBoolean", "C-SSRS answers are yes/no")
        return int(answer["valueBoolean"])
    coding = answer.get("valueCoding", {})
    for value, known in enumerate(t.ANSWERS[instrument]):
        if known["code"] == coding.get("code") and known["system"] == coding.get("system"):
            return value
    raise MappingRefusedError(
        f"{expression}.valueCoding", f"answer {coding.get('code')!r} is not in the {instrument} list"
    )


def from_questionnaire_response(rctx: ReverseContext, resource: dict, scores: list[dict] = ()) -> OutcomeMeasure:
    """Our QuestionnaireResponse with its score Observations, or an EHR's with the same item codes."""
    answers = {item["linkId"].lstrip("/"): item.get("answer", [{}])[0] for item in resource.get("item", ())}
    instrument = _instrument(resource, answers)
    items = []
    for code in t.ITEM_CODES[instrument]:
        if code not in answers:
            raise MappingRefusedError(f"QuestionnaireResponse.item.where(linkId='/{code}')", "item not answered")
        items.append(
            _answer_value(instrument, answers[code], f"QuestionnaireResponse.item.where(linkId='/{code}').answer")
        )
    difficulty = None
    if t.PHQ9_DIFFICULTY in answers:
        codes = [a["code"] for a in t.DIFFICULTY_ANSWERS]
        difficulty = codes.index(answers[t.PHQ9_DIFFICULTY]["valueCoding"]["code"])
    behaviour = answers.get(t.CSSRS_BEHAVIOUR_3_MONTHS, {}).get("valueBoolean")
    total = band = risk = None
    for score in scores:
        if "valueQuantity" in score:
            total = score["valueQuantity"]["value"]
            interpretation = score.get("interpretation")
            band = dt.code_in(interpretation[0], t.CS_SEVERITY_BAND) if interpretation else None
        elif "valueCodeableConcept" in score:
            risk = SuicideRiskLevel(dt.code_in(score["valueCodeableConcept"], t.CS_SUICIDE_RISK))
    eie = resource.get("status") == "entered-in-error"
    meta = read_record_meta(resource, eie) if rctx.kind_of(resource) else RecordMeta(entered_in_error=eie)
    return OutcomeMeasure(
        id=rctx.own_id(resource),
        **record_fields(meta),
        instrument=instrument,
        administered_at=dt.parse_datetime(resource["authored"]),
        session_id=rctx.local_id(resource.get("encounter")),
        items=items,
        difficulty=difficulty,
        behaviour_within_3_months=behaviour,
        total=int(total) if total is not None else None,
        severity_band=band,
        risk_level=risk,
    )

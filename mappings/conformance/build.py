"""Builds the kapfhir conformance resources from mappings.terminology (run as a module to rewrite the files)."""

from __future__ import annotations

import json
from pathlib import Path

from mappings import terminology as t
from mappings.resources import rems_form
from service.domain import scales
from service.domain.rules import RULE_IDS
from service.domain.vocabulary import Instrument

HERE = Path(__file__).resolve().parent
STATUS, DATE, PUBLISHER = "draft", "2026-11-01", "kapfhir"

RESOURCE_PROFILES = {
    "kap-organization": "Organization",
    "kap-practitioner": "Practitioner",
    "kap-patient": "Patient",
    "kap-condition": "Condition",
    "kap-episodeofcare": "EpisodeOfCare",
    "kap-careplan": "CarePlan",
    "kap-encounter": "Encounter",
    "kap-procedure": "Procedure",
    "kap-consent": "Consent",
    "kap-medicationrequest": "MedicationRequest",
    "kap-medicationadministration": "MedicationAdministration",
    "kap-medicationstatement": "MedicationStatement",
    "kap-observation-reading": "Observation",
    "kap-observation-body-weight": "Observation",
    "kap-observation-score": "Observation",
    "kap-questionnaireresponse": "QuestionnaireResponse",
    "kap-detectedissue": "DetectedIssue",
    "kap-flag": "Flag",
    "kap-adverseevent": "AdverseEvent",
    "kap-provenance": "Provenance",
    "kap-task": "Task",
}
SINGLE_IDENTIFIER = {"QuestionnaireResponse", "AdverseEvent"}

# url, title, context, sub-extensions (name, type) or a value type
EXTENSIONS = {
    t.EXT_OFF_LABEL: (
        "Off-label use (modelled on IHE MPD ihe-ext-offLabel and HL7 BE BeExtOffLabel)",
        ["MedicationRequest", "MedicationAdministration", "MedicationStatement"],
        [("isOffLabelUse", "boolean"), ("reason", "CodeableConcept")],
    ),
    t.EXT_WASTE: (
        "Controlled-substance accounting: drawn, administered and wasted amounts, waste witness",
        ["MedicationAdministration"],
        [("drawn", "Quantity"), ("administered", "Quantity"), ("wasted", "Quantity"), ("wasteWitness", "Reference")],
    ),
    t.EXT_RECORD: (
        "kapfhir record bookkeeping: domain version, first-recorded time, entered-in-error",
        ["Resource"],
        [
            ("version", "integer"),
            ("recorded", "dateTime"),
            ("enteredInError", "boolean"),
            ("chartBodyWeight", "boolean"),
        ],
    ),
    t.EXT_CARE_TEAM_MEMBER: (
        "KAP care-team member and role",
        ["EpisodeOfCare"],
        [("practitioner", "Reference"), ("role", "Coding")],
    ),
    t.EXT_PHASE_TRANSITION: (
        "KAP phase transition",
        ["CarePlan"],
        [("from", "Coding"), ("to", "Coding"), ("at", "dateTime"), ("actor", "string"), ("reason", "string")],
    ),
    t.EXT_INDICATION_FLAGS: (
        "Indication qualifiers (treatment-resistant, acute suicidal ideation)",
        ["Condition"],
        [("treatmentResistant", "boolean"), ("acuteSuicidalIdeation", "boolean")],
    ),
    t.EXT_CONSENT_DETAIL: (
        "KAP consent detail: off-label acknowledgement, routes, withdrawal",
        ["Consent"],
        [
            ("offLabelUseAcknowledged", "boolean"),
            ("route", "Coding"),
            ("withdrawnAt", "dateTime"),
            ("withdrawalReason", "string"),
        ],
    ),
    t.EXT_PHASE: ("Current KAP phase", ["CarePlan"], "Coding"),
    t.EXT_DISCONTINUATION_REASON: ("Why the KAP course was discontinued", ["EpisodeOfCare"], "string"),
    t.EXT_PRACTITIONER_ROLE: ("KAP role of a practitioner", ["Practitioner"], "Coding"),
    t.EXT_DOSING_SETTING: ("Dosing setting (clinic or home)", ["Encounter"], "Coding"),
    t.EXT_CHECK_IN: ("Telehealth check-in time of an at-home dosing session", ["Encounter"], "dateTime"),
    t.EXT_DISCHARGE: ("Discharge time after dosing (REMS monitoring end)", ["Encounter"], "dateTime"),
    t.EXT_OVERRIDE_REASON: ("Why a dose above the policy maximum was given", ["MedicationAdministration"], "string"),
    t.EXT_READING_TIMING: ("Timing of a monitoring reading relative to the dose", ["Observation"], "Coding"),
    t.EXT_TIME_ZONE: ("IANA time zone of the clinic (REMS form deadlines count in it)", ["Organization"], "code"),
    t.EXT_REMS_SUBMISSION: (
        "One sending of a Spravato REMS Patient Monitoring Form (every sending; Task.input/output show the latest)",
        ["Task"],
        [
            ("id", "string"),
            ("channel", "code"),
            ("submittedAt", "dateTime"),
            ("confirmationNumber", "string"),
            ("submittedBy", "string"),
            ("formDigest", "string"),
            ("recorded", "dateTime"),
            ("recordedBy", "string"),
        ],
    ),
    t.EXT_RESOLVED_AT: ("When the side effect or safety flag resolved", ["AdverseEvent", "DetectedIssue"], "dateTime"),
}


def _sd_header(url: str, name: str, kind: str, base: str, type_: str) -> dict:
    return {
        "resourceType": "StructureDefinition",
        "id": url.rsplit("/", 1)[-1],
        "url": url,
        "version": t.CONFORMANCE_VERSION,
        "name": name,
        "status": STATUS,
        "date": DATE,
        "publisher": PUBLISHER,
        "fhirVersion": "4.0.1",
        "kind": kind,
        "abstract": False,
        "type": type_,
        "baseDefinition": base,
        "derivation": "constraint",
    }


def profile(name: str, type_: str) -> dict:
    elements = [
        {"id": f"{type_}.meta.security", "path": f"{type_}.meta.security", "min": 2, "mustSupport": True},
        {"id": f"{type_}.meta.profile", "path": f"{type_}.meta.profile", "min": 1},
    ]
    if type_ != "Provenance":
        max_ = "1" if type_ in SINGLE_IDENTIFIER else "*"
        elements += [
            {"id": f"{type_}.identifier", "path": f"{type_}.identifier", "min": 1, "max": max_, "mustSupport": True},
            {"id": f"{type_}.identifier.system", "path": f"{type_}.identifier.system", "min": 1},
            {"id": f"{type_}.identifier.value", "path": f"{type_}.identifier.value", "min": 1},
        ]
    if type_ == "Consent":
        elements.append({"id": "Consent.policy", "path": "Consent.policy", "min": 1})
    if type_ == "CarePlan":
        elements += [
            {"id": "CarePlan.text", "path": "CarePlan.text", "min": 1},
            {"id": "CarePlan.intent", "path": "CarePlan.intent", "fixedCode": "plan"},
        ]
    sd = _sd_header(
        t.profile(name), name.replace("-", " ").title().replace(" ", ""), "resource", f"{t.FHIR_SD}/{type_}", type_
    )
    sd["differential"] = {"element": [{"id": type_, "path": type_}, *elements]}
    return sd


def extension(url: str, title: str, contexts: list[str], shape: list | str) -> dict:
    name = url.rsplit("/", 1)[-1]
    sd = _sd_header(
        url, name.replace("-", " ").title().replace(" ", ""), "complex-type", f"{t.FHIR_SD}/Extension", "Extension"
    )
    sd["title"] = title
    sd["context"] = [{"type": "element", "expression": c} for c in contexts]
    elements = [{"id": "Extension", "path": "Extension", "short": title}]
    if isinstance(shape, str):
        elements += [
            {"id": "Extension.extension", "path": "Extension.extension", "max": "0"},
            {"id": "Extension.url", "path": "Extension.url", "fixedUri": url},
            {"id": "Extension.value[x]", "path": "Extension.value[x]", "min": 1, "type": [{"code": shape}]},
        ]
    else:
        for sub, type_ in shape:
            sid = f"Extension.extension:{sub}"
            elements += [
                {"id": sid, "path": "Extension.extension", "sliceName": sub, "min": 0, "max": "*"},
                {"id": f"{sid}.url", "path": "Extension.extension.url", "fixedUri": sub},
                {"id": f"{sid}.value[x]", "path": "Extension.extension.value[x]", "type": [{"code": type_}]},
            ]
        elements += [
            {"id": "Extension.url", "path": "Extension.url", "fixedUri": url},
            {"id": "Extension.value[x]", "path": "Extension.value[x]", "max": "0"},
        ]
    if url == t.EXT_OFF_LABEL:
        elements[0]["constraint"] = [
            {
                "key": "kap-off-label-1",
                "severity": "warning",
                "human": "An off-label use should give a reason",
                "expression": "extension.where(url = 'isOffLabelUse' and value = true).empty() "
                "or extension.where(url = 'reason').exists()",
            }
        ]
    sd["differential"] = {"element": elements}
    return sd


def code_system(url: str, title: str, concepts: list[tuple[str, str]]) -> dict:
    return {
        "resourceType": "CodeSystem",
        "id": url.rsplit("/", 1)[-1],
        "url": url,
        "version": t.CONFORMANCE_VERSION,
        "name": url.rsplit("/", 1)[-1].replace("-", ""),
        "title": title,
        "status": STATUS,
        "date": DATE,
        "publisher": PUBLISHER,
        "caseSensitive": True,
        "content": "complete",
        "concept": [{"code": c, "display": d} for c, d in concepts],
    }


def value_set(cs: dict) -> dict:
    url = f"{t.VS}/{cs['id']}"
    return {
        "resourceType": "ValueSet",
        "id": cs["id"],
        "url": url,
        "version": t.CONFORMANCE_VERSION,
        "name": cs["name"],
        "status": STATUS,
        "date": DATE,
        "publisher": PUBLISHER,
        "compose": {"include": [{"system": cs["url"]}]},
    }


def _concepts(table: dict) -> list[tuple[str, str]]:
    return [(c["code"], c.get("display") or c["code"].replace("-", " ")) for c in table.values()]


def code_systems() -> list[dict]:
    bands = sorted(
        {b for _, b in (*scales.PHQ9_BANDS, *scales.GAD7_BANDS)} | {"provisional-ptsd", "below-provisional-cut-point"}
    )
    items = [(c, f"PCL-5 item {n}") for n, c in enumerate(t.PCL5_ITEMS, 1)]
    items.append((t.CSSRS_BEHAVIOUR_3_MONTHS, "C-SSRS screener: suicidal behaviour within the past 3 months"))
    return [
        code_system(t.CS_KAP_PHASE, "KAP phases", _concepts(t.PHASE)),
        code_system(t.CS_SESSION_TYPE, "KAP session types", _concepts(t.SESSION_TYPE)),
        code_system(t.CS_INDICATION_KIND, "KAP indication kinds", _concepts(t.INDICATION_KIND)),
        code_system(
            t.CS_MEDICATION, "KAP medications", [(c[0]["code"], c[0]["display"]) for c in t.MEDICATION.values()]
        ),
        code_system(t.CS_SIDE_EFFECT, "KAP side effects", _concepts(t.SIDE_EFFECT)),
        code_system(t.CS_CONCOMITANT_CLASS, "REMS concomitant medication classes", _concepts(t.CONCOMITANT_CLASS)),
        code_system(t.CS_READING_TIMING, "Monitoring reading timing", _concepts(t.READING_TIMING)),
        code_system(
            t.CS_OBSERVATION,
            "kapfhir observations (CADSS, MOAA/S: no LOINC code verified)",
            [(c["code"], c["display"]) for c in (t.CADSS_TOTAL, t.MOAAS_SCORE, t.READING_WITHOUT_VALUES)],
        ),
        code_system(t.CS_SAFETY_RULE, "KAP safety rules", [(r, r.replace("-", " ")) for r in RULE_IDS]),
        code_system(
            t.CS_FLAG_ACTION, "Safety flag actions", [(t.FLAG_ACKNOWLEDGED["code"], t.FLAG_ACKNOWLEDGED["display"])]
        ),
        code_system(t.CS_SEVERITY_BAND, "Outcome scale severity bands", [(b, b.replace("-", " ")) for b in bands]),
        code_system(t.CS_SUICIDE_RISK, "C-SSRS screener risk levels", _concepts(t.SUICIDE_RISK)),
        code_system(t.CS_PRACTITIONER_ROLE, "KAP practitioner roles", _concepts(t.PRACTITIONER_ROLE)),
        code_system(t.CS_DOSING_SETTING, "Dosing settings", _concepts(t.DOSING_SETTING)),
        code_system(
            t.CS_CONSENT_SCOPE, "KAP consent provisions", [(t.KAP_PROVISION["code"], t.KAP_PROVISION["display"])]
        ),
        code_system(
            t.CS_REMS,
            "Spravato REMS Patient Monitoring Form workflow",
            [(c["code"], c["display"]) for c in t.REMS_CONCEPTS],
        ),
        code_system(t.CS_QUESTIONNAIRE_ITEM, "Questionnaire items without a verified LOINC code", items),
        code_system(
            t.CS_ANSWER,
            "Answer codes of GAD-7 and PCL-5 (LOINC answer lists not verified)",
            [(a["code"], a["display"]) for a in (*t.GAD7_ANSWERS, *t.PCL5_ANSWERS)],
        ),
    ]


def questionnaire(instrument: Instrument) -> dict:
    url = t.QUESTIONNAIRE_URL[instrument]
    system = t.ITEM_SYSTEM[instrument]
    items = []
    for n, code in enumerate(t.ITEM_CODES[instrument], 1):
        item = {"linkId": f"/{code}", "code": [{"system": system, "code": code}], "text": f"Item {n}", "required": True}
        if instrument is Instrument.CSSRS_SCREENER:
            item["type"] = "boolean"
        else:
            item["type"] = "choice"
            item["answerOption"] = [
                {"valueCoding": {**a, "extension": [{"url": t.EXT_ORDINAL_VALUE, "valueDecimal": v}]}}
                for v, a in enumerate(t.ANSWERS[instrument])
            ]
        items.append(item)
    if instrument is Instrument.PHQ9:
        items.append(
            {
                "linkId": f"/{t.PHQ9_DIFFICULTY}",
                "code": [{"system": t.LOINC, "code": t.PHQ9_DIFFICULTY}],
                "text": "Difficulty",
                "type": "choice",
                "answerOption": [{"valueCoding": a} for a in t.DIFFICULTY_ANSWERS],
            }
        )
    if instrument is Instrument.CSSRS_SCREENER:
        items.append(
            {
                "linkId": f"/{t.CSSRS_BEHAVIOUR_3_MONTHS}",
                "type": "boolean",
                "text": "Within 3 months",
                "code": [{"system": t.CS_QUESTIONNAIRE_ITEM, "code": t.CSSRS_BEHAVIOUR_3_MONTHS}],
                "enableWhen": [{"question": f"/{t.CSSRS_ITEMS[5]}", "operator": "=", "answerBoolean": True}],
            }
        )
    return {
        "resourceType": "Questionnaire",
        "id": url.rsplit("/", 1)[-1],
        "url": url,
        "version": t.CONFORMANCE_VERSION,
        "name": instrument.name,
        "title": str(instrument).upper(),
        "status": STATUS,
        "date": DATE,
        "publisher": PUBLISHER,
        "subjectType": ["Patient"],
        "code": [t.PANEL[instrument]],
        "item": items,
    }


def build() -> dict[str, dict]:
    files = {f"StructureDefinition-{n}.json": profile(n, ty) for n, ty in RESOURCE_PROFILES.items()}
    for url, (title, contexts, shape) in EXTENSIONS.items():
        files[f"StructureDefinition-{url.rsplit('/', 1)[-1]}.json"] = extension(url, title, contexts, shape)
    for cs in code_systems():
        files[f"CodeSystem-{cs['id']}.json"] = cs
        files[f"ValueSet-{cs['id']}.json"] = value_set(cs)
    for instrument in Instrument:
        q = questionnaire(instrument)
        files[f"Questionnaire-{q['id']}.json"] = q
    rems_q = rems_form.questionnaire()
    files[f"Questionnaire-{rems_q['id']}.json"] = rems_q
    return files


def render(resource: dict) -> str:
    return json.dumps(resource, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    for name, resource in build().items():
        (HERE / name).write_text(render(resource))

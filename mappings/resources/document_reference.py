"""DocumentReferences kapfhir derives from an episode's transaction Bundle for EHRs that refuse KAP resources.

* **Session summary** (:func:`session_summaries`): one per session Encounter, a US Core clinical note (LOINC
  11506-3 progress note) whose text/plain attachment lists the session's doses, vitals and monitoring, scores,
  side effects and safety flags. Psychotherapy notes are never in the Bundle, so never in a summary.
* **Consent document** (:func:`consent_documents`): one per treatment Consent (LOINC 59284-0), stating what was
  consented to, when and on which form, with a link to the clinic's versioned consent form.

Bundle in, transaction entries out (``POST`` with ``ifNoneExist`` on the business identifier, ``_generated``).
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterator, Mapping
from typing import Any

from mappings import terminology as t
from mappings.context import full_url_of

SUMMARY_KIND = "session-summary"
CONSENT_DOCUMENT_KIND = "consent-document"
_TEXT_PLAIN = "text/plain; charset=utf-8"
_EPOCH = "1970-01-01T00:00:00+00:00"


# --- text of the elements a summary lists ---------------------------------------------------------------------


def _text(concept: Mapping[str, Any] | None) -> str:
    if not concept:
        return ""
    if concept.get("text"):
        return concept["text"]
    codings = concept.get("coding", []) or []
    shown = next((c["display"] for c in codings if c.get("display")), None)
    if shown:
        return shown
    return codings[0].get("code", "") if codings else ""


def _quantity(q: Mapping[str, Any] | None) -> str:
    if not q:
        return ""
    value = q.get("value")
    text = f"{value:g}" if isinstance(value, float) else str(value)
    unit = q.get("unit") or q.get("code") or ""
    return f"{text} {unit}".strip()


_VALUE_KEYS = ("valueQuantity", "valueInteger", "valueString", "valueCodeableConcept", "valueBoolean")


def _value(obs: Mapping[str, Any]) -> str:
    key = next((k for k in _VALUE_KEYS if k in obs), None)
    if key == "valueQuantity":
        return _quantity(obs[key])
    if key == "valueCodeableConcept":
        return _text(obs[key])
    if key is not None:
        return str(obs[key])
    parts = ((_text(comp.get("code")), _value(comp)) for comp in obs.get("component", []) or [])
    return ", ".join(f"{name} {value}" for name, value in parts if value)


def _period(period: Mapping[str, Any] | None) -> str:
    if not period:
        return ""
    start, end = period.get("start", ""), period.get("end", "")
    return f"{start} to {end}" if end else start


def _summary_date(enc: Mapping[str, Any]) -> str:
    period = enc.get("period") or {}
    value = period.get("end") or period.get("start") or _EPOCH
    return value if "T" in value else f"{value}T00:00:00+00:00"


def _refers_to(resource: Mapping[str, Any], url: str, fields: tuple[str, ...]) -> bool:
    return any(isinstance(resource.get(n), dict) and resource[n].get("reference") == url for n in fields)


def _first_url(entries: list[dict], resource_type: str) -> str | None:
    return next((e["fullUrl"] for e in entries if e["resource"]["resourceType"] == resource_type), None)


def summary_text(document_reference: Mapping[str, Any]) -> str:
    """The plain text of a session summary (or consent document) DocumentReference."""
    data = document_reference["content"][0]["attachment"]["data"]
    return base64.b64decode(data).decode("utf-8")


def _plain_text(text: str, title: str) -> dict:
    return {"contentType": _TEXT_PLAIN, "data": base64.b64encode(text.encode("utf-8")).decode("ascii"), "title": title}


# --- the resource and its transaction entry ---------------------------------------------------------------------


def _document_reference(
    *,
    security: list[dict],
    identifier: dict,
    status: str,
    doc_type: dict,
    subject: str | None,
    date: str,
    description: str,
    content: list[dict],
) -> dict:
    return {
        "resourceType": "DocumentReference",
        "meta": {"profile": [t.US_CORE_DOCUMENT_REFERENCE], "security": copy.deepcopy(security)},
        "identifier": [identifier],
        "status": status,
        "docStatus": "final",
        "type": doc_type,
        "category": [{"coding": [dict(t.DOCUMENT_CATEGORY_CLINICAL_NOTE)]}],
        "subject": {"reference": subject},
        "date": date,
        "description": description,
        "content": content,
    }


def _entry(full_url: str, doc: dict, system: str, value: str) -> dict:
    return {
        "fullUrl": full_url,
        "resource": doc,
        "request": {"method": "POST", "url": "DocumentReference", "ifNoneExist": f"identifier={system}|{value}"},
        "_generated": True,
    }


# --- session summaries ------------------------------------------------------------------------------------------


def _session_encounters(entries: list[dict]) -> Iterator[tuple[dict, dict]]:
    """(entry, identifier) of each Encounter that is a KAP session (identifier system ``<base>/session``)."""
    for entry in entries:
        enc = entry["resource"]
        if enc["resourceType"] != "Encounter":
            continue
        ident = next(iter(enc.get("identifier", []) or []), None)
        if ident and str(ident.get("system", "")).endswith("/session"):
            yield entry, ident


def _dose_line(r: Mapping[str, Any]) -> str:
    contained = (c.get("code") for c in r.get("contained", []) if c.get("resourceType") == "Medication")
    med = _text(r.get("medicationCodeableConcept")) or _text(next(contained, None))
    dosage = r.get("dosage") or {}
    when = _period(r.get("effectivePeriod")) or r.get("effectiveDateTime", "")
    return (
        f"- {med}: {_quantity(dosage.get('dose'))} {_text(dosage.get('route'))} "
        f"({when}; {r.get('status', '')})".replace("  ", " ")
    )


def _side_effect_line(r: Mapping[str, Any]) -> str:
    return (
        f"- {_text(r.get('event'))}: severity {_text(r.get('severity')) or 'unknown'}, "
        f"{_text(r.get('seriousness'))}, outcome {_text(r.get('outcome')) or 'unknown'} "
        f"(onset {r.get('date', '')})"
    )


def _member_line(r: Mapping[str, Any]) -> tuple[str, str] | None:
    """(section, line) of a resource of the session; scores are Observations derived from a questionnaire."""
    rtype = r["resourceType"]
    if r.get("status") == "entered-in-error":
        return None
    if rtype == "MedicationAdministration":
        return "Doses", _dose_line(r)
    if rtype == "Observation":
        line = f"- {_text(r.get('code'))}: {_value(r)} ({r.get('effectiveDateTime', '')})"
        return ("Scores" if r.get("derivedFrom") else "Vitals and monitoring"), line
    if rtype == "AdverseEvent":
        return "Side effects", _side_effect_line(r)
    return None


def _session_text(enc: Mapping[str, Any], members: list[dict], entries: list[dict], member_urls: set[str]) -> str:
    sections: dict[str, list[str]] = {
        "Doses": [],
        "Vitals and monitoring": [],
        "Scores": [],
        "Side effects": [],
        "Safety flags": [],
    }
    for e in members:
        found = _member_line(e["resource"])
        if found:
            sections[found[0]].append(found[1])
    for e in entries:  # safety flags implicating any of the session's resources
        r = e["resource"]
        if r["resourceType"] == "DetectedIssue" and any(
            ref.get("reference") in member_urls for ref in r.get("implicated", []) or []
        ):
            flag = f"- {_text(r.get('code'))} ({r.get('severity', '')}): {r.get('detail', '')}"
            sections["Safety flags"].append(flag)
    lines = [
        f"KAP session summary: {_text((enc.get('type') or [{}])[0])}",
        f"Period: {_period(enc.get('period'))} (status: {enc.get('status', 'unknown')})",
    ]
    for title, items in sections.items():
        lines.append(f"{title}:")
        lines.extend(items or ["- none recorded"])
    lines.append("Psychotherapy notes are not shared.")
    return "\n".join(lines) + "\n"


def session_summaries(bundle: Mapping[str, Any], accepted_urls: set[str] | None = None) -> list[dict]:
    """One DocumentReference (transaction entry) per session Encounter of the Bundle, text/plain.

    Content: session type, period and status; doses (MedicationAdministration), vitals and monitoring
    (Observation without ``derivedFrom``), scores (Observation derived from a QuestionnaireResponse), side
    effects (AdverseEvent) and safety flags (DetectedIssue implicating the session's resources). Entered-in-error
    items are left out. ``context.encounter`` names the Encounter only when it is sent too (``accepted_urls``).
    """
    entries = list(bundle.get("entry", []) or [])
    security = (bundle.get("meta") or {}).get("security", [])
    patient_url, org_url = _first_url(entries, "Patient"), _first_url(entries, "Organization")
    out = []
    for enc_entry, ident in _session_encounters(entries):
        enc, enc_url = enc_entry["resource"], enc_entry["fullUrl"]
        base = ident["system"][: -len("/session")]
        members = [e for e in entries if _refers_to(e["resource"], enc_url, ("encounter", "context"))]
        text = _session_text(enc, members, entries, {e["fullUrl"] for e in members} | {enc_url})
        session_id = ident["value"]
        system = f"{base}/{SUMMARY_KIND}"
        context: dict[str, Any] = {"period": enc.get("period", {})}
        if accepted_urls is None or enc_url in accepted_urls:
            context["encounter"] = [{"reference": enc_url}]
        doc = _document_reference(
            security=security,
            identifier={"system": system, "value": session_id},
            status="current",
            doc_type={"coding": [dict(t.PROGRESS_NOTE)], "text": "KAP session summary"},
            subject=patient_url,
            date=_summary_date(enc),
            description=f"KAP session summary {session_id}",
            content=[{"attachment": _plain_text(text, "KAP session summary")}],
        )
        doc["context"] = context
        authors = [copy.deepcopy(p["individual"]) for p in enc.get("participant", []) or [] if p.get("individual")]
        if authors:
            doc["author"] = authors
        if org_url:
            doc["custodian"] = {"reference": org_url}
        out.append(_entry(full_url_of(base, "DocumentReference", SUMMARY_KIND, session_id), doc, system, session_id))
    return out


# --- consent documents ------------------------------------------------------------------------------------------


def _consent_text(consent: Mapping[str, Any], form: str | None) -> str:
    provision = consent.get("provision") or {}
    covers = ", ".join(_text(c) for c in provision.get("code", []) or []) or "ketamine treatment"
    lines = [
        "KAP informed consent (ketamine-assisted psychotherapy)",
        f"Status: {consent.get('status', 'unknown')}",
        f"Signed: {consent.get('dateTime', 'unknown')}",
        f"Consent form: {form or 'not recorded'}",
        f"Valid: {_period(provision.get('period')) or 'not limited'}",
        "Covers: " + covers,
    ]
    return "\n".join(lines) + "\n"


def consent_documents(bundle: Mapping[str, Any]) -> list[dict]:
    """One DocumentReference (LOINC 59284-0, the consent category the reference file verifies) per treatment
    Consent of the Bundle, for EHRs that take documents but not Consent: its text states what was consented to,
    when and on which form, and the attachment points at the clinic's versioned consent form (``policy.uri``).
    kapfhir holds no scanned signature; the form URL and this record are what it has."""
    entries = list(bundle.get("entry", []) or [])
    patient_url, org_url = _first_url(entries, "Patient"), _first_url(entries, "Organization")
    out = []
    for entry in entries:
        consent = entry["resource"]
        if consent["resourceType"] != "Consent" or consent.get("status") == "entered-in-error":
            continue
        ident = next(iter(consent.get("identifier", []) or []), None)
        if not ident:
            continue
        form = next((p.get("uri") for p in consent.get("policy", []) or [] if p.get("uri")), None)
        system = f"{ident['system']}/{CONSENT_DOCUMENT_KIND}"
        content = [{"attachment": _plain_text(_consent_text(consent, form), "KAP informed consent")}]
        if form:
            content.append(
                {"attachment": {"contentType": "text/html", "url": form, "title": "Consent form (blank, versioned)"}}
            )
        doc = _document_reference(
            security=(consent.get("meta") or {}).get("security", []),
            identifier={"system": system, "value": ident["value"]},
            status="current" if consent.get("status") == "active" else "superseded",
            doc_type={"coding": [dict(t.CONSENT_DOCUMENT_TYPE)], "text": "Consent document"},
            subject=patient_url,
            date=_summary_date({"period": {"start": consent.get("dateTime")}}),
            description="KAP informed consent" + (f" ({form})" if form else ""),
            content=content,
        )
        if org_url:
            doc["custodian"] = {"reference": org_url}
        full_url = full_url_of(ident["system"], "DocumentReference", CONSENT_DOCUMENT_KIND, ident["value"])
        out.append(_entry(full_url, doc, system, ident["value"]))
    return out

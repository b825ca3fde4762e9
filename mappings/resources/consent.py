"""Consent to KAP treatment: scope treatment, category LOINC 59284-0, policy.uri = form URL|version (ppc-1).

Withdrawn -> status ``inactive``; the withdrawal time and reason, the off-label acknowledgement and the routes
covered are in the kapfhir consent-detail extension; the witness in the core consent-Witness extension.
"""

from __future__ import annotations

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import PRIMARY, Mapped, MappingContext
from mappings.resources._common import (
    ReverseContext,
    kap_profile,
    read_record_meta,
    record_fields,
    start_record,
    sub_extensions,
)
from service.domain.model import Consent
from service.domain.vocabulary import Route

_, KIND = PRIMARY[Consent]
_ROUTE_OF = {c["code"]: r for r, c in t.ROUTE.items()}


def _detail(consent: Consent) -> dict:
    parts = [dt.extension("offLabelUseAcknowledged", valueBoolean=consent.off_label_use_acknowledged)]
    parts += [dt.extension("route", valueCoding=t.ROUTE[r]) for r in consent.routes_covered]
    if consent.withdrawn_at is not None:
        parts.append(dt.extension("withdrawnAt", valueDateTime=dt.instant(consent.withdrawn_at)))
    if consent.withdrawal_reason is not None:
        parts.append(dt.extension("withdrawalReason", valueString=consent.withdrawal_reason))
    return dt.complex_extension(t.EXT_CONSENT_DETAIL, parts)


def to_consent(ctx: MappingContext, consent: Consent) -> Mapped:
    extensions = [_detail(consent)]
    if consent.witness_practitioner_id is not None or consent.witness_name is not None:
        witness = ctx.practitioner(consent.witness_practitioner_id) if consent.witness_practitioner_id else {}
        if consent.witness_name is not None:
            witness = {**witness, "display": consent.witness_name}
        extensions.append(dt.extension(t.EXT_CONSENT_WITNESS, valueReference=witness))
    resource = start_record(ctx, "Consent", KIND, consent, [kap_profile("consent")], extensions=extensions)
    if consent.entered_in_error:
        status = "entered-in-error"
    else:
        status = "inactive" if consent.withdrawn_at is not None else "active"
    provision: dict = {"type": "permit"}
    if consent.valid_from is not None or consent.valid_until is not None:
        provision["period"] = dt.period(consent.valid_from, consent.valid_until)
    if consent.covers_ketamine_for_psychotherapy:
        provision["code"] = [dt.codeable_concept(t.KAP_PROVISION)]
    resource |= {
        "status": status,
        "scope": dt.codeable_concept(t.CONSENT_SCOPE_TREATMENT),
        "category": [dt.codeable_concept(t.CONSENT_CATEGORY_LOINC)],
        "patient": ctx.patient(),
        "dateTime": dt.instant(consent.signed_at),
        "performer": [ctx.patient()] if consent.signed_by_patient else [],
        "organization": [ctx.organization()],
        "policy": [{"uri": f"{consent.form_url}|{consent.form_version}"}],
        "provision": provision,
    }
    if not resource["performer"]:
        del resource["performer"]
    return Mapped(resource, KIND, consent.id, consent.version)


def from_consent(rctx: ReverseContext, resource: dict) -> Consent:
    eie = resource["status"] == "entered-in-error"
    detail = sub_extensions(dt.find_extension(resource, t.EXT_CONSENT_DETAIL) or {})
    routes = (
        [
            _ROUTE_OF[e["valueCoding"]["code"]]
            for e in dt.find_extension(resource, t.EXT_CONSENT_DETAIL)["extension"]
            if e["url"] == "route"
        ]
        if detail
        else []
    )
    witness = dt.find_extension(resource, t.EXT_CONSENT_WITNESS)
    witness_ref = witness["valueReference"] if witness else {}
    form_url, _, form_version = resource["policy"][0]["uri"].rpartition("|")
    provision = resource.get("provision", {})
    period = provision.get("period", {})
    patient_url = resource.get("patient", {}).get("reference")
    return Consent(
        id=rctx.own_id(resource),
        **record_fields(read_record_meta(resource, eie)),
        form_url=form_url,
        form_version=form_version,
        signed_at=dt.parse_datetime(resource["dateTime"]),
        signed_by_patient=any(p.get("reference") == patient_url for p in resource.get("performer", ())),
        witness_practitioner_id=rctx.local_id({k: v for k, v in witness_ref.items() if k != "display"}),
        witness_name=witness_ref.get("display"),
        covers_ketamine_for_psychotherapy=any(
            dt.code_in(c, t.CS_CONSENT_SCOPE) == t.KAP_PROVISION["code"] for c in provision.get("code", ())
        ),
        off_label_use_acknowledged=detail.get("offLabelUseAcknowledged", {}).get("valueBoolean", False),
        routes_covered=[Route(r) for r in routes],
        valid_from=dt.parse_datetime(period["start"]) if "start" in period else None,
        valid_until=dt.parse_datetime(period["end"]) if "end" in period else None,
        withdrawn_at=dt.parse_datetime(detail["withdrawnAt"]["valueDateTime"]) if "withdrawnAt" in detail else None,
        withdrawal_reason=detail["withdrawalReason"]["valueString"] if "withdrawalReason" in detail else None,
    )

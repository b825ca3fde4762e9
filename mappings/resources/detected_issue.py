"""DetectedIssue per safety-rule deviation.

code = the rule (kapfhir CodeSystem), severity, detail = explanation, implicated = the records,
identifiedDateTime = raised, mitigation = the clinician's acknowledgement (action text = the comment).
Flag status: open -> preliminary, acknowledged -> final, resolved -> cancelled (+ kapfhir resolved-at).
Flags change without a version, so their entries are always a conditional PUT.
"""

from __future__ import annotations

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import SAFETY_FLAG, Mapped, MappingContext
from mappings.resources._common import ReverseContext, kap_profile, start
from service.domain.model import FlagAcknowledgement, SafetyFlag
from service.domain.vocabulary import FlagSeverity, FlagStatus

_STATUS_OF = {v: k for k, v in t.DETECTED_ISSUE_STATUS.items()}
_SEVERITY_OF = {v: k for k, v in t.DETECTED_ISSUE_SEVERITY.items()}


def actor(ctx: MappingContext, who: str) -> dict:
    """A user id: the Practitioner when it is one, else the id as display text."""
    return ctx.practitioner(who) if who in ctx.practitioner_ids else {"display": who}


def to_detected_issue(ctx: MappingContext, flag: SafetyFlag) -> Mapped:
    extensions = []
    if flag.resolved_at is not None:
        extensions.append(dt.extension(t.EXT_RESOLVED_AT, valueDateTime=dt.instant(flag.resolved_at)))
    resource = start(ctx, "DetectedIssue", SAFETY_FLAG, flag.id, [kap_profile("detectedissue")], extensions=extensions)
    resource |= {
        "status": t.DETECTED_ISSUE_STATUS[flag.status],
        "code": dt.codeable_concept(t.coding(t.SAFETY_RULE_SYSTEM, flag.rule_id)),
        "severity": t.DETECTED_ISSUE_SEVERITY[flag.severity],
        "patient": ctx.patient(),
        "identifiedDateTime": dt.instant(flag.raised_at),
        "implicated": [ctx.any_record(record_id) for record_id in flag.record_ids],
        "detail": flag.explanation,
    }
    if not resource["implicated"]:
        del resource["implicated"]
    if flag.acknowledgement is not None:
        ack = flag.acknowledgement
        resource["mitigation"] = [
            {
                "action": dt.codeable_concept(t.FLAG_ACKNOWLEDGED, text=ack.comment),
                "date": dt.instant(ack.at),
                "author": actor(ctx, ack.by),
            }
        ]
    return Mapped(resource, SAFETY_FLAG, flag.id, always_update=True)


def from_detected_issue(rctx: ReverseContext, resource: dict) -> SafetyFlag:
    acknowledgement = None
    if "mitigation" in resource:
        mitigation = resource["mitigation"][0]
        author = mitigation["author"]
        acknowledgement = FlagAcknowledgement(
            by=rctx.local_id(author) if "reference" in author or "identifier" in author else author["display"],
            at=dt.parse_datetime(mitigation["date"]),
            comment=mitigation["action"].get("text"),
        )
    resolved = dt.find_extension(resource, t.EXT_RESOLVED_AT)
    return SafetyFlag(
        id=rctx.own_id(resource),
        rule_id=dt.code_in(resource["code"], t.SAFETY_RULE_SYSTEM),
        severity=FlagSeverity(_SEVERITY_OF[resource["severity"]]),
        explanation=resource["detail"],
        record_ids=[rctx.local_id(ref) for ref in resource.get("implicated", ())],
        raised_at=dt.parse_datetime(resource["identifiedDateTime"]),
        status=FlagStatus(_STATUS_OF[resource["status"]]),
        acknowledgement=acknowledgement,
        resolved_at=dt.parse_datetime(resolved["valueDateTime"]) if resolved else None,
    )

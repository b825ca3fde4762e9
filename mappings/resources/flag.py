"""Flag on the patient for suicide risk (PHQ-9 item 9, C-SSRS): active while the safety flag is unresolved.

Derived from the SafetyFlag (the DetectedIssue carries everything); always a conditional PUT so that a
resolution turns the server's Flag inactive.
"""

from __future__ import annotations

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import FLAG, Mapped, MappingContext
from mappings.resources._common import kap_profile, start
from service.domain.model import SafetyFlag
from service.domain.vocabulary import FlagStatus

SUICIDE_RISK_RULE = "suicide-risk-positive"


def to_flag(ctx: MappingContext, flag: SafetyFlag) -> Mapped:
    resource = start(ctx, "Flag", FLAG, flag.id, [kap_profile("flag")])
    resource |= {
        "status": "inactive" if flag.status is FlagStatus.RESOLVED else "active",
        "code": dt.codeable_concept(t.coding(t.SAFETY_RULE_SYSTEM, flag.rule_id), text="Suicide risk: screen positive"),
        "subject": ctx.patient(),
        "period": dt.period(flag.raised_at, flag.resolved_at),
        "author": ctx.organization(),
    }
    return Mapped(resource, FLAG, flag.id, always_update=True)

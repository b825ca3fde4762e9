"""Procedure for each psychotherapy session (preparation, dosing, integration): SNOMED CT psychotherapy.

Derived from the session; the reverse mapping reads the Encounter, not this resource. No note text is mapped.
"""

from __future__ import annotations

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import PROCEDURE, Mapped, MappingContext
from mappings.resources._common import kap_profile, start_record
from service.domain.model import ClinicalSession
from service.domain.vocabulary import SessionKind

PSYCHOTHERAPY_KINDS = (SessionKind.PREPARATION, SessionKind.DOSING, SessionKind.INTEGRATION)


def to_procedure(ctx: MappingContext, session: ClinicalSession) -> Mapped:
    resource = start_record(ctx, "Procedure", PROCEDURE, session, [kap_profile("procedure"), t.US_CORE_PROCEDURE])
    resource |= {
        "basedOn": [ctx.care_plan()],
        "status": "entered-in-error" if session.entered_in_error else t.PROCEDURE_STATUS[session.status],
        "code": dt.codeable_concept(t.PSYCHOTHERAPY_SNOMED, t.SESSION_TYPE[session.kind]),
        "subject": ctx.patient(),
        "encounter": {"reference": ctx.primary_url[session.id]},
        "performedPeriod": dt.period(session.start, session.end),
        "performer": [{"actor": ctx.practitioner(pid)} for pid in session.clinician_ids],
        "reasonReference": ctx.conditions(),
    }
    for key in ("performer", "reasonReference"):
        if not resource[key]:
            del resource[key]
    return Mapped(resource, PROCEDURE, session.id, session.version)

"""Schemas of the outcomes API (``GET /api/v1/outcomes``) and of view links; the presenters that fill them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from marshmallow import Schema, ValidationError, fields, validates_schema

from service.domain import measures as m
from service.entrypoints.schemas import NoQuerySchema
from service.service_layer.outcomes import OutcomesSummary

MAX_SPAN_DAYS = 3660  # ten years


class OutcomesQuerySchema(NoQuerySchema):
    """The intake period: episodes whose index score lies in [from, to]; by default the 365 days up to today."""

    from_ = fields.Date(data_key="from", load_default=None)
    to = fields.Date(load_default=None)

    @validates_schema
    def _period(self, data: dict[str, Any], **_: Any) -> None:
        end = data.get("to") or datetime.now(UTC).date()
        start = data.get("from_") or end - timedelta(days=365)
        if start > end:
            raise ValidationError("from is after to", "from")
        if (end - start).days > MAX_SPAN_DAYS:
            raise ValidationError(f"the period spans more than {MAX_SPAN_DAYS} days", "from")
        data["from_"], data["to"] = start, end


class PopulationSchema(Schema):
    initial_population = fields.Integer()
    denominator = fields.Integer()
    denominator_exclusion = fields.Integer()
    numerator = fields.Integer()
    score = fields.Float(allow_none=True, metadata={"description": "numerator / (denominator - exclusions)"})


class MeasureFiguresSchema(Schema):
    id = fields.String()
    title = fields.String()
    instrument = fields.String()
    follows = fields.String()
    window_days = fields.List(fields.Integer())
    groups = fields.Dict(keys=fields.String(), values=fields.Nested(PopulationSchema))


class TimeToResponseSchema(Schema):
    instrument = fields.String()
    episodes = fields.Integer(metadata={"description": "episodes with an elevated index score in the period"})
    responders = fields.Integer()
    median_days = fields.Float(allow_none=True)
    median_dosing_sessions = fields.Float(allow_none=True)


class IndicationFiguresSchema(Schema):
    indication = fields.String()
    episodes = fields.Integer()
    measures = fields.List(fields.Nested(MeasureFiguresSchema))
    time_to_first_response = fields.List(fields.Nested(TimeToResponseSchema))


class OutcomesSchema(Schema):
    from_ = fields.Date(data_key="from")
    to = fields.Date()
    measures = fields.List(fields.Nested(MeasureFiguresSchema))
    time_to_first_response = fields.List(fields.Nested(TimeToResponseSchema))
    by_indication = fields.List(fields.Nested(IndicationFiguresSchema))


class ViewLinkSchema(Schema):
    url = fields.String(metadata={"description": "open in a browser; no bearer header needed"})
    expires_at = fields.AwareDateTime(format="iso")


def measure_figures(result: m.MeasureResult) -> dict[str, Any]:
    d = result.definition
    groups = {}
    for group in d.groups:
        p = result.population(group)
        groups[str(group)] = {
            "initial_population": p.initial_population,
            "denominator": p.denominator,
            "denominator_exclusion": p.denominator_exclusion,
            "numerator": p.numerator,
            "score": p.score,
        }
    return {
        "id": d.id,
        "title": d.title,
        "instrument": str(d.instrument),
        "follows": d.follows,
        "window_days": list(d.window_days),
        "groups": groups,
    }


def time_figures(t: m.TimeToResponse) -> dict[str, Any]:
    return {
        "instrument": str(t.instrument),
        "episodes": t.episodes,
        "responders": t.responders,
        "median_days": t.median_days,
        "median_dosing_sessions": t.median_dosing_sessions,
    }


def outcomes_body(summary: OutcomesSummary) -> dict[str, Any]:
    return {
        "from_": summary.period_start,
        "to": summary.period_end,
        "measures": [measure_figures(r) for r in summary.results],
        "time_to_first_response": [time_figures(t) for t in summary.time_to_response],
        "by_indication": [
            {
                "indication": str(i.indication),
                "episodes": i.episodes,
                "measures": [measure_figures(r) for r in i.results],
                "time_to_first_response": [time_figures(t) for t in i.time_to_response],
            }
            for i in summary.by_indication
        ],
    }

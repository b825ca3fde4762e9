"""HTML pages a clinician opens by a short-lived signed link: the episode in pictures (``/episodes/{id}/view``) and
the clinic's outcomes (``/outcomes/view``). Server-side SVG charts, no JavaScript; the pages print.

An API client with the right scopes asks for a link (``POST /api/v1/episodes/{id}/view-link``,
``POST /api/v1/outcomes/view-link``); the link opens one page of one clinic for 5 minutes. Every opening is audited,
and so is every refusal (403: expired, forged, another page's or another clinic's link).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, g, render_template, request

from service.adapters import audit
from service.domain import measures as m
from service.domain.errors import NotFound
from service.domain.model import OutcomeMeasure
from service.domain.vocabulary import Instrument
from service.entrypoints.http import ApiProblem, state
from service.entrypoints.routes import Route, route
from service.security import view_links
from service.security.tokens import Principal
from service.service_layer import outcomes
from service.service_layer.unit_of_work import UnitOfWork

bp = Blueprint("views", __name__, template_folder="templates")

# Inline styles only (matplotlib's SVG styles its shapes inline); nothing else loads, nothing frames the page.
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
ENDPOINTS = {"views.episode_view", "views.outcomes_view"}


def _secret() -> bytes:
    from service.entrypoints.auth import runtime

    try:
        return view_links.signing_secret(runtime().settings.signing_key_file)
    except view_links.ViewLinkUnavailableError as exc:
        raise ApiProblem(503, "Service unavailable", f"View links are not configured: {exc}.") from None


def _base() -> str:
    return request.url_root.rstrip("/")


# --- issuing links (called by the API views) ------------------------------------------------------------------------


def episode_link(episode_id: str, who: Principal, now: datetime) -> dict[str, Any]:
    token, expires = view_links.issue(
        _secret(), f"episode:{episode_id}", clinic_id=who.clinic_id, client_id=who.client_id, now=now
    )
    return {"url": f"{_base()}/episodes/{episode_id}/view?{urlencode({'token': token})}", "expires_at": expires}


def outcomes_link(period_start: date, period_end: date, who: Principal, now: datetime) -> dict[str, Any]:
    token, expires = view_links.issue(
        _secret(),
        "outcomes",
        clinic_id=who.clinic_id,
        client_id=who.client_id,
        now=now,
        **{"from": period_start.isoformat(), "to": period_end.isoformat()},
    )
    return {"url": f"{_base()}/outcomes/view?{urlencode({'token': token})}", "expires_at": expires}


# --- opening them ---------------------------------------------------------------------------------------------------


def _audit(status: int, clinic_id: str | None, client_id: str | None, entities: list[dict[str, str]]) -> None:
    session = state().session_factory()
    try:
        audit.append(
            session,
            audit.AuditRecord(
                recorded=datetime.now(UTC),
                type="rest",
                subtype="read",
                action="R",
                outcome="0" if status < 400 else "4",
                method=request.method,
                route=request.url_rule.rule if request.url_rule else "(unmatched)",
                status=status,
                clinic_id=clinic_id,
                client_id=client_id,
                network_address=request.remote_addr,
                request_id=g.get("request_id"),
                entity=entities,
            ),
        )
        session.commit()
    finally:
        session.close()
    g.audited = True


def _refused(reason: str, claims: dict[str, Any], entities: list[dict[str, str]]) -> Response:
    # The clinic and client a refused link names are recorded as claimed (unverified), so a clinic can see attempts.
    clinic = claims.get("clinic") if isinstance(claims.get("clinic"), str) else None
    client = claims.get("client") if isinstance(claims.get("client"), str) else None
    _audit(403, clinic, client, entities)
    from service.entrypoints.http import problem_response

    return problem_response(403, "Forbidden", f"This link cannot open the page ({reason}); ask for a new link.")


def _page(html: str) -> Response:
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


@dataclass(frozen=True)
class ScaleSummary:
    name: str
    first: int
    latest: int
    count: int
    index: int | None
    response: bool
    remission: bool


def _scale_summaries(episode: Any, cut_point: int) -> list[ScaleSummary]:
    from service.entrypoints import charts

    out = []
    for instrument in outcomes.SCALES:
        scores = sorted(
            (s for s in episode.current(OutcomeMeasure) if s.instrument is instrument and s.total is not None),
            key=lambda s: s.administered_at,
        )
        if not scores:
            continue
        rules = m.criteria(instrument, cut_point)
        index = m.index_score(episode, instrument, rules)
        latest = scores[-1].total
        out.append(
            ScaleSummary(
                name=charts.SCALE_NAMES[instrument],
                first=scores[0].total,
                latest=latest,
                count=len(scores),
                index=index.total if index else None,
                response=bool(index and latest is not None and rules.is_response(index.total, latest)),
                remission=bool(index and latest is not None and rules.is_remission(latest)),
            )
        )
    return out


@route(
    bp,
    "/episodes/<episode_id>/view",
    "GET",
    Route(
        "The episode in pictures (HTML; opened by a signed link, no bearer token)",
        media="text/html",
        public_errors=(403,),
        public=True,
    ),
)
def episode_view(episode_id: str) -> Response:
    from service.entrypoints import charts  # matplotlib loads with the first page, not in every worker at start

    entities = [{"type": "EpisodeOfCare", "id": episode_id}]
    try:
        grant = view_links.verify(_secret(), request.args.get("token"), f"episode:{episode_id}")
    except view_links.InvalidViewLinkError as exc:
        return _refused(exc.reason, exc.claims, entities)
    cut_point = state().settings.safety.pcl5_cut_point
    now = datetime.now(UTC)
    with UnitOfWork(state().session_factory, grant.clinic_id, write=False) as uow:
        try:
            chart = outcomes.episode_for_view(uow, episode_id)
        except NotFound:
            return _refused(
                "no such episode at the clinic of the link",
                {"clinic": grant.clinic_id, "client": grant.client_id},
                entities,
            )
    episode = chart.episode
    trends = [
        (charts.SCALE_NAMES[i], svg)
        for i in outcomes.SCALES
        if (svg := charts.scale_trend(episode, i, cut_point)) is not None
    ]
    cssrs = [s for s in episode.current(OutcomeMeasure) if s.instrument is Instrument.CSSRS_SCREENER and any(s.items)]
    html = render_template(
        "views/episode.html",
        chart=chart,
        episode=episode,
        scales=_scale_summaries(episode, cut_point),
        trends=trends,
        bp_svg=charts.blood_pressure(episode),
        doses_svg=charts.dosing_timeline(episode, now),
        open_flags=sorted(episode.open_flags(), key=lambda f: f.raised_at),
        cssrs_positive=sorted(cssrs, key=lambda s: s.administered_at),
        expires_at=grant.expires_at,
        generated_at=now,
    )
    _audit(200, grant.clinic_id, grant.client_id, [*entities, {"type": "Patient", "id": chart.patient.id}])
    return _page(html)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f} %"


@route(
    bp,
    "/outcomes/view",
    "GET",
    Route(
        "The clinic's outcomes (HTML; opened by a signed link, no bearer token)",
        media="text/html",
        public_errors=(403,),
        public=True,
    ),
)
def outcomes_view() -> Response:
    from service.entrypoints import charts

    try:
        grant = view_links.verify(_secret(), request.args.get("token"), "outcomes")
    except view_links.InvalidViewLinkError as exc:
        return _refused(exc.reason, exc.claims, [])
    if grant.period is None:
        return _refused("no period", {"clinic": grant.clinic_id, "client": grant.client_id}, [])
    start, end = (date.fromisoformat(v) for v in grant.period)
    cut_point = state().settings.safety.pcl5_cut_point
    with UnitOfWork(state().session_factory, grant.clinic_id, write=False) as uow:
        summary = outcomes.outcomes_summary(uow, start, end, pcl5_cut_point=cut_point, by_month=True)
        clinic = uow.repo.get_clinic()
    trend_svgs = []
    for n, definition in enumerate(outcomes.SHORT_TERM.values()):
        rows = []
        for month in summary.by_month:
            result = month.results[n]
            if result.outcomes:
                remission = result.population(m.Group.REMISSION)
                rows.append(
                    (
                        month.month.strftime("%Y-%m"),
                        result.population(m.Group.RESPONSE).score,
                        remission.score,
                        remission.denominator - remission.denominator_exclusion,
                    )
                )
        svg = charts.monthly_rates(rows, definition.title)
        if svg is not None:
            trend_svgs.append(svg)
    html = render_template(
        "views/outcomes.html",
        clinic=clinic,
        summary=summary,
        trend_svgs=trend_svgs,
        pct=_pct,
        expires_at=grant.expires_at,
        generated_at=datetime.now(UTC),
    )
    _audit(200, grant.clinic_id, grant.client_id, [{"type": "Organization", "id": grant.clinic_id}])
    return _page(html)

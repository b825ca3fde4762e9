"""Server-side SVG charts of an episode and of the clinic's outcomes (matplotlib, no pyplot: thread-safe figures).

Every chart is a self-contained inline SVG (text kept as text, so it stays sharp in print and can be searched);
nothing needs JavaScript.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import matplotlib

matplotlib.use("svg")  # before anything imports a backend: no display, no GUI toolkit

from matplotlib import rc_context
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from service.domain import measures as m
from service.domain.episode import Episode
from service.domain.model import ClinicalSession, DosingRecord, MonitoringReading, OutcomeMeasure
from service.domain.scales import GAD7_BANDS, PHQ9_BANDS
from service.domain.vocabulary import Instrument, Phase, ReadingTiming, SessionKind, SessionStatus

_BAND_COLOURS = ("#e8f5e9", "#fffde7", "#fff3e0", "#ffe0b2", "#ffcdd2")
_PHASE_COLOURS = {
    Phase.ASSESSMENT: "#eceff1",
    Phase.PREPARATION: "#e3f2fd",
    Phase.DOSING: "#ede7f6",
    Phase.INTEGRATION: "#e0f2f1",
    Phase.MAINTENANCE: "#f1f8e9",
}
_ROUTE_MARKERS = {"intravenous": "o", "intramuscular": "s", "intranasal": "^", "sublingual": "D", "oral": "P"}
_SCALE_MAX = {Instrument.PHQ9: 27, Instrument.GAD7: 21, Instrument.PCL5: 80}
SCALE_NAMES = {Instrument.PHQ9: "PHQ-9", Instrument.GAD7: "GAD-7", Instrument.PCL5: "PCL-5"}


def _svg(fig: Figure, salt: str) -> str:
    buffer = io.StringIO()
    # A salt per chart keeps the clip-path ids of several inline SVGs on one page apart, and the output stable.
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _figure(height: float = 2.8) -> tuple[Figure, object]:
    fig = Figure(figsize=(8.6, height), dpi=96)
    ax = fig.add_subplot()
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _dates(ax: object) -> None:
    locator = AutoDateLocator(maxticks=8)
    ax.xaxis.set_major_locator(locator)  # type: ignore[attr-defined]
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[attr-defined]


def _bands(instrument: Instrument, pcl5_cut_point: int) -> list[tuple[int, int, str]]:
    if instrument is Instrument.PCL5:
        return [(0, pcl5_cut_point, "below cut-point"), (pcl5_cut_point, 80, "provisional PTSD")]
    bands = PHQ9_BANDS if instrument is Instrument.PHQ9 else GAD7_BANDS
    out, low = [], 0
    for upper, name in bands:
        out.append((low, upper + 1, name))
        low = upper + 1
    return out


def scale_trend(episode: Episode, instrument: Instrument, pcl5_cut_point: int) -> str | None:
    """Totals over time on the severity bands, with the remission line, the response line (from the index score)
    and suicide-risk positives (PHQ-9 item 9 > 0, C-SSRS yes) marked."""
    scores = sorted(
        (s for s in episode.current(OutcomeMeasure) if s.instrument is instrument and s.total is not None),
        key=lambda s: s.administered_at,
    )
    if not scores:
        return None
    rules = m.criteria(instrument, pcl5_cut_point)
    fig, ax = _figure()
    top = _SCALE_MAX[instrument]
    _severity_bands(ax, instrument, pcl5_cut_point, top)
    when = [s.administered_at for s in scores]
    ax.plot(when, [s.total for s in scores], color="#1a237e", marker="o", linewidth=1.8, zorder=3, label="total")
    ax.axhline(rules.remission_below - 0.5, color="#2e7d32", linestyle="--", linewidth=1.2, label="remission below")
    _response_line(ax, episode, instrument, rules)
    _suicide_risk_marks(ax, episode, instrument, scores)
    ax.set_ylim(-0.5, top + 0.5)
    ax.set_ylabel(f"{SCALE_NAMES[instrument]} total")
    _dates(ax)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=5, fontsize=7, frameon=False)
    return _svg(fig, f"trend-{instrument}")


def _severity_bands(ax: Any, instrument: Instrument, pcl5_cut_point: int, top: int) -> None:
    """The instrument's severity bands as coloured stripes, each named at the right edge."""
    for (low, high, name), colour in zip(_bands(instrument, pcl5_cut_point), _BAND_COLOURS, strict=False):
        ax.axhspan(low - 0.5, high - 0.5, color=colour, zorder=0)
        ax.text(
            1.005,
            ((low + high - 1) / 2 + 0.5) / (top + 1),
            name,
            transform=ax.transAxes,
            fontsize=7,
            va="center",
            color="#555",
        )


def _response_line(ax: Any, episode: Episode, instrument: Instrument, rules: Any) -> None:
    """The response threshold counted from the index score (a drop in points, or in percent: 50 unless the
    instrument says otherwise), and the index score named."""
    index = m.index_score(episode, instrument, rules)
    if index is None:
        return
    if rules.response_drop_points is not None:
        response_at = index.total - rules.response_drop_points
    else:
        response_at = index.total * (100 - (rules.response_drop_percent or 50)) / 100
    ax.axhline(response_at, color="#6a1b9a", linestyle=":", linewidth=1.4, label="response (from index)")
    ax.annotate("index", (index.at, index.total), textcoords="offset points", xytext=(4, 6), fontsize=7)


def _suicide_risk_marks(ax: Any, episode: Episode, instrument: Instrument, scores: list[OutcomeMeasure]) -> None:
    """PHQ-9 totals whose item 9 is above 0 crossed out in red; every positive C-SSRS screener a red line."""
    positives = [s for s in scores if instrument is Instrument.PHQ9 and len(s.items) == 9 and s.items[8] > 0]
    if positives:
        ax.scatter(
            [s.administered_at for s in positives],
            [s.total for s in positives],
            marker="X",
            s=90,
            color="#c62828",
            zorder=4,
            label="item 9 positive",
        )
    cssrs = [s for s in episode.current(OutcomeMeasure) if s.instrument is Instrument.CSSRS_SCREENER and any(s.items)]
    for n, s in enumerate(cssrs):
        ax.axvline(
            s.administered_at, color="#c62828", linestyle="-.", linewidth=1, label="C-SSRS positive" if n == 0 else None
        )


def blood_pressure(episode: Episode) -> str | None:
    """For each completed dosing session: the pre-dose and the last post-dose (or discharge) blood pressure."""
    sessions = sorted(
        (
            s
            for s in episode.current(ClinicalSession)
            if s.kind is SessionKind.DOSING and s.status is SessionStatus.COMPLETED
        ),
        key=lambda s: s.start,
    )
    rows = [(n, *_before_and_after_dose(episode, session)) for n, session in enumerate(sessions, start=1)]
    if not any(b or a for _, b, a in rows):
        return None
    fig, ax = _figure(2.6)
    for n, before, after in rows:
        for reading, offset, colour in ((before, -0.12, "#1565c0"), (after, 0.12, "#ef6c00")):
            if reading is None:
                continue
            ax.vlines(n + offset, reading.diastolic_mmhg, reading.systolic_mmhg, color=colour, linewidth=3)
            ax.scatter([n + offset] * 2, [reading.systolic_mmhg, reading.diastolic_mmhg], color=colour, s=14)
    ax.scatter([], [], color="#1565c0", label="before dose (pre-dose)")
    ax.scatter([], [], color="#ef6c00", label="after dose (post-dose / discharge)")
    ax.axhline(140, color="#999", linestyle=":", linewidth=1)
    ax.set_xticks([n for n, _, _ in rows], [f"#{n}" for n, _, _ in rows])
    ax.set_xlabel("dosing session")
    ax.set_ylabel("mmHg (systolic-diastolic)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=7, frameon=False)
    return _svg(fig, "bp")


def _before_and_after_dose(
    episode: Episode, session: ClinicalSession
) -> tuple[MonitoringReading | None, MonitoringReading | None]:
    """(the session's pre-dose blood pressure, its last post-dose or discharge one)."""
    readings = sorted((r for r in episode.readings_in(session.id) if r.has_blood_pressure), key=lambda r: r.taken_at)
    before = next((r for r in readings if r.timing is ReadingTiming.PRE_DOSE), None)
    after = [r for r in readings if r.timing in (ReadingTiming.POST_DOSE, ReadingTiming.DISCHARGE)]
    return before, after[-1] if after else None


def dosing_timeline(episode: Episode, now: datetime) -> str | None:
    """Doses in mg/kg (mg when no weight is known) by route, over the phases of the episode."""
    doses = sorted(episode.current(DosingRecord), key=lambda d: d.start)
    if not doses and not episode.phase_history:
        return None
    fig, ax = _figure(2.4)
    end = episode.period_end or max([now, *(d.start for d in doses)])
    _phase_spans(ax, episode, end)
    per_kg = _doses_by_route(ax, doses)
    ax.set_ylabel("mg/kg" if per_kg else "mg")
    ax.set_xlim(episode.period_start, end + timedelta(days=1))
    ax.set_ylim(bottom=0)
    _dates(ax)
    if doses:
        ax.legend(
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
            ncol=5,
            fontsize=7,
            frameon=False,
            title="route",
            title_fontsize=7,
        )
    return _svg(fig, "doses")


def _phase_spans(ax: Any, episode: Episode, end: datetime) -> None:
    """Each phase of the episode (assessment from its start, then every transition) as a named coloured span."""
    transitions = [(episode.period_start, Phase.ASSESSMENT)] + [(t.at, t.to_phase) for t in episode.phase_history]
    for (start, phase), following in zip(transitions, [*transitions[1:], (end, None)], strict=False):
        if phase in _PHASE_COLOURS and following[0] > start:
            ax.axvspan(start, following[0], color=_PHASE_COLOURS[phase], zorder=0)
            ax.text(
                start + (following[0] - start) / 2,
                1.02,
                str(phase),
                transform=ax.get_xaxis_transform(),
                ha="center",
                fontsize=7,
                color="#444",
            )


def _doses_by_route(ax: Any, doses: list[DosingRecord]) -> bool:
    """One marker per route; True when every dose has its mg/kg (then plotted in mg/kg, else in mg)."""
    per_kg = all(d.dose_mg_per_kg is not None for d in doses) and bool(doses)
    for route in dict.fromkeys(str(d.route) for d in doses):
        chosen = [d for d in doses if str(d.route) == route]
        ax.scatter(
            [d.start for d in chosen],
            [(d.dose_mg_per_kg if per_kg else d.dose_mg) for d in chosen],
            marker=_ROUTE_MARKERS.get(route, "o"),
            s=36,
            color="#4a148c",
            zorder=3,
            label=route,
        )
    return per_kg


def monthly_rates(months: Sequence[tuple[str, float | None, float | None, int]], title: str) -> str | None:
    """Response and remission rates by month of the index score (one measure), with each month's denominator."""
    if not months:
        return None
    fig, ax = _figure(2.4)
    labels = [label for label, _, _, _ in months]
    positions = list(range(len(labels)))
    for k, (name, colour) in enumerate((("response", "#6a1b9a"), ("remission", "#2e7d32"))):
        values = [(row[1 + k] if row[1 + k] is not None else 0) * 100 for row in months]
        ax.bar([p + (k - 0.5) * 0.38 for p in positions], values, width=0.38, color=colour, label=name)
    for position, (_, _, _, denominator) in zip(positions, months, strict=True):
        ax.text(position, 102, f"n={denominator}", ha="center", fontsize=7, color="#444")
    ax.set_xticks(positions, labels, fontsize=7, rotation=45 if len(labels) > 8 else 0)
    ax.set_ylim(0, 112)
    ax.set_yticks([0, 20, 40, 60, 80, 100])
    ax.set_ylabel("% of denominator")
    ax.set_title(title, fontsize=9, pad=12)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _svg(fig, f"monthly-{title}")

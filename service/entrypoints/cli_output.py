"""How the CLI says what happened: progress on a terminal, and every held or failed delivery with its reason."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

T = TypeVar("T")


def on_terminal() -> bool:
    return sys.stderr.isatty()


@contextmanager
def progress(items: Iterable[T], label: str, length: int | None = None) -> Iterator[Iterable[T]]:
    """A progress bar on stderr when it is a terminal; the bare items otherwise (logs and pipes stay clean)."""
    if not on_terminal():
        yield items
        return
    with click.progressbar(items, label=label, length=length, file=sys.stderr) as bar:  # type: ignore[call-overload]
        yield bar


def outcome_text(outcome: Any) -> str | None:
    """The human part of an OperationOutcome: each issue's details.text or diagnostics, joined."""
    if not isinstance(outcome, dict):
        return None
    texts = []
    for issue in outcome.get("issue") or []:
        text = (issue.get("details") or {}).get("text") or issue.get("diagnostics")
        where = ", ".join(issue.get("expression") or [])
        if text:
            texts.append(f"{text} (at {where})" if where else str(text))
    return "; ".join(texts) or None


def delivery_reasons(delivery: Any) -> list[str]:
    """Why a delivery did not go through, one line per reason (empty for a delivered job)."""
    from service.adapters import outbox

    if delivery.status == outbox.DELIVERED:
        return []
    if delivery.status == outbox.HELD:
        return [(delivery.detail or "no reason recorded").removeprefix("held: ")]
    # A refused transaction fails every entry for one reason: one line per reason, naming the types it hit.
    by_reason: dict[str, list[str]] = {}
    report = delivery.report
    for failure in report.failed if report is not None else []:
        types = by_reason.setdefault(failure_reason(failure), [])
        if failure.resource_type not in types:
            types.append(failure.resource_type)
    reasons = [f"{reason} ({', '.join(types)})" for reason, types in by_reason.items()]
    if not reasons:
        reasons.append(outcome_text(delivery.error) or delivery.detail or "failed (no reason recorded)")
    return reasons


def failure_reason(failure: Any) -> str:
    """One failed resource's reason: the HTTP status, kapfhir's reason, and what the server's OperationOutcome
    said when the reason does not already say it."""
    status = f"HTTP {failure.status} " if failure.status else ""
    server = outcome_text(failure.operation_outcome)
    said = f"; the server said: {server}" if server and server not in (failure.reason or "") else ""
    return f"{status}{failure.reason or 'failed'}{said}"


def delivery_line(delivery: Any) -> str:
    from service.adapters import outbox

    word = {
        outbox.HELD: "held",
        outbox.DEAD: "failed (dead letter)",
        outbox.QUEUED: "failed (will retry)",
    }.get(delivery.status, delivery.status)
    return f"{word}: episode {delivery.job.episode_id} -> target {delivery.job.target}"


def echo_problems(deliveries: Iterable[Any]) -> None:
    """Every held or failed delivery, with its reasons indented below it."""
    for delivery in deliveries:
        reasons = delivery_reasons(delivery)
        if not reasons:
            continue
        click.echo(delivery_line(delivery))
        for reason in reasons:
            click.echo(f"    {reason}")

"""The API fixture episodes (fixtures/episodes/*.json) as stored charts, normalised so that their mapping is stable.

Each fixture is replayed through the app (in-process, SQLite) with ``service.fixture_loader.replay``, then read back
with ``services.episode_chart``. Two things in a stored chart come from the run, not from the fixture:
- ids are uuid4: each becomes a stable name (``<class>-<n>``) in order of first appearance in the chart;
- system timestamps (recorded_at, updated_at, created_at, raised_at, acknowledgement and defaulted transition
  times) are clock readings: every datetime taken during the replay becomes ``CLOCK_BASE`` plus as many minutes as
  its rank among the distinct clock readings of that replay, so their order (and which ones are equal) is kept.
The export orders some lists by uuid (practitioners, flags raised by one request): records, practitioners and flags
are put in order of their first-recorded (raised) time, then of what they hold (stable sorts), before naming.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from service.domain.chart import EpisodeChart
from service.fixture_loader import fixture_paths, load_fixture, replay
from service.service_layer import services
from service.service_layer.unit_of_work import UnitOfWork
from tests.support.app import authorized_app
from tests.support.paths import REPO_ROOT

EPISODES = REPO_ROOT / "fixtures" / "episodes"
CLOCK_BASE = datetime(2026, 11, 1, tzinfo=UTC)  # after every clinical time of the fixtures
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _label(cls: type) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", cls.__name__).lower()


class Normaliser:
    def __init__(self, started: datetime, finished: datetime) -> None:
        self.started, self.finished = started, finished
        self.labels: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.per_label: dict[str, int] = {}
        self.clock: dict[datetime, datetime] = {}

    def _collect(self, value: object) -> None:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            own = getattr(value, "id", None)
            if isinstance(own, str) and UUID.fullmatch(own):
                self.labels.setdefault(own, _label(type(value)))
            for f in dataclasses.fields(value):
                self._collect(getattr(value, f.name))
        elif isinstance(value, dict):
            for item in value.values():
                self._collect(item)
        elif isinstance(value, list | tuple):
            for item in value:
                self._collect(item)
        elif isinstance(value, datetime) and self.started <= value <= self.finished:
            self.clock[value] = value

    def _name(self, uuid: str) -> str:
        if uuid not in self.names:
            label = self.labels.get(uuid, "ref")
            self.per_label[label] = self.per_label.get(label, 0) + 1
            self.names[uuid] = f"{label}-{self.per_label[label]}"
        return self.names[uuid]

    def _rebuild(self, value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes = {f.name: self._rebuild(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
            return dataclasses.replace(value, **changes)
        if isinstance(value, dict):
            return {self._rebuild(k): self._rebuild(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._rebuild(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self._rebuild(item) for item in value)
        if isinstance(value, str) and not isinstance(value, Enum):
            return UUID.sub(lambda m: self._name(m.group(0)), value)
        if isinstance(value, datetime) and value in self.clock:
            return self.clock[value]
        return value

    def chart(self, chart: EpisodeChart) -> EpisodeChart:
        records = dict(sorted(chart.episode.records.items(), key=lambda kv: kv[1].recorded_at or _EARLIEST))
        position = {rid: n for n, rid in enumerate(records)}
        flags = sorted(
            chart.episode.flags,
            key=lambda f: (f.raised_at, f.rule_id, sorted(position.get(r, len(position)) for r in f.record_ids)),
        )
        chart = dataclasses.replace(
            chart,
            episode=dataclasses.replace(chart.episode, records=records, flags=flags),
            practitioners=sorted(chart.practitioners, key=lambda p: (p.recorded_at or _EARLIEST, p.npi or "")),
        )
        self._collect(chart)
        for rank, reading in enumerate(sorted(self.clock)):
            self.clock[reading] = CLOCK_BASE + timedelta(minutes=rank)
        return self._rebuild(chart)


@contextmanager
def stored_fixture_charts() -> Iterator[dict[str, EpisodeChart]]:
    """Fixture stem -> its normalised stored chart, all fixtures replayed into one in-process app."""
    with tempfile.TemporaryDirectory(prefix="kapfhir-fhir-fixtures-") as directory:
        app = authorized_app(f"sqlite:///{directory}/kapfhir.db")
        client = app.test_client()

        def send(method: str, path: str, body: Any) -> tuple[int, Any]:
            response = client.open("/api/v1" + path, method=method, json=body)
            return response.status_code, response.get_json(silent=True)

        charts = {}
        try:
            for path in fixture_paths(EPISODES):
                started = datetime.now(UTC)
                ids = replay(load_fixture(path), send)
                finished = datetime.now(UTC)
                with UnitOfWork(app.extensions["kapfhir"].session_factory, "demo", write=False) as uow:
                    stored = services.episode_chart(uow, ids["episode"])
                charts[path.stem] = Normaliser(started, finished).chart(stored)
            yield charts
        finally:
            app.extensions["kapfhir.engine"].dispose()

"""PostgreSQL plans of the projection's hot statements. PostgreSQL chooses plans from statistics, so the database
holds a clinic of a realistic shape (3,000 observations of 60 patients, their search index rows, a second clinic
beside it) and is analysed, as autovacuum does on a running database. Every read of the projection's tables must
then go through an index condition on a column that narrows it to the rows asked for (an id, a search value or a
date), not only on the clinic, type and parameter, which walks every such row of a clinic (a LIKE on a value's
ending did). SQLite's plans are pinned in test_query_plans.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from service.adapters.database import make_engine
from service.adapters.fhir_store import fhir_resources, fhir_search_index
from service.config import Settings
from service.entrypoints.cli import prepare_database
from service.fhir import projection, search
from tests.integration.fhir.fhir_support import plans_of_what_runs

pytestmark = pytest.mark.postgres

WATCHED = {"fhir_resources", "fhir_search_index"}


PATIENTS, OBSERVATIONS_EACH, CARE_PLAN_VERSIONS = 60, 50, 30


def _clinic_rows(clinic_id: str) -> tuple[list[dict], list[dict]]:
    """Current observations of PATIENTS patients with their search index rows, and a care plan per patient with
    CARE_PLAN_VERSIONS versions (one per session of its episode), in one clinic."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    resources, index = [], []
    for p in range(PATIENTS):
        for v in range(1, CARE_PLAN_VERSIONS + 1):
            resources.append(
                {
                    "clinic_id": clinic_id,
                    "resource_type": "CarePlan",
                    "id": f"{clinic_id}-cp{p}",
                    "version_id": v,
                    "is_current": v == CARE_PLAN_VERSIONS,
                    "last_updated": start + timedelta(days=v),
                    "episode_id": None,
                    "patient_ref": f"Patient/p{p}",
                    "content_hash": f"{clinic_id}-cp{p}-{v}",
                    "body": "{}",
                }
            )
        for n in range(OBSERVATIONS_EACH):
            rid, when = f"{clinic_id}-o{p}-{n}", start + timedelta(hours=p * OBSERVATIONS_EACH + n)
            resources.append(
                {
                    "clinic_id": clinic_id,
                    "resource_type": "Observation",
                    "id": rid,
                    "version_id": 1,
                    "is_current": True,
                    "last_updated": when,
                    "episode_id": None,
                    "patient_ref": f"Patient/p{p}",
                    "content_hash": rid,
                    "body": "{}",
                }
            )
            row = {"clinic_id": clinic_id, "resource_type": "Observation", "id": rid, "start": None, "end": None}
            index += [
                {**row, "param": "patient", "system": "Patient", "code": f"Patient/p{p}"},
                {**row, "param": "subject", "system": "Patient", "code": f"Patient/p{p}"},
                {**row, "param": "code", "system": "http://loinc.org", "code": ("8480-6", "8462-4", "8867-4")[n % 3]},
                {**row, "param": "category", "system": CATEGORY, "code": ("vital-signs", "survey")[n % 2]},
                {**row, "param": "date", "system": None, "code": None, "start": when, "end": when},
            ]
    return resources, index


CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


@pytest.fixture(scope="module")
def engine(postgres: Any) -> Iterator[Engine]:
    url = postgres.create_database("plans")
    prepare_database(Settings(database_url=url))
    engine = make_engine(url)
    with engine.begin() as conn:
        for clinic in ("c1", "c2"):
            resources, index = _clinic_rows(clinic)
            conn.execute(insert(fhir_resources), resources)
            conn.execute(insert(fhir_search_index), index)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    yield engine
    engine.dispose()
    postgres.drop_database(url)


def _nodes(plan: dict) -> Iterator[dict]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


# columns that narrow an index probe to the rows asked for ("clinic_id" does not match: no word boundary inside it)
NARROWING = re.compile(r"\b(id|code|start|end|version_id)\b")


def _reads(plan_json: Any) -> list[tuple[str, str, str]]:
    """(node type, relation, index condition) of every read of the projection's tables in a plan; a bitmap heap
    scan's condition is that of the index scans under it."""
    plan = (plan_json if isinstance(plan_json, list) else json.loads(plan_json))[0]["Plan"]
    reads = []
    for node in _nodes(plan):
        if node.get("Relation Name") not in WATCHED or node["Node Type"] == "ModifyTable":
            continue
        condition = node.get("Index Cond", "")
        if node["Node Type"] == "Bitmap Heap Scan":
            condition = " OR ".join(n.get("Index Cond", "") for n in _nodes(node) if n is not node)
        reads.append((node["Node Type"], node["Relation Name"], condition))
    return reads


def _walking(reads: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """The reads that are not narrowed by an index condition on an id, a search value or a date."""
    return [r for r in reads if r[0] == "Seq Scan" or not NARROWING.search(r[2])]


def _explain(engine: Engine, statement: Any) -> list[tuple[str, str, str]]:
    sql = str(statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        return _reads(conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}").scalar_one())


def _postgres_plan(cursor: Any, statement: str, parameters: Any) -> list[tuple[str, str, str]]:
    with cursor.connection.cursor() as probe:
        probe.execute(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
        return _reads(probe.fetchone()[0])


def test_the_guard_sees_a_statement_that_walks_the_clinic(engine: Engine) -> None:
    from sqlalchemy import select

    from service.adapters.fhir_store import fhir_search_index as s

    # what `patient=<bare id>` was: every patient reference of the clinic's observations, filtered
    by_ending = select(s.c.id).where(
        s.c.clinic_id == "c1", s.c.resource_type == "Observation", s.c.param == "patient", s.c.code.endswith("/p1")
    )
    reads = _explain(engine, by_ending)
    assert reads and _walking(reads) == reads, reads


@pytest.mark.parametrize(
    "query",
    [
        [("patient", "p1")],
        [("patient", "Patient/p1")],
        [("subject", "p1"), ("category", "vital-signs")],
        [("patient", "Patient/p1"), ("_sort", "-date")],
        [("code", "http://loinc.org|8480-6"), ("patient", "p7")],
        [("date", "2026-01-02")],
        [("date", "lt2026-01-01T06:00:00Z")],
        [("_id", "a,b")],
    ],
)
def test_selective_searches_are_answered_from_indexes(engine: Engine, query: list[tuple[str, str]]) -> None:
    reads = _explain(engine, search.search_statement("c1", search.parse("Observation", query)))
    assert reads and not _walking(reads), reads


def test_reads_by_id_and_current_rows_use_indexes(engine: Engine) -> None:
    t = projection.fhir_resources
    for statement in (
        projection.read_statement("c1", "Observation", "a"),
        projection.read_statement("c1", "Observation", "a", 2),
        projection.current_rows_statement("c1", ["Encounter", "Observation"], ["a", "b"], (t.c.version_id,)),
    ):
        reads = _explain(engine, statement)
        assert reads and not _walking(reads), reads


def _analysed_reads(engine: Engine, statement: Any) -> list[dict]:
    """The nodes of the executed plan that read fhir_resources."""
    sql = str(statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}").scalar_one()
    plan = plan if isinstance(plan, list) else json.loads(plan)
    return [n for n in _nodes(plan[0]["Plan"]) if n.get("Relation Name") == "fhir_resources"]


def test_the_current_row_of_a_resource_with_many_versions_is_one_probe(engine: Engine) -> None:
    """A write looks up the current rows of what it stores, a read by id the current row of one: neither walks the
    older versions of the id (a care plan has one per session of its episode)."""
    t = projection.fhir_resources
    for statement in (
        projection.current_rows_statement("c1", ["CarePlan", "Observation"], ["c1-cp3", "c1-o3-4"], (t.c.version_id,)),
        projection.read_statement("c1", "CarePlan", "c1-cp3"),
    ):
        reads = _analysed_reads(engine, statement)
        assert reads, statement
        for node in reads:
            assert node.get("Index Name") == "ix_fhir_resources_current_id", node
            assert node.get("Rows Removed by Filter", 0) == 0, node
            assert node["Actual Rows"] >= 1, node


REPLACED = [("Observation", "a"), ("Encounter", "b"), ("Observation", "c")]


@pytest.mark.parametrize(
    "action",
    [
        lambda session: projection._retire(session, "c1", REPLACED),
        lambda session: projection._reindex(session, "c1", [], replaced=REPLACED),
    ],
    ids=["retire", "reindex"],
)
def test_a_write_retires_and_reindexes_replaced_resources_through_indexes(
    engine: Engine, action: Callable[[Session], None]
) -> None:
    plans = plans_of_what_runs(engine, action, _postgres_plan)
    assert plans
    for statement, reads in plans.items():
        assert reads and not _walking(reads), (statement, reads)


def test_listing_current_resources_uses_the_index_of_current_resources(engine: Engine) -> None:
    # a listing reads the type's current resources in lastUpdated order: the partial index serves it
    statement = search.search_statement("c1", search.parse("Observation", [("_sort", "-_lastUpdated")]))
    sql = str(statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}").scalar_one()
    plan = plan if isinstance(plan, list) else json.loads(plan)
    used = {n.get("Index Name") for n in _nodes(plan[0]["Plan"]) if n.get("Relation Name") == "fhir_resources"}
    assert "ix_fhir_resources_current" in used, used

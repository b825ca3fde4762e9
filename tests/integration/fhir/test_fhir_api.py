"""The /fhir API: CapabilityStatement, read/vread/history/search, transaction ingest, $validate, errors, isolation."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from service.fhir import inbound, registry
from tests.integration.fhir.fhir_support import (
    BACKENDS,
    FHIR_JSON,
    INVALID,
    ROOT,
    app_on,
    clinic_b,
    load_episodes,
)
from tests.integration.fhir.fhir_support import entries as _entries
from validation.kapfhir_constraints import sd_constraints


@pytest.fixture(scope="module", params=BACKENDS)
def fhir_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """Every fixture episode recorded through the domain API, on SQLite and on PostgreSQL."""
    with app_on(request, request.param, tmp_path_factory.mktemp("fhir"), "fhir_api") as app:
        app.config["BACKEND"] = request.param
        app.config["EPISODE_IDS"] = load_episodes(app)
        yield app


@pytest.fixture(scope="module")
def fhir(fhir_app: Flask) -> Any:
    return fhir_app.test_client()


@pytest.fixture(scope="module")
def sqlite_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """$validate reads nothing stored: its tests run once, on SQLite."""
    with app_on(None, "sqlite", tmp_path_factory.mktemp("fhir-validate"), "validate") as app:  # type: ignore[arg-type]
        app.config["EPISODE_IDS"] = load_episodes(app)
        yield app


@pytest.fixture(scope="module")
def validator(sqlite_app: Flask) -> Any:
    return sqlite_app.test_client()


# --- CapabilityStatement ------------------------------------------------------------------------------------------


def test_metadata_is_public_and_generated_from_the_registry(fhir: Any) -> None:
    r = fhir.get("/fhir/metadata", headers={"Authorization": ""})
    assert r.status_code == 200 and r.mimetype == FHIR_JSON
    cs = r.get_json()
    assert cs["fhirVersion"] == "4.0.1" and "json" in cs["format"]
    rest = cs["rest"][0]
    assert rest["security"]["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    assert {x["code"] for x in rest["interaction"]} == {"transaction", "batch"}
    served = {res["type"]: res for res in rest["resource"]}
    measure = served.pop("Measure")  # served by service.entrypoints.fhir_measures, outside the registry
    assert measure["operation"][0]["name"] == "evaluate-measure"
    assert set(served) == set(registry.TYPES)
    for name, res in served.items():
        assert {p["name"] for p in res["searchParam"]} == set(registry.TYPES[name].params)
        codes = [i["code"] for i in res["interaction"]]
        assert codes[: len(registry.READ_INTERACTIONS)] == list(registry.READ_INTERACTIONS)
        assert ("create" in codes) == (name in inbound.CREATE_TYPES) and res["updateCreate"] is False
        assert ("update" in codes) == ("patch" in codes) == (name in inbound.UPDATE_TYPES)
        assert ("delete" in codes) == (name in inbound.DELETE_TYPES)
    for derived in ("Provenance", "AuditEvent", "CarePlan", "Organization"):
        assert [i["code"] for i in served[derived]["interaction"]] == list(registry.READ_INTERACTIONS)
    assert any("kap-medicationadministration" in p for p in served["MedicationAdministration"]["supportedProfile"])


def test_every_declared_search_parameter_is_an_r4_search_parameter() -> None:
    bad = []
    for rtype, info in registry.TYPES.items():
        for code, param in info.params.items():
            definition = registry.r4_definition(rtype, code)
            if definition is None or definition["type"] != param.type:
                bad.append((rtype, code, param.type, definition and definition["type"]))
                continue
            for path in param.paths:
                r4 = definition["expression"]
                variants = {f"{rtype}.{path}", f"({rtype}.{path}"}
                m = re.fullmatch(r"(\w+?)(CodeableConcept|Reference)", path)
                if m:
                    variants.add(f"({rtype}.{m.group(1)} as {m.group(2)})")
                if not any(v in r4 for v in variants):
                    bad.append((rtype, code, path, r4[:120]))
    assert bad == []


# --- read, vread, history, search ---------------------------------------------------------------------------------


def test_every_declared_parameter_finds_what_it_indexes_and_pages(fhir: Any, fhir_app: Flask) -> None:
    from sqlalchemy import select

    from service.adapters.fhir_store import fhir_search_index

    assert fhir.get("/fhir/Patient").status_code == 200  # projects the fixtures
    engine = fhir_app.extensions["kapfhir.engine"]
    with engine.connect() as conn:
        rows = conn.execute(select(fhir_search_index)).all()
    checked = set()
    for row in rows:
        key = (row.resource_type, row.param)
        if key in checked:
            continue
        checked.add(key)
        if row.start is not None:
            value = (
                "ge" + row.start.strftime("%Y-%m-%dT%H:%M:%SZ")
                if row.start.year > 1900
                else "le" + row.end.strftime("%Y-%m-%dT%H:%M:%SZ")
            )
        elif registry.TYPES[row.resource_type].params[row.param].type == "token" and row.system:
            value = f"{row.system}|{row.code}"
        else:
            value = row.code
        r = fhir.get(f"/fhir/{row.resource_type}", query_string={row.param: value, "_id": row.id})
        assert r.status_code == 200, (key, r.get_json())
        assert row.id in {x["id"] for x in _entries(r.get_json())}, key
    projected = {t for t, _ in checked}
    assert projected >= set(registry.PROJECTED_TYPES) - {"AdverseEvent"} or projected >= {"Observation", "Patient"}
    for rtype, info in registry.TYPES.items():  # every declared parameter answers, with data or without
        for code, param in info.params.items():
            value = {"date": "ge2000-01-01", "token": "x", "reference": "Patient/x", "string": "x", "uri": "x"}[
                param.type
            ]
            assert fhir.get(f"/fhir/{rtype}", query_string={code: value}).status_code == 200, (rtype, code)
        bundle = fhir.get(f"/fhir/{rtype}?_count=1").get_json()
        assert bundle["type"] == "searchset" and bundle["link"][0]["relation"] == "self"
        if bundle["total"] > 1:
            nxt = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
            page2 = fhir.get(nxt.replace("http://localhost", "")).get_json()
            assert page2["entry"][0]["resource"]["id"] != bundle["entry"][0]["resource"]["id"]


def test_read_vread_history_etag_and_include(fhir: Any) -> None:
    bundle = fhir.get("/fhir/Observation?category=vital-signs&_include=Observation:patient&_sort=-date&_count=3")
    body = bundle.get_json()
    assert body["total"] > 3 and any(e["search"]["mode"] == "include" for e in body["entry"])
    dates = [e["resource"].get("effectiveDateTime") for e in body["entry"] if e["search"]["mode"] == "match"]
    assert dates == sorted(dates, reverse=True)
    obs = _entries(body)[0]
    r = fhir.get(f"/fhir/Observation/{obs['id']}")
    assert r.headers["ETag"] == f'W/"{r.get_json()["meta"]["versionId"]}"' and "Last-Modified" in r.headers
    v = fhir.get(f"/fhir/Observation/{obs['id']}/_history/1")
    assert v.status_code == 200 and v.get_json()["meta"]["versionId"] == "1"
    h = fhir.get(f"/fhir/Observation/{obs['id']}/_history").get_json()
    assert h["type"] == "history" and h["total"] >= 1
    assert fhir.get("/fhir/Observation/_history?_count=2").get_json()["type"] == "history"
    for rtype in ("StructureDefinition", "CodeSystem", "ValueSet", "Questionnaire", "AuditEvent"):
        first = _entries(fhir.get(f"/fhir/{rtype}?_count=1").get_json())[0]
        assert fhir.get(f"/fhir/{rtype}/{first['id']}").status_code == 200


def _current(fhir_app: Flask, rtype: str) -> list[tuple[dict, Any]]:
    """Every current resource of the type as stored, with its lastUpdated."""
    from sqlalchemy import select

    from service.adapters.fhir_store import fhir_resources as t

    with fhir_app.extensions["kapfhir.engine"].connect() as conn:
        rows = conn.execute(
            select(t.c.body, t.c.last_updated).where(t.c.resource_type == rtype, t.c.is_current.is_(True))
        ).all()
    return [(json.loads(row.body), row.last_updated) for row in rows]


def _every_page(fhir: Any, rtype: str, query: dict[str, str], count: int) -> tuple[list[dict], set[int]]:
    """Every match of a search, page by page (``_count``, ``_offset``); and the totals the pages gave."""
    found: list[dict] = []
    totals: set[int] = set()
    for offset in range(0, 2_000, count):  # bounded: the fixtures hold fewer resources
        page = fhir.get(f"/fhir/{rtype}", query_string={**query, "_count": count, "_offset": offset})
        assert page.status_code == 200, (query, page.get_json())
        totals.add(page.get_json()["total"])
        matches = _entries(page.get_json())
        found += matches
        if len(matches) < count:
            return found, totals
    raise AssertionError(f"more than 2,000 matches for {query}")


def test_search_pages_find_what_a_search_of_every_stored_resource_in_memory_finds(fhir: Any, fhir_app: Flask) -> None:
    """The SQL search (a statement built once per shape, run with the values bound) against an independent oracle:
    the in-memory search over every current resource of the type. Searches of the same shape with other values
    share one statement, so each shape comes with several values here. Pages are disjoint, in lastUpdated order,
    and each page's total is the number of matches."""
    from service.fhir import search

    patients = sorted(r["id"] for r, _ in _current(fhir_app, "Patient"))
    assert len(patients) >= 3, patients
    observations = _current(fhir_app, "Observation")
    encounter = next(r for r, _ in _current(fhir_app, "Encounter"))["id"]
    queries = [
        *({"patient": pid} for pid in patients[:3]),
        *({"patient": f"Patient/{pid}"} for pid in patients[:3]),
        *({"subject": pid, "category": "vital-signs"} for pid in patients[:2]),
        {"patient": encounter},  # an Encounter's id: `patient` targets Patient only
        {"encounter": encounter},
        {"category": "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs,survey"},
        {"category": "|vital-signs"},
        {"date": "ge2026-02-10", "_lastUpdated": "le2200-01-01"},
        {"date": "lt2026-03-01"},
        {"_id": ",".join(r["id"] for r, _ in observations[:5])},
    ]

    def in_memory(stored: list[tuple[dict, Any]], rtype: str, query: dict[str, str]) -> tuple[list, int]:
        everything = search.parse(rtype, list(query.items()))
        everything.count = len(stored)
        return search.search_memory(stored, everything)

    for query in queries:
        expected, total = in_memory(observations, "Observation", query)
        assert total == len(expected)
        for count in (4, 200):
            found, totals = _every_page(fhir, "Observation", query, count)
            ids = [r["id"] for r in found]
            assert len(ids) == len(set(ids)), (query, "a match on two pages")
            assert set(ids) == {r["id"] for r, _ in expected}, query
            assert totals == {total}, (query, totals)
            stamps = [(r["meta"]["lastUpdated"], r["id"]) for r in found]
            assert stamps == sorted(stamps), query
    assert _every_page(fhir, "Observation", {"patient": patients[0]}, 200)[0], "the fixtures have observations"

    # a bare id is a local reference of any type the parameter targets, and so is this server's absolute URL of
    # the resource: `subject` and `patient` find the patient's observations either way
    base = fhir_app.extensions["kapfhir"].settings.base_url.rstrip("/") + "/fhir"
    for pid in patients[:3]:
        for param in ("subject", "patient"):
            bare, typed, absolute = (
                {r["id"] for r in _every_page(fhir, "Observation", {param: value}, 200)[0]}
                for value in (pid, f"Patient/{pid}", f"{base}/Patient/{pid}")
            )
            assert bare == typed == absolute != set()
        elsewhere = _every_page(fhir, "Observation", {"subject": f"https://ehr.example.org/fhir/Patient/{pid}"}, 200)
        assert elsewhere[0] == []  # another server's patient of the same id is not this one

    names = sorted({n["family"] for r, _ in _current(fhir_app, "Patient") for n in r.get("name", ())})
    for name in names[:2]:
        prefix = {"name": name[:3].lower()}
        found, _ = _every_page(fhir, "Patient", prefix, 200)
        expected, _ = in_memory(_current(fhir_app, "Patient"), "Patient", prefix)
        assert {r["id"] for r in found} == {r["id"] for r, _ in expected} != set()


def test_a_search_shape_is_built_once_and_the_shapes_kept_are_bounded(
    fhir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.fhir import search

    monkeypatch.setattr(search, "_STATEMENTS", {})
    monkeypatch.setattr(search, "MAX_CACHED_SHAPES", 3)
    first = search._prepared(search._page_statement, "c1", search.parse("Observation", [("patient", "a")]))
    again = search._prepared(search._page_statement, "c2", search.parse("Observation", [("patient", "b")]))
    assert first[0] is again[0]
    assert (first[1]["clinic_id"], first[1]["v0"][:1], again[1]["clinic_id"], again[1]["v0"][:1]) == (
        "c1",
        ["a"],
        "c2",
        ["b"],
    )
    # every number of values is a shape of its own: a client sending many keeps at most MAX_CACHED_SHAPES
    for n in range(1, 8):
        codes = ",".join(f"x{i}" for i in range(n))
        response = fhir.get("/fhir/Observation", query_string={"code": codes})
        assert response.status_code == 200 and response.get_json()["total"] == 0
    assert len(search._STATEMENTS) == 3
    vital = fhir.get("/fhir/Observation", query_string={"category": "vital-signs,x1,x2,x3,x4,x5,x6,x7"})
    assert vital.status_code == 200 and vital.get_json()["total"] > 0  # a shape not kept is built and answered


@contextmanager
def _body_stored_as(fhir_app: Flask, rtype: str, rid: str, change: Callable[[str], str]) -> Iterator[str]:
    """The current version of ``rtype/rid`` holds ``change(its body)`` for the block, then its own body again.
    -> the changed body"""
    from sqlalchemy import select, update

    from service.adapters.fhir_store import fhir_resources as t

    where = (t.c.resource_type == rtype, t.c.id == rid, t.c.is_current.is_(True))
    engine = fhir_app.extensions["kapfhir.engine"]
    with engine.begin() as conn:
        original = conn.execute(select(t.c.body).where(*where)).scalar_one()
        changed = change(original)
        conn.execute(update(t).where(*where).values(body=changed))
    try:
        yield changed
    finally:
        with engine.begin() as conn:
            conn.execute(update(t).where(*where).values(body=original))


def _as_stored_before_versions(resource: dict) -> str:
    """The resource as bodies were stored before they carried meta.versionId and meta.lastUpdated."""
    meta = {k: v for k, v in resource["meta"].items() if k not in ("versionId", "lastUpdated")}
    return json.dumps({k: v for k, v in resource.items() if k != "meta"} | {"meta": meta})


def test_a_plain_read_sends_the_stored_bytes_and_they_equal_the_built_answer(fhir: Any, fhir_app: Flask) -> None:
    """A read without result parameters sends the stored body as it is; with ``_pretty`` the resource is parsed and
    built again: both say the same, headers included. A body stored before bodies carried their version is still
    served with the version of its row."""
    for rtype in ("Patient", "Observation", "Encounter", "CarePlan"):
        found = _entries(fhir.get(f"/fhir/{rtype}?_count=1").get_json())[0]
        plain, built = fhir.get(f"/fhir/{rtype}/{found['id']}"), fhir.get(f"/fhir/{rtype}/{found['id']}?_pretty=true")
        assert plain.status_code == built.status_code == 200
        assert plain.get_json() == built.get_json() == found
        for header in ("ETag", "Last-Modified", "Content-Type"):
            assert plain.headers[header] == built.headers[header]
        assert (
            fhir.get(f"/fhir/{rtype}/{found['id']}", headers={"If-None-Match": plain.headers["ETag"]}).status_code
            == 304
        )

    found = _entries(fhir.get("/fhir/Encounter?_count=1").get_json())[0]
    with _body_stored_as(fhir_app, "Encounter", found["id"], lambda _: _as_stored_before_versions(found)):
        again = fhir.get(f"/fhir/Encounter/{found['id']}")
        assert again.status_code == 200 and again.get_json() == found
        assert again.headers["ETag"] == f'W/"{found["meta"]["versionId"]}"'


def test_a_plain_search_page_carries_the_stored_bytes_and_equals_the_built_page(fhir: Any, fhir_app: Flask) -> None:
    """A search without _elements, _summary or _pretty puts each match's stored body into the page unparsed; with
    _pretty every match is parsed and built again: both pages say the same. A body stored before bodies carried
    their version is built as before, with the version of its row."""
    from sqlalchemy import select

    from service.adapters.fhir_store import fhir_resources as t

    search = "/fhir/Observation?category=vital-signs&_count=5"
    plain, built = fhir.get(search), fhir.get(search + "&_pretty=true")
    assert plain.status_code == built.status_code == 200
    page = plain.get_json()
    assert len(page["entry"]) == 5
    assert (page["entry"], page["total"]) == (built.get_json()["entry"], built.get_json()["total"])
    with fhir_app.extensions["kapfhir.engine"].connect() as conn:
        stored = (
            conn.execute(
                select(t.c.body).where(
                    t.c.resource_type == "Observation",
                    t.c.id.in_([e["resource"]["id"] for e in page["entry"]]),
                    t.c.is_current.is_(True),
                )
            )
            .scalars()
            .all()
        )
    assert len(stored) == 5 and all(body.encode() in plain.get_data() for body in stored)  # verbatim, as stored

    # unparsed: JSON whitespace a parse and a dump would drop goes out as stored
    second = page["entry"][1]["resource"]["id"]
    with _body_stored_as(
        fhir_app, "Observation", second, lambda b: b.replace('"lastUpdated":', '"lastUpdated": ', 1)
    ) as spaced:
        assert spaced.encode() in fhir.get(search).get_data()

    first = page["entry"][0]["resource"]
    with _body_stored_as(fhir_app, "Observation", first["id"], lambda _: _as_stored_before_versions(first)):
        assert fhir.get(search).get_json()["entry"] == page["entry"]


def test_an_amendment_gives_a_new_version_and_the_old_one_stays_readable(fhir: Any, fhir_app: Flask) -> None:
    ids = fhir_app.config["EPISODE_IDS"]["a-trd-iv-ketamine"]
    patient_id = ids["patient"]
    current = fhir.get(f"/api/v1/patients/{patient_id}").get_json()
    pat = _entries(fhir.get(f"/fhir/Patient?identifier={patient_id}").get_json())[0]
    amended = {k: v for k, v in current.items() if k not in ("id", "version", "recorded_at", "updated_at")}
    amended["name"] = {**amended["name"], "family": "Amended"}
    r = fhir.put(f"/api/v1/patients/{patient_id}", json={**amended, "amendment_reason": "typo"})
    assert r.status_code == 200, r.get_json()
    now = fhir.get(f"/fhir/Patient/{pat['id']}").get_json()
    assert int(now["meta"]["versionId"]) == int(pat["meta"]["versionId"]) + 1
    old = fhir.get(f"/fhir/Patient/{pat['id']}/_history/{pat['meta']['versionId']}").get_json()
    assert old["name"] == pat["name"] != now["name"]


# --- errors and isolation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/fhir/Nope", {}, 404),
        ("GET", "/fhir/Patient/unknown-id", {}, 404),
        ("PUT", "/fhir/Provenance/x", {"json": {}}, 405),
        ("DELETE", "/fhir/Flag/x", {}, 405),
        ("DELETE", "/fhir/Observation/unknown-id", {}, 404),
        ("GET", "/fhir/Patient?_format=xml", {}, 406),
        ("GET", "/fhir/Patient", {"headers": {"Accept": "application/xml"}}, 406),
        ("POST", "/fhir", {"data": "a=b", "content_type": "application/x-www-form-urlencoded"}, 415),
        ("POST", "/fhir", {"data": "{bad", "content_type": FHIR_JSON}, 400),
        ("GET", "/fhir/Patient?nonsense=1", {}, 400),
        ("GET", "/fhir/Observation?date=2024-13-99", {}, 400),
        (
            "POST",
            "/fhir",
            {
                "json": {
                    "resourceType": "Bundle",
                    "type": "transaction",
                    "entry": [
                        {"resource": {"resourceType": "Nonsense"}, "request": {"method": "POST", "url": "Nonsense"}}
                    ],
                }
            },
            400,
        ),
        (
            "POST",
            "/fhir",
            {
                "json": {
                    "resourceType": "Bundle",
                    "type": "transaction",
                    "entry": [
                        {
                            "resource": {"resourceType": "Patient", "foo": 1},
                            "request": {"method": "POST", "url": "Patient"},
                        }
                    ],
                }
            },
            400,
        ),
    ],
)
def test_errors_are_operation_outcomes(validator: Any, method: str, path: str, kwargs: dict, status: int) -> None:
    r = validator.open(path, method=method, **kwargs)
    assert r.status_code == status, r.get_data(as_text=True)
    body = r.get_json()
    assert r.mimetype == FHIR_JSON and body["resourceType"] == "OperationOutcome"
    if status == 405:
        assert "GET" in r.headers["Allow"]


def test_formats_accepted(validator: Any) -> None:
    for q in ("", "?_format=json", "?_format=application/fhir%2Bjson"):
        assert validator.get("/fhir/Patient" + q, headers={"Accept": "application/json"}).status_code == 200


def test_no_token_401_and_another_clinic_sees_nothing(fhir: Any, fhir_app: Flask) -> None:
    assert fhir.get("/fhir/Patient", headers={"Authorization": ""}).status_code == 401
    pat = _entries(fhir.get("/fhir/Patient?_count=1").get_json())[0]
    other = clinic_b(fhir_app)
    assert fhir.get(f"/fhir/Patient/{pat['id']}", headers=other).status_code == 404
    assert fhir.get("/fhir/Patient", headers=other).get_json()["total"] == 0
    mine = {e["resource"]["id"] for e in fhir.get("/fhir/AuditEvent?_count=200").get_json()["entry"]}
    theirs = {e["resource"]["id"] for e in fhir.get("/fhir/AuditEvent?_count=200", headers=other).get_json()["entry"]}
    assert mine and not mine & theirs


# --- transaction --------------------------------------------------------------------------------------------------


def _all_extensions(value: Any) -> list[dict]:
    found = []
    if isinstance(value, dict):
        found += [e for e in value.get("extension", []) if isinstance(e, dict)]
        for item in value.values():
            found += _all_extensions(item)
    elif isinstance(value, list):
        for item in value:
            found += _all_extensions(item)
    return found


def _comparable(resource: dict) -> dict:
    """The clinical content: an episode recreated through the use cases is recorded anew, with its own record
    versions and recording times (the record-metadata extension) and its own FHIR versions."""
    out = json.loads(json.dumps(resource))
    out.get("meta", {}).pop("versionId", None)
    out.get("meta", {}).pop("lastUpdated", None)
    for ext in out.get("extension", []):
        if ext.get("url", "").endswith("/record-metadata"):
            ext["extension"] = [e for e in ext["extension"] if e["url"] not in ("version", "recorded")]
    if out["resourceType"] == "DetectedIssue":  # when this server's rules raised and resolved the flag
        out.pop("identifiedDateTime", None)
        out["extension"] = [e for e in out.get("extension", []) if not e["url"].endswith("/resolved-at")]
    if str(out.get("questionnaire", "")).endswith("spravato-rems-patient-monitoring"):
        out.pop("authored", None)  # the REMS form as derived by this server: when it recorded the sending
    if out["resourceType"] == "Task":  # a REMS sending recorded here anew: its own id and recording time
        out.pop("lastModified", None)
        for part in _all_extensions(out):
            if part.get("url", "").endswith("rems-form-submission"):
                part["extension"] = [e for e in part["extension"] if e["url"] not in ("id", "recorded")]
    return out


def test_each_fixture_transaction_recreates_the_episode_in_an_empty_instance(
    fhir: Any, fhir_app: Flask, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with app_on(request, fhir_app.config["BACKEND"], tmp_path, "empty") as empty:
        _recreate_each_episode(fhir, fhir_app, empty.test_client())


def _recreate_each_episode(fhir: Any, fhir_app: Flask, target: Any) -> None:
    for name, ids in sorted(fhir_app.config["EPISODE_IDS"].items()):
        bundle = fhir.get(f"/api/v1/episodes/{ids['episode']}/fhir").get_data()
        r = target.post("/fhir", data=bundle, content_type=FHIR_JSON)
        assert r.status_code == 200, (name, r.get_data(as_text=True)[:2000])
        response = r.get_json()
        assert response["type"] == "transaction-response"
        assert all(e["response"]["etag"].startswith('W/"') for e in response["entry"] if "etag" in e["response"])
        again = target.post("/fhir", data=bundle, content_type=FHIR_JSON).get_json()
        # the same resources (a Provenance is one per write: the second post writes nothing)
        sent_types = [e["resource"]["resourceType"] for e in json.loads(bundle)["entry"]]
        assert [
            e["response"].get("location") for e, t in zip(again["entry"], sent_types, strict=True) if t != "Provenance"
        ] == [
            e["response"].get("location")
            for e, t in zip(response["entry"], sent_types, strict=True)
            if t != "Provenance"
        ]
        assert all(e["response"]["status"] == "200 OK" for e in again["entry"]), name
        for entry in json.loads(bundle)["entry"]:
            res = entry["resource"]
            if res["resourceType"] == "Provenance":
                continue
            ident = res["identifier"][0] if isinstance(res["identifier"], list) else res["identifier"]
            if "identifier" not in registry.TYPES[res["resourceType"]].params:
                continue
            q = {"identifier": f"{ident['system']}|{ident['value']}"}
            mine = fhir.get(f"/fhir/{res['resourceType']}", query_string=q)
            theirs = target.get(f"/fhir/{res['resourceType']}", query_string=q)
            assert mine.status_code == theirs.status_code == 200, (name, res["resourceType"], mine.status_code)
            assert _entries(mine.get_json()), (name, res["resourceType"])
            assert [_comparable(x) for x in _entries(mine.get_json())] == [
                _comparable(x) for x in _entries(theirs.get_json())
            ], (name, res["resourceType"])


# --- $validate ----------------------------------------------------------------------------------------------------


def _issues(fhir: Any, resource: Any, rtype: str | None = None) -> list[dict]:
    path = f"/fhir/{rtype}/$validate" if rtype else "/fhir/$validate"
    r = fhir.post(path, json=resource)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()["issue"]


@pytest.mark.parametrize("path", sorted(INVALID.glob("*.json")), ids=lambda p: p.stem)
def test_invalid_fixture_reports_its_expressions(validator: Any, path: Path) -> None:
    case = json.loads(path.read_text())
    issues = [i for i in _issues(validator, case["resource"]) if i["severity"] in ("error", "fatal", "warning")]
    named = {e for i in issues for e in i.get("expression", [])}
    assert set(case["expected_expressions"]) <= named, issues
    assert all(i.get("diagnostics") and i.get("code") for i in issues)


def test_every_structuredefinition_constraint_has_an_invalid_fixture() -> None:
    covered = {json.loads(p.read_text()).get("constraint") for p in INVALID.glob("*.json")}
    assert {c["key"] for _, _, c in sd_constraints()} <= covered


def test_valid_exports_have_no_errors_and_a_dose_without_consent_is_reported(validator: Any, sqlite_app: Flask) -> None:
    fhir, fhir_app = validator, sqlite_app
    for ids in fhir_app.config["EPISODE_IDS"].values():
        bundle = json.loads(fhir.get(f"/api/v1/episodes/{ids['episode']}/fhir?type=collection").get_data())
        assert not [i for i in _issues(fhir, bundle) if i["severity"] in ("error", "fatal")]
    ids = fhir_app.config["EPISODE_IDS"]["a-trd-iv-ketamine"]
    bundle = json.loads(fhir.get(f"/api/v1/episodes/{ids['episode']}/fhir?type=collection").get_data())
    consents = {e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Consent"}
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Consent"]
    for entry in bundle["entry"]:  # the Provenance covering the consents points at them: a urn:uuid must resolve
        if entry["resource"]["resourceType"] == "Provenance":
            entry["resource"]["target"] = [t for t in entry["resource"]["target"] if t.get("reference") not in consents]
    found = [i for i in _issues(fhir, bundle) if i["code"] == "business-rule"]
    assert any("dose-without-active-consent" in i["diagnostics"] for i in found)
    assert all(i["expression"][0].startswith("Bundle.entry[") for i in found)


def test_us_core_examples_of_served_types_have_no_error(validator: Any) -> None:
    fhir = validator
    directory = Path(os.environ.get("KAPFHIR_US_CORE_DIR", ROOT.parent / "shared" / "us-core-6.1.0")) / "examples"
    if not directory.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"US Core examples missing at {directory}")
        pytest.skip(f"US Core examples not found at {directory} (set KAPFHIR_US_CORE_DIR)")
    failures = {}
    for path in sorted(directory.glob("*.json")):
        resource = json.loads(path.read_text())
        if resource.get("resourceType") not in registry.TYPES:
            continue
        errors = [i for i in _issues(fhir, resource) if i["severity"] in ("error", "fatal")]
        if errors:
            failures[path.name] = errors
    assert failures == {}

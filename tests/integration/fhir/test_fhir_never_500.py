"""Bad input never answers 5xx on /fhir: a whole episode exported as a transaction, with one element of one entry
(or of the entry itself: fullUrl, request) replaced by a value of the wrong shape, posted as a transaction, as a
batch, as a create and to $validate, on SQLite and PostgreSQL. Mutating the bench's transaction this way found five
500s (tests in test_fhir_errors.py name each)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.fhir.fhir_support import BACKENDS, FHIR_JSON, app_on, load_episodes

WRONG_SHAPES = [None, 0, -1, 2.5, 1e308, "", "x", "2020-13-45", [], {}, [1], ["x"], [{}], [None], {"a": 1}, True]


@pytest.fixture(scope="module", params=BACKENDS)
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict]]:
    app: Flask
    with app_on(request, request.param, tmp_path_factory.mktemp("never-500"), "never500") as app:
        ids = load_episodes(app)["a-trd-iv-ketamine"]
        client = app.test_client()
        bundle = client.get(f"/api/v1/episodes/{ids['episode']}/fhir?type=transaction").get_json()
        assert bundle["type"] == "transaction" and bundle["entry"]
        yield client, bundle


def _paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    if prefix:
        yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "resourceType":
                yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node[:2]):
            yield from _paths(value, (*prefix, i))


def _replaced(node: Any, path: tuple, value: Any) -> Any:
    out = copy.deepcopy(node)
    parent = out
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return out


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_an_element_of_the_wrong_shape_anywhere_in_a_transaction_is_a_4xx(exported: tuple[Any, dict], data: Any):
    client, bundle = exported
    position = data.draw(st.integers(0, len(bundle["entry"]) - 1), label="entry")
    entry = bundle["entry"][position]
    path = data.draw(st.sampled_from(list(_paths(entry))), label="path")
    value = data.draw(st.sampled_from(WRONG_SHAPES), label="value")
    changed = _replaced(entry, path, value)
    for kind in ("transaction", "batch"):
        sent = {
            **bundle,
            "type": kind,
            "entry": [*bundle["entry"][:position], changed, *bundle["entry"][position + 1 :]],
        }
        r = client.post("/fhir", data=json.dumps(sent), content_type=FHIR_JSON)
        assert r.status_code < 500, (kind, path, value, r.get_data(as_text=True)[:500])
    resource = changed.get("resource")
    if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
        rtype = resource["resourceType"]
        for url in (f"/fhir/{rtype}", f"/fhir/{rtype}/$validate"):
            r = client.post(url, data=json.dumps(resource), content_type=FHIR_JSON)
            assert r.status_code < 500, (url, path, value, r.get_data(as_text=True)[:500])

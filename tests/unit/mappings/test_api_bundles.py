"""The Bundles of the /fhir API, built in mappings/bundle.py: search and history pages, their links, and the answer
to a transaction or batch. Each is checked against FHIR R4 (fhir.resources) and for what it must say."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
from fhir.resources.R4B.bundle import Bundle

from mappings.bundle import (
    collection_of,
    history_bundle,
    history_entry,
    outcome_entry,
    page_links,
    response_bundle,
    search_entry,
    searchset_page,
    written_entry,
)
from mappings.resources import operation_outcome

BASE = "https://kapfhir.example.org/fhir"
WHEN = "2026-11-02T10:00:00Z"


def _patient(version: str) -> dict:
    return {"resourceType": "Patient", "id": "p1", "meta": {"versionId": version, "lastUpdated": WHEN}}


def _links(links: list[dict]) -> dict[str, dict[str, str]]:
    return {link["relation"]: dict(parse_qsl(urlsplit(link["url"]).query)) for link in links}


def test_a_middle_page_links_to_the_next_and_previous_offsets_keeping_the_query() -> None:
    links = _links(page_links(f"{BASE}/Observation", [("code", "x"), ("_offset", "10")], total=45, count=10, offset=10))
    assert links["self"] == {"code": "x", "_offset": "10"}
    assert links["next"] == {"code": "x", "_offset": "20"}
    assert links["previous"] == {"code": "x", "_offset": "0"}


@pytest.mark.parametrize(
    ("total", "count", "offset", "relations"),
    [
        (5, 10, 0, ["self"]),  # one page holds all
        (20, 10, 10, ["self", "previous"]),  # the last page
        (20, 0, 0, ["self"]),  # _count=0 asks only the total: no next page
        (20, 10, 3, ["self", "next", "previous"]),  # previous is held at offset 0
    ],
)
def test_page_links_by_position(total: int, count: int, offset: int, relations: list[str]) -> None:
    links = page_links(f"{BASE}/Patient", [], total=total, count=count, offset=offset)
    assert [link["relation"] for link in links] == relations
    assert links[0]["url"] == f"{BASE}/Patient"
    if "previous" in relations:
        assert _links(links)["previous"]["_offset"] == str(max(offset - count, 0))


def test_a_searchset_page_is_a_valid_bundle_with_matches_and_includes() -> None:
    entries = [search_entry(BASE, _patient("1"), "match"), search_entry(BASE, _patient("1"), "include")]
    bundle = searchset_page(entries, 1, page_links(f"{BASE}/Patient", [], 1, 20, 0), WHEN)
    Bundle.model_validate(bundle)
    assert bundle["type"] == "searchset" and bundle["total"] == 1
    assert [e["search"]["mode"] for e in bundle["entry"]] == ["match", "include"]
    assert bundle["entry"][0]["fullUrl"] == f"{BASE}/Patient/p1"


def test_a_searchset_without_total_or_matches_leaves_both_out() -> None:
    bundle = searchset_page([], None, [{"relation": "self", "url": f"{BASE}/Patient"}], WHEN)
    Bundle.model_validate(bundle)
    assert "total" not in bundle and "entry" not in bundle
    assert list(bundle) == ["resourceType", "meta", "type", "link"]


def test_the_first_version_is_a_create() -> None:
    entry = history_entry(BASE, _patient("1"))
    assert entry["request"] == {"method": "POST", "url": "Patient"}
    assert entry["response"]["status"] == "201 Created"


def test_a_later_version_is_an_update_of_the_resource() -> None:
    bundle = history_bundle([history_entry(BASE, _patient("3"))], 3, [], WHEN)
    Bundle.model_validate(bundle)
    entry = bundle["entry"][0]
    assert bundle["type"] == "history" and bundle["total"] == 3
    assert entry["request"] == {"method": "PUT", "url": "Patient/p1"}
    assert entry["response"] == {"status": "200 OK", "etag": 'W/"3"', "lastModified": WHEN}


def test_a_batch_response_answers_each_entry_in_order() -> None:
    refused = operation_outcome.operation_outcome([operation_outcome.issue("error", "invalid", "no", "Patient.id")])
    entries = [
        written_entry("Patient", "p1", True, 1, WHEN),
        written_entry("Observation", "o1", False),
        outcome_entry("400", refused),
        outcome_entry("200 OK", operation_outcome.information("nothing to store")),
    ]
    bundle = response_bundle("batch", entries)
    Bundle.model_validate(bundle)
    assert bundle["type"] == "batch-response"
    first, second, third, fourth = (e["response"] for e in bundle["entry"])
    assert first == {
        "status": "201 Created",
        "location": "Patient/p1/_history/1",
        "etag": 'W/"1"',
        "lastModified": WHEN,
    }
    assert second == {"status": "200 OK", "location": "Observation/o1"}
    assert third["status"] == "400" and third["outcome"]["issue"][0]["expression"] == ["Patient.id"]
    assert fourth["outcome"]["issue"][0]["severity"] == "information"
    assert response_bundle("transaction", [])["type"] == "transaction-response"


def test_a_collection_holds_the_entries_as_given() -> None:
    entries = [{"fullUrl": "urn:uuid:write", "resource": {"resourceType": "Patient"}}]
    bundle = collection_of(entries)
    Bundle.model_validate(bundle)
    assert bundle == {"resourceType": "Bundle", "type": "collection", "entry": entries}

"""What a hostile tester sent (issue 14), over real HTTP against gunicorn as the image starts it, on SQLite and on
PostgreSQL: every input answers 4xx (problem+json on /api/v1, an OperationOutcome on /fhir), never a 500, and the
service still answers afterwards."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
import requests
from sqlalchemy import create_engine, select

from service.adapters import orm
from service.config import Settings
from service.entrypoints.cli import ensure_clinic
from tests.e2e.security.hostile import BASE_URL, raw_request, signed, started_service, token
from tests.support.processes import RunningService

pytestmark = pytest.mark.e2e

FHIR_JSON = "application/fhir+json"


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def hostile(request: pytest.FixtureRequest) -> Iterator[tuple[RunningService, str]]:
    with started_service(request, request.param) as running:
        yield running


@pytest.fixture(scope="module")
def http(hostile: tuple[RunningService, str]) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token(hostile[0])}"
    return session


def _url(hostile: tuple[RunningService, str], path: str) -> str:
    return hostile[0].base_url + path


def _assert_refused(response: requests.Response, *statuses: int) -> None:
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    body = response.json()
    if "/fhir" in response.request.path_url[:6]:
        assert response.headers["Content-Type"].startswith(FHIR_JSON)
        assert body["resourceType"] == "OperationOutcome" and body["issue"]
    else:
        assert response.headers["Content-Type"].startswith("application/problem+json")
        assert body["status"] == response.status_code
    assert "Retry-After" not in response.headers


def _still_serves(hostile: tuple[RunningService, str], http: requests.Session) -> None:
    assert requests.get(_url(hostile, "/healthz"), timeout=5).status_code == 200
    assert http.get(_url(hostile, "/api/v1/patients"), timeout=10).status_code == 200


def _patient_bundle(**patient: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "Patient",
        "identifier": [{"system": "https://hostile.example.org/mrn", "value": uuid.uuid4().hex[:12]}],
        "name": [{"family": "Hostile", "given": ["Test"]}],
        "birthDate": "1980-01-01",
        "gender": "female",
        **patient,
    }
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": resource,
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }


def _api_patient(**fields: Any) -> dict[str, Any]:
    return {
        "mrn": {"system": "https://hostile.example.org/mrn", "value": uuid.uuid4().hex[:12]},
        "name": {"family": "Hostile", "given": ["Test"]},
        "birth_date": "1980-01-01",
        "gender": "female",
        **fields,
    }


# --- NUL, lone surrogates ------------------------------------------------------------------------------------------

SEARCHES_WITH_NUL = [
    "/fhir/Patient?name=a%00b",
    "/fhir/Patient?identifier=https://x.org%7Ca%00",
    "/fhir/Observation?subject=Patient/a%00",
    "/fhir/Patient/a%00b",
    "/api/v1/episodes?patient_id=a%00b",
]


@pytest.mark.parametrize("path", SEARCHES_WITH_NUL)
def test_a_nul_in_a_search_value_or_id_answers_400(hostile, http, path):
    _assert_refused(http.get(_url(hostile, path), timeout=10), 400)
    _still_serves(hostile, http)


@pytest.mark.parametrize("text", ["a\x00b", "\ud800"])
def test_nul_or_a_lone_surrogate_in_a_name_or_mrn_answers_400_on_both_doors(hostile, http, text):
    escaped = json.dumps(text)  # "\u0000" / "\ud800" as JSON escapes, as a client would send them
    api_body = json.dumps(_api_patient()).replace('"Hostile"', escaped)
    response = http.post(
        _url(hostile, "/api/v1/patients"), data=api_body, headers={"Content-Type": "application/json"}, timeout=10
    )
    _assert_refused(response, 400)
    bundle = _patient_bundle()
    bundle["entry"][0]["resource"]["identifier"][0]["value"] = "MRN-PLACEHOLDER"
    fhir_body = json.dumps(bundle).replace('"MRN-PLACEHOLDER"', escaped)
    response = http.post(_url(hostile, "/fhir"), data=fhir_body, headers={"Content-Type": FHIR_JSON}, timeout=10)
    _assert_refused(response, 400)
    assert any(
        "Bundle" in (i.get("expression") or [""])[0] or "entry" in json.dumps(i) for i in response.json()["issue"]
    )
    _still_serves(hostile, http)


# --- over-long values: the same limits on /api/v1 and /fhir -------------------------------------------------------


@pytest.mark.parametrize(
    ("element", "patient"),
    [
        ("identifier[0].value", {"identifier": [{"system": "https://hostile.example.org/mrn", "value": "9" * 101}]}),
        ("identifier[0].system", {"identifier": [{"system": "https://x.org/" + "s" * 500, "value": "1"}]}),
        ("name[0].family", {"name": [{"family": "F" * 900_000}]}),
        ("name[0].given[0]", {"name": [{"family": "F", "given": ["G" * 101]}]}),
    ],
)
def test_over_long_identifiers_and_names_through_post_fhir_answer_422_naming_the_element(
    hostile, http, element, patient
):
    response = http.post(_url(hostile, "/fhir"), json=_patient_bundle(**patient), timeout=30)
    _assert_refused(response, 422)
    expressions = [e for issue in response.json()["issue"] for e in issue.get("expression", [])]
    assert any(e.endswith(element) for e in expressions), expressions
    _still_serves(hostile, http)


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("mrn.value", _api_patient(mrn={"system": "https://hostile.example.org/mrn", "value": "9" * 101})),
        ("mrn.system", _api_patient(mrn={"system": "https://x.org/" + "s" * 500, "value": "1"})),
        ("name.family", _api_patient(name={"family": "F" * 900_000})),
    ],
)
def test_the_same_values_through_api_v1_answer_422(hostile, http, field, body):
    response = http.post(_url(hostile, "/api/v1/patients"), json=body, timeout=30)
    _assert_refused(response, 422)
    assert field in {e["field"] for e in response.json()["errors"]}


# --- numbers that are not ASCII digits, or too large ---------------------------------------------------------------

NUMBERS = ["%C2%B2", "%D9%A3", "9223372036854775808", "99999999999999999999999", "-1", "1e3", "5000000"]


@pytest.mark.parametrize("value", NUMBERS)
@pytest.mark.parametrize("name", ["_count", "_offset"])
def test_count_and_offset_that_are_not_small_ascii_integers_answer_400(hostile, http, name, value):
    if (name, value) == ("_count", "5000000"):  # a large count is capped at 200, not refused
        assert http.get(_url(hostile, f"/fhir/Patient?{name}={value}"), timeout=10).status_code == 200
        return
    _assert_refused(http.get(_url(hostile, f"/fhir/Patient?{name}={value}"), timeout=10), 400)
    _assert_refused(http.get(_url(hostile, f"/fhir/Patient/_history?{name}={value}"), timeout=10), 400)


@pytest.mark.parametrize("value", NUMBERS)
def test_a_vread_version_that_is_not_a_small_ascii_integer_answers_404(hostile, http, value):
    created = http.post(_url(hostile, "/fhir"), json=_patient_bundle(), timeout=30)
    assert created.status_code == 200, created.text
    location = created.json()["entry"][0]["response"]["location"].split("/_history")[0]
    _assert_refused(http.get(_url(hostile, f"/fhir/{location}/_history/{value}"), timeout=10), 404)
    # the same numbers as an If-Match version on /api/v1 (header values are Latin-1: the percent-decoded bytes)
    patient = http.post(_url(hostile, "/api/v1/patients"), json=_api_patient(), timeout=10).json()
    header = unquote_to_bytes(value).decode("latin-1")
    amended = http.put(
        _url(hostile, f"/api/v1/patients/{patient['id']}"),
        json={**_api_patient(mrn=patient["mrn"]), "amendment_reason": "test"},
        headers={"If-Match": f'W/"{header}"'},
        timeout=10,
    )
    _assert_refused(amended, 400, 412)


# --- dates at the ends of the calendar: valid, so answered (never a 500) ----------------------------------------------


@pytest.mark.parametrize("value", ["9999-12-31", "0001-01-01T00:00:00%2B14:00", "9999", "ge9999-12-31T23:59:59-14:00"])
def test_search_dates_at_the_ends_of_the_calendar_are_answered(hostile, http, value):
    for path in (
        f"/fhir/Observation?date={value}",
        f"/fhir/Patient?_lastUpdated={value}",
        f"/fhir/AuditEvent?date={value}",
    ):
        response = http.get(_url(hostile, path), timeout=10)
        assert response.status_code == 200, (path, response.text[:300])
        assert response.json()["resourceType"] == "Bundle"


# --- references, LIKE wildcards --------------------------------------------------------------------------------------


def test_a_reference_ending_in_a_backslash_and_like_wildcards_match_only_themselves(hostile, http):
    for path in ("/fhir/Observation?subject=abc%5C", "/fhir/Observation?patient=%5C"):
        response = http.get(_url(hostile, path), timeout=10)
        assert response.status_code == 200 and response.json()["total"] == 0, response.text[:300]
    created = http.post(_url(hostile, "/fhir"), json=_patient_bundle(name=[{"family": "Wildcard"}]), timeout=30)
    assert created.status_code == 200, created.text
    assert http.get(_url(hostile, "/fhir/Patient?name=Wild"), timeout=10).json()["total"] >= 1
    for wildcard in ("%25", "_", "W_ldcard", "%25ildcard"):
        found = http.get(_url(hostile, f"/fhir/Patient?name={wildcard}"), timeout=10)
        assert found.status_code == 200 and found.json()["total"] == 0, (wildcard, found.json()["total"])


# --- deep JSON -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/fhir", "/fhir/$validate", "/fhir/Patient/$validate", "/api/v1/patients"])
def test_json_nested_5000_deep_answers_400_before_any_check_parses_it(hostile, http, path):
    deep = '{"resourceType":"Bundle","entry":' + "[" * 5000 + "]" * 5000 + "}"
    response = http.post(
        _url(hostile, path),
        data=deep,
        headers={"Content-Type": FHIR_JSON if "fhir" in path else "application/json"},
        timeout=30,
    )
    _assert_refused(response, 400)
    _still_serves(hostile, http)


# --- the edge: request ids, headers, URLs, bodies -----------------------------------------------------------------


def test_an_over_long_or_binary_request_id_is_replaced_not_stored(hostile, http):
    for given in ("r" * 8000, "a b", "é" * 10):
        response = http.get(
            _url(hostile, "/api/v1/patients"), headers={"X-Request-ID": given.encode().decode("latin-1")}, timeout=10
        )
        assert response.status_code == 200
        assert response.headers["X-Request-ID"] != given and uuid.UUID(response.headers["X-Request-ID"])
    kept = http.get(_url(hostile, "/api/v1/patients"), headers={"X-Request-ID": "trace-1234"}, timeout=10)
    assert kept.headers["X-Request-ID"] == "trace-1234"


def test_gunicorn_limits_answer_problem_json(hostile, http):
    port = hostile[0].port
    token_16k = "Bearer " + "a" * 16_384
    response = http.get(_url(hostile, "/api/v1/patients"), headers={"Authorization": token_16k}, timeout=10)
    _assert_refused(response, 401)  # a 16 kB token reaches the token check (README) and fails there
    long_url = raw_request(port, b"GET /fhir/Patient?name=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert long_url.startswith(b"HTTP/1.1 414") and b"application/problem+json" in long_url, long_url[:200]
    big_header = raw_request(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 30_000 + b"\r\n\r\n")
    assert big_header.startswith(b"HTTP/1.1 431") and b"application/problem+json" in big_header, big_header[:200]
    _still_serves(hostile, http)


def test_a_chunked_body_over_the_limit_answers_413(hostile, http):
    def chunks() -> Iterator[bytes]:
        for _ in range(32):  # 2 MiB in 64 kB chunks, no Content-Length
            yield b" " * 65_536

    for path in ("/fhir", "/api/v1/patients"):
        response = requests.post(  # a connection of its own: the server closes it after refusing the body
            _url(hostile, path),
            data=chunks(),
            headers={
                "Content-Type": FHIR_JSON if path == "/fhir" else "application/json",
                "Authorization": http.headers["Authorization"],
            },
            timeout=30,
        )
        _assert_refused(response, 413)
    _still_serves(hostile, http)


def test_links_and_token_urls_come_from_the_base_url_never_from_host(hostile, http):
    evil = {"Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    capability = requests.get(_url(hostile, "/fhir/metadata"), headers=evil, timeout=10)
    assert "evil.example" not in capability.text and f"{BASE_URL}/oauth2/token" in capability.text
    bundle = http.get(_url(hostile, "/fhir/Patient?_count=1"), headers=evil, timeout=10).json()
    assert bundle["link"] and all(link["url"].startswith(f"{BASE_URL}/fhir/Patient") for link in bundle["link"])
    smart = requests.get(_url(hostile, "/.well-known/smart-configuration"), headers=evil, timeout=10)
    assert "evil.example" not in smart.text


def test_retry_after_only_on_429_and_503(hostile, http):
    for path in ("/healthz", "/api/v1/patients", "/fhir/Patient", "/fhir/metadata"):
        response = http.get(_url(hostile, path), timeout=10)
        assert response.status_code == 200 and "Retry-After" not in response.headers
        assert not any(h.lower().startswith("x-ratelimit") for h in response.headers)


# --- tokens -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": "9999999999"},
        {"nbf": "0"},
        {"iat": "0"},
        {"exp": True},
        {"kapfhir_clinic": "not-registered"},
        {"kapfhir_clinic": "c" * 65},
        {"client_id": "x" * 201},
    ],
    ids=["exp-string", "nbf-string", "iat-string", "exp-bool", "unregistered-clinic", "long-clinic", "long-client"],
)
def test_tokens_with_non_numeric_times_or_unknown_or_over_long_ids_answer_401(hostile, claims):
    response = requests.get(
        _url(hostile, "/api/v1/patients"),
        headers={"Authorization": f"Bearer {signed(hostile[0], **claims)}"},
        timeout=10,
    )
    _assert_refused(response, 401)
    assert "invalid_token" in response.headers["WWW-Authenticate"]


def test_every_answer_is_audited_400s_included(hostile, http):
    request_id = f"audit-{uuid.uuid4().hex}"
    response = http.get(_url(hostile, "/fhir/Patient?_count=%C2%B2"), headers={"X-Request-ID": request_id}, timeout=10)
    assert response.status_code == 400
    engine = create_engine(hostile[1])
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(orm.audit_events).where(orm.audit_events.c.request_id == request_id)).all()
    finally:
        engine.dispose()
    assert [(r.status, r.outcome, r.clinic_id) for r in rows] == [(400, "4", "demo")]


def test_a_second_clinic_registered_later_is_accepted(hostile):
    ensure_clinic(Settings(database_url=hostile[1]), "clinic-later", "Later", "https://later.example.org/fhir/id")
    response = requests.get(
        _url(hostile, "/api/v1/patients"),
        headers={"Authorization": f"Bearer {token(hostile[0], clinic='clinic-later')}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def test_a_search_value_over_1000_characters_answers_400_and_a_full_identifier_fits(hostile, http):
    _assert_refused(http.get(_url(hostile, "/fhir/Patient?name=" + "a" * 1001), timeout=10), 400)
    longest = "https://x.org/" + "s" * 486 + "|" + "9" * 100  # the longest system and value stored
    assert http.get(_url(hostile, f"/fhir/Patient?identifier={longest}"), timeout=10).status_code == 200


@pytest.mark.parametrize("client_id", ["a\x00b", "c" * 5000, "\udc80"])
def test_the_token_endpoint_refuses_unstorable_client_ids_with_4xx(hostile, client_id):
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": "x"}
    body = "&".join(f"{k}={requests.utils.quote(v, errors='surrogatepass')}" for k, v in form.items())
    response = requests.post(
        _url(hostile, "/oauth2/token"),
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert 400 <= response.status_code < 500, response.text[:300]
    assert requests.get(_url(hostile, "/healthz"), timeout=5).status_code == 200

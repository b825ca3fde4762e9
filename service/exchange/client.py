"""A FHIR R4 REST client on ``requests`` for pushing to and pulling from one target.

* One :class:`requests.Session` per client (connection reuse); connect and read timeouts on every request.
* Retries with exponential backoff and full jitter on connection errors, timeouts, 429 and 5xx (500, 502, 503,
  504 by default), honouring ``Retry-After`` (delta-seconds or HTTP date), capped by ``retry_after_cap``; the
  number of attempts and the total time spent are bounded.
* TLS verification is always on; ``ca_bundle`` names a custom CA bundle (PEM) for private PKI.
* ``Accept``/``Content-Type: application/fhir+json``; a server answering ``application/json`` (seen on
  ``/metadata``) or with no content type is read as JSON all the same.
* Errors carry the server's OperationOutcome: :class:`FhirHttpError` (status, outcome, method, url),
  :class:`FhirTransportError` (no usable answer after the retries).
* Authentication is delegated to an :class:`service.exchange.auth.Auth`; on a 401 the client asks it to renew
  once (``auth.renew()``) and repeats the request once.

Almost every request the push layer sends is idempotent (conditional create, conditional update, update by id,
transactions made of those), so retrying after an ambiguous failure (timeout, reset) cannot duplicate data. The
exception, a plain create where no condition fits (and a Bundle holding one), is sent with ``idempotent=False``.
Pass ``idempotent=False`` for anything else: such a request is then retried only when the server
certainly did not process it (connection refused / connect timeout, 429, 503).
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
DEFAULT_USER_AGENT = "kapfhir-exchange/0.1"
_ETAG_VERSION = re.compile(r'^(?:W/)?"?([^"]+)"?$')
_HISTORY = re.compile(r"(?:^|/)([A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?/?$")


# ------------------------------------------------------------------------------------------------- errors


class FhirError(Exception):
    """Base class of exchange errors."""


class FhirTransportError(FhirError):
    """No HTTP answer (connection refused/reset, timeout, TLS error) after every allowed attempt."""

    def __init__(self, message: str, *, method: str, url: str, attempts: int) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.attempts = attempts

    @property
    def retryable(self) -> bool:
        return True


class FhirHttpError(FhirError):
    """The server answered with an error status. ``outcome`` is its OperationOutcome when it sent one."""

    def __init__(
        self,
        status: int,
        *,
        method: str,
        url: str,
        outcome: dict | None = None,
        body: str = "",
        headers: Mapping[str, str] | None = None,
        attempts: int = 1,
    ) -> None:
        self.status = status
        self.method = method
        self.url = url
        self.outcome = outcome
        self.body = body[:2000]
        self.headers = dict(headers or {})
        self.attempts = attempts
        super().__init__(f"{method} {_redact(url)} -> {status}: {self.diagnostics or self.body[:200]}")

    @property
    def diagnostics(self) -> str:
        """The OperationOutcome's issues as one line (severity, code, diagnostics or details text)."""
        if not self.outcome:
            return ""
        parts = []
        for issue in self.outcome.get("issue", []) or []:
            text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
            parts.append(f"{issue.get('severity', '?')}/{issue.get('code', '?')}: {text}".strip())
        return "; ".join(parts)

    @property
    def retryable(self) -> bool:
        return retryable_status(self.status)


def retryable_status(status: int) -> bool:
    """A status worth sending the same request again for: a timeout (408), a rate limit (429) or a server error."""
    return status in (408, 429) or status >= 500


def _redact(url: str) -> str:
    """The URL without its query (queries carry identifiers, i.e. PHI)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?…" if parts.query else "")


def transport_cause(exc: Exception) -> str:
    """Why no HTTP answer came, in words an operator acts on (never the URL's query: identifiers are PHI)."""
    text = str(exc).lower()
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "no answer before the read timeout"
    if "refused" in text:
        return "connection refused: nothing listens there"
    if any(s in text for s in ("name or service not known", "nodename nor servname", "name resolution", "getaddrinfo")):
        return "host name not found"
    if "reset" in text or "remotedisconnected" in text or "aborted" in text:
        return "connection closed by the server"
    return "no answer"


# ----------------------------------------------------------------------------------------------- retries


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: at most ``max_attempts`` tries and ``max_elapsed`` seconds of waiting in total."""

    max_attempts: int = 5
    backoff_base: float = 0.5  # seconds; attempt n waits up to base * 2**(n-1) (full jitter)
    backoff_max: float = 30.0
    retry_after_cap: float = 60.0  # a longer Retry-After is shortened to this
    max_elapsed: float = 120.0  # total sleep budget over all attempts
    retry_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})
    jitter: bool = True

    def backoff(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** max(0, attempt - 1)))
        return ceiling * rng() if self.jitter else ceiling


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; ``None`` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


# --------------------------------------------------------------------------------------------- responses


@dataclass
class FhirResponse:
    status: int
    headers: dict[str, str]
    body: Any  # parsed JSON (dict) or None
    url: str
    attempts: int = 1

    @property
    def location(self) -> str | None:
        return self.headers.get("Location") or self.headers.get("Content-Location")

    @property
    def etag(self) -> str | None:
        return self.headers.get("ETag")


@dataclass(frozen=True)
class RemoteIdentity:
    """Where a resource lives on the server: its type, logical id and (when known) version id."""

    resource_type: str
    id: str
    version: str | None = None

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.id}"


def version_from_etag(etag: str | None) -> str | None:
    if not etag:
        return None
    match = _ETAG_VERSION.match(etag.strip())
    return match.group(1) if match else None


def identity_from_location(location: str | None) -> RemoteIdentity | None:
    """``[base]/Type/id[/_history/vid]`` (absolute or relative) to a :class:`RemoteIdentity`."""
    if not location:
        return None
    path = urlsplit(location).path if "://" in location else location.split("?", 1)[0]
    match = _HISTORY.search(path)
    if not match:
        return None
    return RemoteIdentity(match.group(1), match.group(2), match.group(3))


def identity_of(
    resource_type: str, *, headers: Mapping[str, str] | None = None, body: Any = None, location: str | None = None
) -> RemoteIdentity | None:
    """Best identity from a write answer: Location, else the returned resource's id/meta, with the ETag version."""
    headers = headers or {}
    ident = identity_from_location(location or headers.get("Location") or headers.get("Content-Location"))
    version = version_from_etag(headers.get("ETag"))
    if isinstance(body, dict) and body.get("resourceType") == resource_type and body.get("id"):
        body_version = (body.get("meta") or {}).get("versionId")
        if ident is None or ident.id == body["id"]:
            ident = RemoteIdentity(resource_type, body["id"], (ident.version if ident else None) or body_version)
    if ident is None:
        return None
    if ident.resource_type != resource_type:
        return None
    return RemoteIdentity(ident.resource_type, ident.id, ident.version or version)


# ------------------------------------------------------------------------------------------------ client


@dataclass
class Learned:
    """What the target refused during this process, so later pushes through this client avoid it up front:
    profile claims (canonical URLs) and types whose client-assigned ids (PUT to a new id) were refused."""

    refused_profiles: set[str] = field(default_factory=set)
    no_client_ids: set[str] = field(default_factory=set)


def _final_response(
    resp: requests.Response, method: str, url: str, attempt: int, ok_statuses: tuple[int, ...]
) -> FhirResponse:
    """The response as answered; a status >= 400 not listed in ``ok_statuses`` raises :class:`FhirHttpError`
    carrying the server's OperationOutcome when it sent one."""
    body = _parse_body(resp)
    status = resp.status_code
    if status >= 400 and status not in ok_statuses:
        outcome = body if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome" else None
        raise FhirHttpError(
            status,
            method=method,
            url=url,
            outcome=outcome,
            body=resp.text,
            headers=resp.headers,
            attempts=attempt,
        )
    return FhirResponse(status, dict(resp.headers), body, url, attempt)


class FhirClient:
    """HTTP access to one FHIR server. Thread-safe for use by one worker thread at a time per instance."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: Any = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        ca_bundle: str | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        user_agent: str = DEFAULT_USER_AGENT,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        if not base_url.startswith(("https://", "http://")):
            raise ValueError("base URL must be http(s)")
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.retry = retry or RetryPolicy()
        self.session = session or requests.Session()
        # TLS verification stays on; a CA bundle replaces the default trust store.
        self.session.verify = ca_bundle or True
        self.session.headers.update({"Accept": FHIR_JSON, "User-Agent": user_agent, **dict(extra_headers or {})})
        self._sleep = sleep
        self.auth = auth
        if auth is not None and hasattr(auth, "bind"):
            auth.bind(self.session, self.timeout)
        self._capabilities: dict | None = None
        self.learned = Learned()

    # --- plumbing -------------------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            if not path.startswith(self.base_url + "/") and path != self.base_url:
                raise ValueError("refusing to send a request (and its token) outside the target's base URL")
            return path
        return f"{self.base_url}/{path.lstrip('/')}" if path else self.base_url

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str = "",
        *,
        json: Any = None,
        params: Mapping[str, str] | list[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
        ok_statuses: tuple[int, ...] = (),
    ) -> FhirResponse:
        """Send one request with retries; raise :class:`FhirHttpError` for a final status >= 400."""
        url = self.url(path)
        hdrs = dict(headers or {})
        if json is not None:
            hdrs.setdefault("Content-Type", FHIR_JSON)
        slept = 0.0
        renewed = False
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = self._send(method, url, json, params, hdrs)
            except requests.exceptions.SSLError as exc:  # never retried: a TLS failure will not heal by itself
                raise FhirTransportError(f"TLS error: {exc}", method=method, url=url, attempts=attempt) from exc
            except (requests.ConnectionError, requests.Timeout) as exc:
                delay = self._transport_retry_delay(exc, attempt, slept, idempotent)
                if delay is None:
                    raise FhirTransportError(
                        f"{type(exc).__name__} ({transport_cause(exc)}) talking to {urlsplit(url).netloc}"
                        f" after {attempt} attempt(s)",
                        method=method,
                        url=url,
                        attempts=attempt,
                    ) from exc
                log.info("%s %s: %s; retry %d in %.2fs", method, _redact(url), type(exc).__name__, attempt, delay)
                self._sleep(delay)
                slept += delay
                continue
            status = resp.status_code
            if status == 401 and self.auth is not None and not renewed and self.auth.renew():
                renewed = True  # a fresh token, once; does not count as an attempt
                attempt -= 1
                continue
            delay = self._status_retry_delay(resp, attempt, slept, idempotent)
            if delay is not None:
                log.info("%s %s -> %d; retry %d in %.2fs", method, _redact(url), status, attempt, delay)
                resp.close()
                self._sleep(delay)
                slept += delay
                continue
            return _final_response(resp, method, url, attempt, ok_statuses)

    def _send(
        self,
        method: str,
        url: str,
        json: Any,
        params: Mapping[str, str] | list[tuple[str, str]] | None,
        headers: dict[str, str],
    ) -> requests.Response:
        """One HTTP exchange, carrying the current token."""
        send_headers = dict(headers)
        if self.auth is not None:
            send_headers.update(self.auth.headers())
        return self.session.request(method, url, json=json, params=params, headers=send_headers, timeout=self.timeout)

    def _within_budget(self, delay: float, slept: float) -> float | None:
        return delay if slept + delay <= self.retry.max_elapsed else None

    def _transport_retry_delay(self, exc: Exception, attempt: int, slept: float, idempotent: bool) -> float | None:
        """The wait before retrying after a connection failure or timeout, None when it is not retried: only an
        idempotent request, or one the server certainly never received (connect timeout, connection refused), is
        sent again, within the attempts and the time budget."""
        certain_not_processed = isinstance(exc, requests.exceptions.ConnectTimeout) or (
            isinstance(exc, requests.ConnectionError) and "refused" in str(exc).lower()
        )
        if not (idempotent or certain_not_processed) or attempt >= self.retry.max_attempts:
            return None
        return self._within_budget(self.retry.backoff(attempt), slept)

    def _status_retry_delay(
        self, resp: requests.Response, attempt: int, slept: float, idempotent: bool
    ) -> float | None:
        """The wait before retrying after a retryable status, None when it is not retried: a non-idempotent request
        only on 429 and 503 (the server did not process it); Retry-After (capped) when given, else the backoff."""
        status = resp.status_code
        retry_status = status in self.retry.retry_statuses and (idempotent or status in (429, 503))
        if not retry_status or attempt >= self.retry.max_attempts:
            return None
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        delay = min(retry_after, self.retry.retry_after_cap) if retry_after is not None else self.retry.backoff(attempt)
        return self._within_budget(delay, slept)

    # --- interactions ---------------------------------------------------------------------------------------

    def capabilities(self, *, refresh: bool = False) -> dict:
        """The server's CapabilityStatement (``GET /metadata``), cached per client."""
        if self._capabilities is None or refresh:
            resp = self.request("GET", "metadata")
            if not isinstance(resp.body, dict) or resp.body.get("resourceType") != "CapabilityStatement":
                raise FhirError("/metadata did not return a CapabilityStatement")
            self._capabilities = resp.body
        return self._capabilities

    def read(self, resource_type: str, resource_id: str) -> FhirResponse:
        return self.request("GET", f"{resource_type}/{resource_id}")

    def search(self, resource_type: str, params: Mapping[str, str] | list[tuple[str, str]]) -> dict:
        """A searchset Bundle (first page)."""
        return self.request("GET", resource_type, params=params).body or {}

    def search_all(
        self, resource_type: str, params: Mapping[str, str] | list[tuple[str, str]], *, max_pages: int = 20
    ) -> list[dict]:
        """Resources in search mode ``match`` over at most ``max_pages`` pages."""
        out: list[dict] = []
        bundle = self.search(resource_type, params)
        for _ in range(max_pages):
            for entry in bundle.get("entry", []) or []:
                if (entry.get("search") or {}).get("mode", "match") == "match" and entry.get("resource"):
                    out.append(entry["resource"])
            nxt = next((link["url"] for link in bundle.get("link", []) or [] if link.get("relation") == "next"), None)
            if not nxt:
                break
            bundle = self.request("GET", nxt).body or {}
        return out

    def create(self, resource: dict, *, if_none_exist: str | None = None) -> FhirResponse:
        headers = {"Prefer": "return=representation"}
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
        return self.request(
            "POST", resource["resourceType"], json=resource, headers=headers, idempotent=bool(if_none_exist)
        )

    def update(self, resource: dict, *, if_match: str | None = None) -> FhirResponse:
        headers = {"Prefer": "return=representation"}
        if if_match:
            headers["If-Match"] = if_match
        return self.request("PUT", f"{resource['resourceType']}/{resource['id']}", json=resource, headers=headers)

    def conditional_update(self, resource: dict, query: str) -> FhirResponse:
        return self.request(
            "PUT", f"{resource['resourceType']}?{query}", json=resource, headers={"Prefer": "return=representation"}
        )

    def bundle(self, bundle: dict, *, idempotent: bool = True) -> dict:
        """POST a transaction or batch Bundle to the base; returns the response Bundle. ``idempotent=False``
        when an entry is a create the server cannot de-duplicate (then no retry after an ambiguous failure)."""
        resp = self.request("POST", "", json=bundle, headers={"Prefer": "return=representation"}, idempotent=idempotent)
        if not isinstance(resp.body, dict) or resp.body.get("resourceType") != "Bundle":
            raise FhirError(f"{bundle.get('type')} answered without a Bundle (status {resp.status})")
        return resp.body


def _parse_body(resp: requests.Response) -> Any:
    if not resp.content:
        return None
    ctype = resp.headers.get("Content-Type", "").lower()
    if ctype and "json" not in ctype:
        return None
    try:
        return resp.json()
    except ValueError:
        return None


@dataclass
class Recorder:
    """Test helper-friendly record of the requests a client sent (method, path); attach as a response hook."""

    calls: list[tuple[str, str]] = field(default_factory=list)

    def hook(self, resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.calls.append((resp.request.method or "", urlsplit(resp.request.url or "").path))

    def attach(self, client: FhirClient) -> Recorder:
        client.session.hooks.setdefault("response", []).append(self.hook)
        return self

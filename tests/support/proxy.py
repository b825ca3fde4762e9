"""A small fault-injecting HTTP proxy for exchange tests (loopback only).

It forwards requests to an upstream FHIR server and, per matching request, can: answer a status itself
(500, 503 with ``Retry-After``, 429) before or after forwarding, reset the connection (before or after the
upstream processed the request), hang past the client's read timeout, delay (slow response), rewrite the
CapabilityStatement (drop transaction/batch, serve it as ``application/json``), and strip ``Location`` from
``200`` answers (a server that answers a matching conditional create without it).

It can also refuse content the way a stricter server does (seen on Medplum 5.1), where sekmet would accept it:
``refuse_profiles`` (a resource claiming one of these profiles gets 400, as Medplum refuses the base ``bp``
profile) and ``no_update_create`` (a PUT to an id the server does not hold gets 404, a server with
``updateCreate`` false). Single requests, transactions (refused whole, naming the entry) and batches (the
entry refused, the others forwarded) alike; every refusal is logged in ``refusals``.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length", "proxy-connection"}


@dataclass
class Fault:
    """What to do to one request. ``kind``: status | reset | hang | delay."""

    kind: str
    status: int = 500
    after_forward: bool = False  # the upstream processed the request before the fault hit
    retry_after: str | None = None
    seconds: float = 0.0
    match: Callable[[str, str], bool] | None = None  # (method, path) -> applies?


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname in ("127.0.0.1", "localhost"), "loopback upstreams only"
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port
        self.faults: deque[Fault] = deque()
        self.capability_transform: Callable[[dict], dict] | None = None
        self.metadata_content_type: str | None = None
        self.strip_location_on_200 = False
        self.log: list[tuple[str, str, int | str]] = []
        self.refuse_profiles: set[str] = set()
        self.no_update_create = False
        self.refusals: list[tuple[str, str, int]] = []  # (method, url, status) of every content refusal
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy.handle(self)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def _next_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self.faults):
                if fault.match is None or fault.match(method, path):
                    del self.faults[i]
                    return fault
        return None

    # --- request handling -------------------------------------------------------------------------------

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        method, path = h.command, h.path
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        fault = None if path.endswith("/metadata") else self._next_fault(method, path)
        if fault is not None and fault.kind == "delay":  # a slow answer, but an answer
            self.log.append((method, path, "delay"))
            time.sleep(fault.seconds)
            fault = None
        if fault is not None and not fault.after_forward:
            self._apply(h, fault, method, path)
            return
        if body and method in ("POST", "PUT") and (self.refuse_profiles or self.no_update_create):
            if self._strict(h, method, path, body):
                return
        status, headers, payload = self._forward(method, path, h.headers, body)
        if fault is not None:
            self._apply(h, fault, method, path)
            return
        if path.split("?")[0].endswith("/metadata") and status == 200:
            doc = json.loads(payload)
            if self.capability_transform:
                doc = self.capability_transform(doc)
            payload = json.dumps(doc).encode()
            if self.metadata_content_type:
                headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
                headers.append(("Content-Type", self.metadata_content_type))
        if self.strip_location_on_200 and status == 200:
            headers = [(k, v) for k, v in headers if k.lower() != "location"]
        self.log.append((method, path, status))
        self._send(h, status, headers, payload)

    # --- a stricter server's refusals ------------------------------------------------------------------

    def _refusal(self, method: str, url: str, resource: dict) -> tuple[int, dict] | None:
        """(status, OperationOutcome) when the stricter server refuses this write, else None."""
        rtype = resource.get("resourceType", "?")
        for claim in (resource.get("meta") or {}).get("profile") or []:
            if claim in self.refuse_profiles:
                return 400, _outcome(
                    "processing",
                    f"{rtype} does not conform to profile {claim}: slicing cannot be evaluated",
                    f"{rtype}.meta.profile",
                )
        parts = url.split("?")[0].strip("/").split("/")
        if self.no_update_create and method == "PUT" and "?" not in url and len(parts) >= 2:
            status, _, _ = self._forward("GET", f"/fhir/{parts[-2]}/{parts[-1]}", {}, None)
            if status == 404:
                return 404, _outcome("not-found", f"{parts[-2]}/{parts[-1]} not found", None)
        return None

    def _strict(self, h: BaseHTTPRequestHandler, method: str, path: str, body: bytes) -> bool:
        """Answers a refused write itself (True), or lets it through (False; a batch may be forwarded in part)."""
        try:
            doc = json.loads(body)
        except ValueError:
            return False
        json_type = [("Content-Type", "application/fhir+json")]
        if doc.get("resourceType") != "Bundle" or doc.get("type") not in ("transaction", "batch"):
            refusal = self._refusal(method, path, doc)
            if refusal is None:
                return False
            self.refusals.append((method, path, refusal[0]))
            self.log.append((method, path, refusal[0]))
            self._send(h, refusal[0], json_type, json.dumps(refusal[1]).encode())
            return True
        entries = doc.get("entry", []) or []
        refused: dict[int, tuple[int, dict]] = {}
        for i, entry in enumerate(entries):
            req = entry.get("request") or {}
            refusal = self._refusal(req.get("method", ""), "/fhir/" + req.get("url", ""), entry.get("resource") or {})
            if refusal is not None:
                refused[i] = refusal
                self.refusals.append((req.get("method", ""), req.get("url", ""), refusal[0]))
        if not refused:
            return False
        if doc["type"] == "transaction":  # all or nothing: the first refusal answers for the whole Bundle
            i, (status, outcome) = next(iter(refused.items()))
            for issue in outcome["issue"]:
                issue["expression"] = [
                    f"Bundle.entry[{i}].resource" + e[e.index(".") :] for e in issue.get("expression", [])
                ]
                issue["diagnostics"] = f"Bundle.entry[{i}]: {issue['diagnostics']}"
            self.log.append((method, path, status))
            self._send(h, status, json_type, json.dumps(outcome).encode())
            return True
        kept = [e for i, e in enumerate(entries) if i not in refused]
        answers: list[dict] = []
        if kept:
            fwd = json.dumps({**doc, "entry": kept}).encode()
            status, _, payload = self._forward(method, path, {"Content-Type": "application/fhir+json"}, fwd)
            answers = json.loads(payload).get("entry", []) if status == 200 else []
        it = iter(answers)
        out = [
            {"response": {"status": f"{refused[i][0]}", "outcome": refused[i][1]}} if i in refused else next(it, {})
            for i in range(len(entries))
        ]
        self.log.append((method, path, 200))
        self._send(
            h, 200, json_type, json.dumps({"resourceType": "Bundle", "type": "batch-response", "entry": out}).encode()
        )
        return True

    def _forward(self, method: str, path: str, headers, body: bytes | None):
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            fwd = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
            conn.request(method, path, body=body, headers=fwd)
            resp = conn.getresponse()
            payload = resp.read()
            out = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
            return resp.status, out, payload
        finally:
            conn.close()

    def _send(self, h: BaseHTTPRequestHandler, status: int, headers, payload: bytes) -> None:
        h.send_response(status)
        for k, v in headers:
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(payload)))
        h.send_header("Connection", "close")
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(payload)

    def _apply(self, h: BaseHTTPRequestHandler, fault: Fault, method: str, path: str) -> None:
        self.log.append((method, path, fault.kind if fault.kind != "status" else fault.status))
        if fault.kind == "status":
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "transient", "diagnostics": "injected fault"}],
            }
            headers = [("Content-Type", "application/fhir+json")]
            if fault.retry_after is not None:
                headers.append(("Retry-After", fault.retry_after))
            self._send(h, fault.status, headers, json.dumps(outcome).encode())
        elif fault.kind == "reset":
            sock = h.connection
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            h.close_connection = True
        elif fault.kind == "hang":
            time.sleep(fault.seconds)
            h.close_connection = True


def _outcome(code: str, diagnostics: str, expression: str | None) -> dict:
    issue: dict = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def without_interactions(*codes: str) -> Callable[[dict], dict]:
    """A CapabilityStatement transform dropping system interactions (e.g. transaction, batch)."""

    def transform(doc: dict) -> dict:
        for rest in doc.get("rest", []):
            rest["interaction"] = [i for i in rest.get("interaction", []) if i.get("code") not in codes]
        return doc

    return transform


def only_types(types: dict[str, list[str]], *, conditional: bool = True, system: tuple[str, ...] = ()):
    """A CapabilityStatement transform keeping only ``types`` with the given interactions."""

    def transform(doc: dict) -> dict:
        for rest in doc.get("rest", []):
            kept = []
            for res in rest.get("resource", []):
                if res["type"] in types:
                    res["interaction"] = [{"code": c} for c in types[res["type"]]]
                    res["conditionalCreate"] = conditional
                    res["conditionalUpdate"] = conditional
                    kept.append(res)
            rest["resource"] = kept
            rest["interaction"] = [{"code": c} for c in system]
        return doc

    return transform

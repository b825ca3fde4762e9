"""gunicorn's asyncio (asgi) worker, with the refusals gunicorn answers itself (request line or header too long,
malformed request) as problem+json instead of text/plain, and without echoing the request back."""

from __future__ import annotations

import json
from http import HTTPStatus

from gunicorn.asgi import protocol
from gunicorn.workers import gasgi

PROBLEM_BASE = "https://kapfhir.example.org/problems/"

_DETAIL = {
    400: "The request is not valid HTTP/1.1.",
    413: "The request body is larger than this service accepts.",
    414: "The request line (method, URL, version) is longer than this service accepts (see README, Security).",
    431: "A request header is longer than this service accepts, or there are too many (see README, Security).",
    501: "The request uses a transfer coding this service does not support.",
}


class ProblemProtocol(protocol.ASGIProtocol):
    def _send_error_response(self, status, message, extra_headers=()):
        # gunicorn's message can quote the request: it is not echoed
        try:
            title = HTTPStatus(status).phrase
        except ValueError:
            title = "Bad Request"
        body = json.dumps(
            {
                "type": PROBLEM_BASE + title.lower().replace(" ", "-"),
                "title": title,
                "status": status,
                "detail": _DETAIL.get(status, "The request cannot be served."),
            }
        ).encode()
        extra = "".join(f"{name}: {value}\r\n" for name, value in extra_headers)
        head = (
            f"HTTP/1.1 {status} {title}\r\n"
            "Content-Type: application/problem+json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"{extra}"
            "X-Content-Type-Options: nosniff\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n\r\n"
        )
        self._safe_write(head.encode("latin-1"))
        self._safe_write(body)


class ProblemJsonAsgiWorker(gasgi.ASGIWorker):
    def init_process(self) -> None:
        # The worker builds its connections from the module's ASGIProtocol: in this worker process only, that is
        # the subclass above (gunicorn has no setting for the protocol class).
        gasgi.ASGIProtocol = ProblemProtocol  # type: ignore[misc]
        super().init_process()

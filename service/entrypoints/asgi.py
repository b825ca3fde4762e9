"""ASGI entry point for gunicorn's asyncio worker: ``service.entrypoints.asgi:app`` (see gunicorn.conf.py).

Why not the WSGI entry under gthread: a gthread worker gives a thread to each connection while it reads the
request headers, so a few clients trickling header lines would stop /healthz for every caller. Under the asyncio
worker a connection costs nothing until its request is complete; then the Flask app runs, unchanged, in a bounded
thread pool (a2wsgi).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from a2wsgi import WSGIMiddleware

from service.entrypoints.wsgi import app as wsgi_app


def _terminated_input(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """a2wsgi's input stream ends with the request body, as gunicorn's own WSGI workers declare: without this,
    werkzeug reads a chunked body as empty instead of reading it up to the body limit (and answering 413 past it)."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["wsgi.input_terminated"] = True
        return app(environ, start_response)

    return wrapped


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# How long a client may take to send its body once its headers are in (the worker timeout, by default 30 s).
BODY_SECONDS = float(os.environ.get("KAPFHIR_TIMEOUT", "30"))


def _buffered_body(app: ASGIApp, limit: int) -> ASGIApp:
    """Reads a request's body in the event loop before a thread runs the app: a client trickling its body holds no
    thread. Reading stops one byte past ``limit`` (the app answers 413 for such a body, and for a declared
    Content-Length over it, which is not read at all); a body not complete within BODY_SECONDS ends the connection."""

    async def buffered(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        body = bytearray()
        if not (declared.isdigit() and int(declared) > limit):
            try:
                async with asyncio.timeout(BODY_SECONDS):
                    more = True
                    while more and len(body) <= limit:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            return
                        body += message.get("body", b"")
                        more = message.get("more_body", False)
            except TimeoutError:
                return  # the connection closes without an answer, as gunicorn's own timeouts do
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body[: limit + 1]), "more_body": False}
            await asyncio.Event().wait()  # nothing more will come; a2wsgi reads no further than more_body=False
            return {"type": "http.disconnect"}

        await app(scope, replay, send)

    return buffered


# Threads that run requests, per worker process (KAPFHIR_THREADS, as before under gthread).
app = _buffered_body(
    WSGIMiddleware(_terminated_input(wsgi_app), workers=int(os.environ.get("KAPFHIR_THREADS", "4"))),
    int(wsgi_app.config["MAX_CONTENT_LENGTH"]),
)

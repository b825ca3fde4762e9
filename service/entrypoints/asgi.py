"""ASGI entry point for gunicorn's asyncio worker: ``service.entrypoints.asgi:app`` (see gunicorn.conf.py).

Why not the WSGI entry under gthread: a gthread worker gives a thread to each connection while it reads the
request headers, so a few clients trickling header lines stopped /healthz for every caller (issue 14). Under the
asyncio worker a connection costs nothing until its request is complete; then the Flask app runs, unchanged, in a
bounded thread pool (a2wsgi).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
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


# Threads that run requests, per worker process (KAPFHIR_THREADS, as before under gthread).
app = WSGIMiddleware(_terminated_input(wsgi_app), workers=int(os.environ.get("KAPFHIR_THREADS", "4")))

"""The stack's ceiling: a trivial Flask app served by the same gunicorn command and gunicorn.conf.py as kapfhir.

No database, no token check, no JSON schema: what Flask + gunicorn cost on their own.
"""

from __future__ import annotations

import os

from a2wsgi import WSGIMiddleware
from flask import Flask, jsonify

flask_app = Flask(__name__)
# served like kapfhir (service/entrypoints/asgi.py): gunicorn's asyncio worker, the app in a thread pool
app = WSGIMiddleware(flask_app, workers=int(os.environ.get("KAPFHIR_THREADS", "4")))


@flask_app.get("/healthz")
def healthz():
    return jsonify(status="ok")


@flask_app.get("/trivial")
def trivial():
    return jsonify(hello="world")

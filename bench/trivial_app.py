"""The stack's ceiling: a trivial Flask app served by the same gunicorn command and gunicorn.conf.py as kapfhir.

No database, no token check, no JSON schema: what Flask + gunicorn cost on their own.
"""

from __future__ import annotations

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/healthz")
def healthz():
    return jsonify(status="ok")


@app.get("/trivial")
def trivial():
    return jsonify(hello="world")

"""The front door: a home page, interactive API docs and the OpenAPI document, all without a token.

The docs are Swagger UI 5 (it renders OpenAPI 3.1; Swagger UI 4 cannot) from the ``flask-swagger-ui`` package's
own copy of its files: nothing is fetched from a CDN, so the page works offline. The OpenAPI document is built
from the running app, the same way ``kapfhir openapi --write`` writes ``openapi.yaml``.
"""

from __future__ import annotations

import html
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import flask_swagger_ui
import yaml
from flask import Blueprint, Response, current_app

from service.entrypoints.routes import ANY_OBJECT, TEXT, Route, route

SWAGGER_UI_DIR = Path(flask_swagger_ui.__file__).resolve().parent / "dist"

# The UI's files are served like Flask's own static folder: not API operations, so not in openapi.yaml.
bp = Blueprint("pages", __name__, static_folder=str(SWAGGER_UI_DIR), static_url_path="/docs/assets")

# Public in the auth layer (service/entrypoints/auth.py) and declared in openapi.yaml with `security: []`.

# Scripts only from this origin (no inline script); Swagger UI sets inline styles and data: images.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def kapfhir_version() -> str:
    try:
        return version("kapfhir")
    except PackageNotFoundError:  # running from a checkout that was not installed
        return "unknown"


def _html(body: str) -> Response:
    response = Response(body, mimetype="text/html")
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


HOME = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kapfhir {version}</title>
<link rel="stylesheet" href="{home_css}">
<link rel="icon" type="image/png" href="/favicon.ico">
</head>
<body>
<main>
<h1>kapfhir <small>{version}</small></h1>
<p>A FHIR R4 (4.0.1) interoperability service for ketamine-assisted psychotherapy (KAP) clinics: it records
KAP episodes (screening, preparation, dosing sessions with monitoring, integration, outcome measures) through a
JSON API, serves them as FHIR R4, accepts FHIR from EHRs and pushes episodes to EHR targets.</p>
<p>Every API call needs a bearer token (SMART Backend Services, <code>client_credentials</code> with
<code>private_key_jwt</code> or a client secret). The pages below do not.</p>
<h2>Start here</h2>
<ul>
<li><a href="/docs">API documentation</a> (interactive: paste a token in <em>Authorize</em>)</li>
<li><a href="/openapi.yaml">openapi.yaml</a> (OpenAPI 3.1; also <a href="/openapi.json">as JSON</a>)</li>
<li><a href="/fhir/metadata">FHIR CapabilityStatement</a> (<code>/fhir/metadata</code>)</li>
<li><a href="/.well-known/smart-configuration">SMART configuration</a> (token endpoint, scopes)</li>
<li><a href="/healthz">Health</a> and <a href="/readyz">readiness</a></li>
</ul>
<h2>Get a token on this machine</h2>
<pre>kapfhir token --scope 'system/*.cruds'</pre>
<p>Base URL of this service: <code>{base_url}</code> (token endpoint <code>{base_url}/oauth2/token</code>).</p>
</main>
</body>
</html>
"""

HOME_CSS = """
body { font-family: system-ui, sans-serif; margin: 0; color: #1d2630; background: #f7f8fa; }
main { max-width: 46rem; margin: 2rem auto; padding: 0 1.25rem; line-height: 1.5; }
h1 small { font-size: 0.5em; color: #5b6670; }
pre, code { background: #eceff3; border-radius: 3px; padding: 0.1em 0.3em; }
pre { padding: 0.6em; }
a { color: #0b5cad; }
"""

DOCS = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kapfhir {version}: API documentation</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/favicon.ico">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/swagger-ui-standalone-preset.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""

# A file, not an inline script, so the page's CSP can forbid inline scripts.
DOCS_INIT = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: "StandaloneLayout",
  validatorUrl: null
});
"""


@route(
    bp,
    "/",
    "GET",
    Route("Home page: what this service is, with links to its docs", response=TEXT, media="text/html", public=True),
    endpoint="home",
)
def home() -> Response:
    base_url = current_app.extensions["kapfhir"].settings.base_url.rstrip("/")
    return _html(
        HOME.format(version=html.escape(kapfhir_version()), base_url=html.escape(base_url), home_css="/docs/home.css")
    )


@route(
    bp,
    "/docs/home.css",
    "GET",
    Route("The home page's style sheet", response=TEXT, media="text/css", public=True),
    endpoint="home_css",
)
def home_css() -> Response:
    return Response(HOME_CSS, mimetype="text/css")


@route(
    bp,
    "/favicon.ico",
    "GET",
    Route(
        "Icon of the pages",
        response={"type": "string", "contentMediaType": "image/png"},
        media="image/png",
        public=True,
    ),
    endpoint="favicon",
)
def favicon() -> Response:
    # Browsers ask for it on any page: answer with Swagger UI's icon rather than a 401.
    return Response((SWAGGER_UI_DIR / "favicon-32x32.png").read_bytes(), mimetype="image/png")


@route(
    bp,
    "/docs",
    "GET",
    Route("Interactive API docs (Swagger UI) of this document", response=TEXT, media="text/html", public=True),
    endpoint="docs",
)
def docs() -> Response:
    return _html(DOCS.format(version=html.escape(kapfhir_version())))


@route(
    bp,
    "/docs/init.js",
    "GET",
    Route("The API docs page's script", response=TEXT, media="text/javascript", public=True),
    endpoint="docs_init",
)
def docs_init() -> Response:
    return Response(DOCS_INIT, mimetype="text/javascript")


def _document() -> dict:
    spec = current_app.extensions.get("kapfhir.openapi")
    if spec is None:
        from service.entrypoints.openapi import build_spec

        spec = current_app.extensions["kapfhir.openapi"] = build_spec(current_app)
    return spec


@route(
    bp,
    "/openapi.yaml",
    "GET",
    Route("This OpenAPI document (YAML)", response=ANY_OBJECT, media="application/yaml", public=True),
    endpoint="openapi_yaml",
)
def openapi_yaml() -> Response:
    return Response(openapi_text(_document()), mimetype="application/yaml")


@route(
    bp,
    "/openapi.json",
    "GET",
    Route("This OpenAPI document (JSON)", response=ANY_OBJECT, public=True),
    endpoint="openapi_json",
)
def openapi_json() -> Response:
    return Response(json.dumps(_document()), mimetype="application/json")


def openapi_text(spec: dict) -> str:
    """openapi.yaml's exact text (``kapfhir openapi --write`` writes this too)."""
    return yaml.safe_dump(spec, sort_keys=False, width=120)

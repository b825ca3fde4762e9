"""Gunicorn settings, all overridable from the environment (see the Dockerfile)."""

import os

bind = os.environ.get("KAPFHIR_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("KAPFHIR_WORKERS", "2"))
# gunicorn's asyncio worker: a connection that trickles its headers waits in the event loop and holds no thread
# (under gthread, ten such clients stopped /healthz for 40 s). Complete requests run the Flask app in a pool of
# KAPFHIR_THREADS threads per worker (service/entrypoints/asgi.py).
worker_class = "service.entrypoints.gunicorn_worker.ProblemJsonAsgiWorker"
# Each worker listens on its own SO_REUSEPORT socket and the kernel spreads new connections over them. With one
# shared socket, the asyncio worker that woke first accepted every pending connection: a client's keep-alive pool
# (an EHR's, or wrk's 16 connections) all landed on one worker while the other idled, halving throughput.
# TCP only: workers binding one Unix socket path would each replace the others' socket file.
reuse_port = not bind.startswith(("unix:", "fd://"))
worker_connections = int(os.environ.get("KAPFHIR_WORKER_CONNECTIONS", "1000"))
timeout = int(os.environ.get("KAPFHIR_TIMEOUT", "30"))
asgi_lifespan = "off"  # the Flask app has no ASGI lifespan

# What one request may send (README, Security): the request line (method, URL, version) up to 8190 bytes,
# gunicorn's maximum; up to 100 header fields of up to 20 kB each, room for a 16 kB bearer token. Refusals are
# problem+json (414, 431: service/entrypoints/gunicorn_worker.py); bodies are limited by KAPFHIR_MAX_BODY_BYTES (413).
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 20480

# The app writes its own structured request lines; gunicorn's would duplicate them.
accesslog = None
errorlog = "-"

# Heartbeat files on tmpfs: a disk-backed /tmp in containers can stall workers.
if os.path.isdir("/dev/shm"):  # noqa: S108 - gunicorn heartbeat files, not data
    worker_tmp_dir = "/dev/shm"  # noqa: S108

# gunicorn >= 25.1 opens a control socket under $HOME by default: the image's
# home is read-only and parallel test servers would share one path.
control_socket_disable = True


# Prometheus multiprocess mode (service/observability.py): each worker writes its samples under this directory and
# a scrape of /metrics adds them up. Set here, in the master, before any worker imports prometheus_client.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import tempfile

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="kapfhir-metrics-")


def child_exit(server, worker):
    """A dead worker's live gauges are dropped; its counters stay in the totals."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_starting(server):
    """Migrate once, in the master, before any worker serves (set KAPFHIR_MIGRATE_ON_START=0 to skip)."""
    if os.environ.get("KAPFHIR_MIGRATE_ON_START", "1") != "0":
        from service.entrypoints.cli import prepare_database

        prepare_database()

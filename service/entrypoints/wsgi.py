"""WSGI entry point for gunicorn: ``service.entrypoints.wsgi:app``."""

from mappings.validation import preload_models
from service.entrypoints.app import create_app
from service.fhir.registry import TYPES

app = create_app()
# Each worker imports the R4B model modules of the types it serves now, not in its first requests.
preload_models(TYPES)

"""WSGI entry point for gunicorn: ``service.entrypoints.wsgi:app``."""

import gc

from service.entrypoints.app import create_app
from service.fhir.registry import TYPES
from validation import definitions, preload_models

app = create_app()
# Each worker imports the R4B model modules of the types it serves now, not in its first requests.
preload_models(TYPES)
# ... and reads the R4 core definitions' tables $validate uses (a pickle beside them, well under a second).
if definitions.available():
    definitions.load()
# What start-up loaded (models, definitions, the app) lives as long as the worker: out of the collector's sight.
# Else every full collection walked those ~300,000 objects again and stopped the worker's requests for ~0.2 s.
gc.freeze()

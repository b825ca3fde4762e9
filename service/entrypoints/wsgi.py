"""WSGI entry point for gunicorn: ``service.entrypoints.wsgi:app``."""

from service.entrypoints.app import create_app

app = create_app()

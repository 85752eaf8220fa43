"""The gunicorn entry point: `gunicorn server:app` (settings in gunicorn.conf.py)."""

from smls import create_app

app = create_app()

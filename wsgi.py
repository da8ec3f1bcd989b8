"""WSGI entry point: ``gunicorn wsgi:app`` (settings in gunicorn.conf.py)."""
import sys

from gateway import create_app
from gateway.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:          # one line naming the field, not a traceback
    sys.stderr.write(f"gateway: {exc}\n")
    sys.exit(1)

"""The gateway's domain: settings, schemas, errors, Redis keys, limits and the queue contract."""

__version__ = "0.1.0"

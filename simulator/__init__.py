"""Simulated OpenAI / Anthropic upstream: a light raw-ASGI server for tests and benchmarks.

Self-contained: imports nothing from the rest of the repository.
"""

from __future__ import annotations

from simulator.app import create_app
from simulator.state import fingerprint

__all__ = ["create_app", "fingerprint"]

"""Fixtures for the scoring tests: the real services some of them need (see tests/_services.py)."""

from tests._services import redis_stream, redis_url  # noqa: F401 (fixtures)

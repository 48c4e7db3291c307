"""OpenAI's response schemas, vendored in tests/data (see its README), for conformance tests."""

from __future__ import annotations

from pathlib import Path

__all__ = ["SPEC_PATH"]

SPEC_PATH = Path(__file__).parent / "data" / "openai_schemas.json"

"""Shared test helpers for usp-conformance's own tests."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The read-only BBF reference texts sit beside the checkout (developer aid).
REFERENCE = ROOT.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """Path of ../shared/reference; tests that need it skip where it is absent."""
    if not REFERENCE.is_dir():
        pytest.skip(f"reference texts not present at {REFERENCE} (developer aid only)")
    return REFERENCE

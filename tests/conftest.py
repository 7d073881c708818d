"""Shared test helpers: where the reference data lives, and skipping when it is absent."""

from __future__ import annotations

import pathlib

import pytest

# The steering repo's shared/ folder sits beside the project checkout.
SHARED_REF = pathlib.Path(__file__).resolve().parents[2] / "shared" / "ref"


@pytest.fixture(scope="session")
def shared_ref() -> pathlib.Path:
    if not SHARED_REF.is_dir():
        pytest.skip(f"reference data folder {SHARED_REF} is absent")
    return SHARED_REF

"""Shared fixtures: the project's sample scene."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.paths import SAMPLE


@pytest.fixture(scope="session")
def sample_scene() -> Path:
    """The project's own sample scene (photos + ground truth), generated on first use exactly as `make demo` does."""
    from recon.data.synthetic import make_sample_scene

    return make_sample_scene(SAMPLE)

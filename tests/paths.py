"""Where tests find the repository, the shared real data and the project's sample scene."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE = REPO / "data" / "sample"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test (with the reason) when that folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (the real test data lives in ../shared/data beside the repository)")
    return path

"""Helpers shared by the benchmark scripts (never imported by recon)."""

from __future__ import annotations

import os
import resource
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def cpu_pressure() -> float | None:
    """avg10 of the 'some' line of /proc/pressure/cpu: how contended the CPU was just before timing."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return float(line.split("avg10=")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def machine() -> dict:
    return {"cores": os.cpu_count(), "cpu_pressure_avg10_at_start": cpu_pressure()}

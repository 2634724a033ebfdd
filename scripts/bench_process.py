"""Benchmark `recon process` on a photo folder (default: the 29 lund photos) and print one JSON line.

    python scripts/bench_process.py [PHOTOS] [--max-image-size N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from recon.data.sfm import ProcessConfig, process_photos

REPO = Path(__file__).resolve().parents[1]


def cpu_pressure() -> float | None:
    """avg10 of /proc/pressure/cpu 'some' line: how contended the CPU was just before timing."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return float(line.split("avg10=")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("photos", nargs="?", default=str(REPO.parent / "shared" / "data" / "lund" / "images"))
    parser.add_argument("--max-image-size", type=int, default=ProcessConfig.max_image_size)
    args = parser.parse_args()
    pressure = cpu_pressure()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = process_photos(
            args.photos, Path(tmp) / "scene", ProcessConfig(max_image_size=args.max_image_size),
            console=Console(stderr=True, quiet=True),
        )
        total = time.perf_counter() - t0
    result = {
        "bench": "process",
        "photos": os.path.relpath(args.photos, REPO),
        **{k: v for k, v in asdict(report).items() if k != "seconds"},
        "seconds_per_stage": report.seconds,
        "seconds_total": round(total, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu_pressure_avg10_at_start": pressure,
        "cores": os.cpu_count(),
    }
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

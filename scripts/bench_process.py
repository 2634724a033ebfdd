"""Benchmark `recon process` on a photo folder (default: the 29 lund photos) and print one JSON line.

python scripts/bench_process.py [PHOTOS] [--max-image-size N]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see recon/__init__.py)

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from _bench import REPO, SHARED_DATA, machine, peak_rss_mb
from rich.console import Console

from recon.data.sfm import ProcessConfig, process_photos


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("photos", nargs="?", default=str(SHARED_DATA / "lund" / "images"))
    parser.add_argument("--max-image-size", type=int, default=ProcessConfig.max_image_size)
    args = parser.parse_args()
    conditions = machine()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = process_photos(
            args.photos,
            Path(tmp) / "scene",
            ProcessConfig(max_image_size=args.max_image_size),
            console=Console(stderr=True, quiet=True),
        )
        total = time.perf_counter() - t0
    result = {
        "bench": "process",
        "photos": os.path.relpath(args.photos, REPO),
        **{k: v for k, v in asdict(report).items() if k != "seconds"},
        "seconds_per_stage": report.seconds,
        "seconds_total": round(total, 2),
        "peak_rss_mb": peak_rss_mb(),
        **conditions,
    }
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

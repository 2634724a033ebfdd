"""Fuzz the scene readers: N seeded mutations of valid scene files (tests/data/fuzz_scenes.py), each must load or
be refused with a one-line ReconError. Prints one JSON line; the tracebacks, if any, go to stderr.

    .venv/bin/python scripts/fuzz_readers.py --n 1000 [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a checkout without installing

from tests.data.fuzz_scenes import fuzz  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="number of mutations (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the mutations (default 0)")
    args = parser.parse_args()
    logging.getLogger("recon").setLevel(logging.ERROR)  # one skipped-frames warning per load otherwise
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recon-fuzz-") as tmp:
        result = fuzz(Path(tmp), args.n, seed=args.seed)
    for tb in result.tracebacks[:5] + result.multiline[:5]:
        print(tb, file=sys.stderr)
    print(json.dumps({**result.summary(), "seed": args.seed, "seconds": round(time.perf_counter() - t0, 1)}))
    return 1 if result.tracebacks or result.multiline else 0


if __name__ == "__main__":
    sys.exit(main())

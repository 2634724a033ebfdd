"""The `recon` command line: argument parsing only; each subcommand calls one function."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from recon.data.errors import ReconError


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    log = logging.getLogger("recon")
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def _add_process(sub) -> None:
    from recon.data.sfm import MAPPERS, MATCHERS, ProcessConfig

    d = ProcessConfig()
    p = sub.add_parser("process", help="solve the cameras of a folder of photos (structure from motion)")
    p.add_argument("photos", help="folder of photos (JPEG, PNG, ...)")
    p.add_argument("--out", required=True, help="scene folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it is not empty")
    p.add_argument("--max-image-size", type=int, default=d.max_image_size,
                   help=f"resize photos so the long side is at most this many pixels, 0 = keep (default {d.max_image_size})")
    p.add_argument("--matcher", choices=MATCHERS, default=d.matcher, help="feature matching strategy")
    p.add_argument("--mapper", choices=MAPPERS, default=d.mapper,
                   help="auto: incremental, falling back to global when few photos register")
    p.add_argument("--camera-model", default=d.camera_model, help="COLMAP camera model (default SIMPLE_RADIAL)")
    p.add_argument("--max-features", type=int, default=d.max_num_features, help="SIFT features per photo")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed of the mapper")
    p.set_defaults(func=_run_process)


def _run_process(args) -> int:
    from dataclasses import asdict

    from recon.data.sfm import ProcessConfig, process_photos

    cfg = ProcessConfig(
        max_image_size=args.max_image_size,
        matcher=args.matcher,
        mapper=args.mapper,
        camera_model=args.camera_model,
        max_num_features=args.max_features,
        seed=args.seed,
    )
    report = process_photos(args.photos, args.out, cfg, overwrite=args.overwrite)
    print(json.dumps(asdict(report)))
    print(
        f"registered {report.n_registered} of {report.n_images} photos, mean reprojection error "
        f"{report.mean_reprojection_error:.3f} px; scene written to {args.out}",
        file=sys.stderr,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recon", description="Photos in, 3D out.")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_process(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except ReconError as err:
        print(f"recon: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("recon: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The `recon` command line: argument parsing only; each subcommand calls one function."""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
from collections.abc import Sequence

from recon.data.errors import ReconError, os_error_line


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (not the stream of the first call), so a
    redirected or replaced stderr never receives a record on a closed stream."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _setup_logging(verbose: bool) -> None:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    log = logging.getLogger("recon")
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def _config_from_args(cls, args: argparse.Namespace, **values):
    """A config dataclass from the options of the same name (``values`` for the others), its defaults elsewhere."""
    from dataclasses import fields

    given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**{**given, **values})


def _check_outputs(*paths: str | None) -> None:
    """Output files that cannot be written (a folder in the way) are refused before the work, not after it."""
    from recon.data.atomic import check_output_file

    for path in paths:
        if path:
            check_output_file(path)


def _add_box(parser, flag: str, help: str) -> None:
    """An axis-aligned box option: six numbers, the low corner then the high one."""
    parser.add_argument(
        flag, type=float, nargs=6, metavar=("XMIN", "YMIN", "ZMIN", "XMAX", "YMAX", "ZMAX"), help=help
    )


def _add_process(sub) -> None:
    from recon.data.sfm import MAPPERS, MATCHERS, ProcessConfig

    d = ProcessConfig()
    p = sub.add_parser("process", help="solve the cameras of a folder of photos (structure from motion)")
    p.add_argument("photos", help="folder of photos (JPEG, PNG, ...)")
    p.add_argument("--out", required=True, help="scene folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it is not empty")
    p.add_argument(
        "--max-image-size",
        type=int,
        default=d.max_image_size,
        help=f"resize photos so the long side is at most this many pixels, 0 = keep (default {d.max_image_size})",
    )
    p.add_argument("--matcher", choices=MATCHERS, default=d.matcher, help="feature matching strategy")
    p.add_argument(
        "--mapper",
        choices=MAPPERS,
        default=d.mapper,
        help="auto: incremental, falling back to global when few photos register",
    )
    p.add_argument(
        "--camera-model", default=d.camera_model, help="COLMAP camera model (default SIMPLE_RADIAL)"
    )
    p.add_argument("--max-features", type=int, default=d.max_num_features, help="SIFT features per photo")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed of the mapper")
    p.set_defaults(func=_run_process)


def _run_process(args) -> int:
    from dataclasses import asdict

    from recon.data.sfm import ProcessConfig, process_photos

    cfg = _config_from_args(ProcessConfig, args, max_num_features=args.max_features)
    report = process_photos(args.photos, args.out, cfg, overwrite=args.overwrite)
    print(json.dumps(asdict(report)))
    print(
        f"registered {report.n_registered} of {report.n_images} photos, mean reprojection error "
        f"{report.mean_reprojection_error:.3f} px; scene written to {args.out}",
        file=sys.stderr,
    )
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train 3D Gaussians on a scene (or a photo folder)")
    p.add_argument("scene", help="scene folder (COLMAP, transforms.json, Blender) or a folder of photos")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--config", help="preset YAML, e.g. configs/fast.yaml")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.steps=3000 (repeatable)",
    )
    p.add_argument("--steps", type=int, help="training steps (same as --set train.steps=N)")
    p.add_argument(
        "--time-budget", type=float, help="train for this many seconds; schedules follow the budget"
    )
    p.add_argument("--downscale", type=float, help="image downscale factor (same as --set data.downscale=F)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it is not empty")
    p.add_argument(
        "--viewer", action="store_true", help="watch training live in the browser (see recon view)"
    )
    p.add_argument(
        "--port", type=int, default=8080, help="viewer port; the next free one if busy (default 8080)"
    )
    p.add_argument("--host", default="127.0.0.1", help="viewer address to bind (default 127.0.0.1)")
    p.set_defaults(func=_run_train)


def _train_config(args):
    from pathlib import Path

    from recon.train.config import Config
    from recon.train.overrides import build_config, load_yaml

    sets = list(args.sets)
    if args.steps is not None:
        sets.append(f"train.steps={args.steps}")
    if args.time_budget is not None:
        sets.append(f"train.time_budget={args.time_budget}")
    if args.downscale is not None:
        sets.append(f"data.downscale={args.downscale}")
    base = None
    saved = Path(args.out) / "config.yaml"
    if args.resume and saved.exists():
        base = load_yaml(saved)
    return build_config(Config, preset=args.config, sets=sets, base=base)


def _run_train(args) -> int:
    from recon.train.trainer import train

    cfg = _train_config(args)
    live = None
    if args.viewer:
        from viewer.live import LiveViewer

        live = LiveViewer(host=args.host, port=args.port)
        print(f"recon train: viewer at {live.url}", file=sys.stderr, flush=True)
    try:
        on_step = live.on_step if live else None
        result = train(
            args.scene, args.out, cfg, resume=args.resume, overwrite=args.overwrite, on_step=on_step
        )
    finally:
        if live:
            live.close()
    summary = {
        "run": str(result.run),
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "num_primitives": result.num_primitives,
        **{k: result.metrics.get(k) for k in ("psnr", "ssim")},
    }
    print(json.dumps(summary))
    if not result.interrupted:
        return 0
    # as a shell reports a signal: 130 after Ctrl-C, 143 after SIGTERM, 129 after SIGHUP
    return 128 + (result.stop_signal or signal.SIGINT)


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="render the test split of a run and write metrics.json")
    p.add_argument("run", help="run folder written by recon train")
    p.add_argument(
        "--model",
        metavar="FILE",
        help="score this splat file (.ply, .spz, compressed .ply) on the run's test views instead; writes nothing",
    )
    p.set_defaults(func=_run_eval)


def _run_eval(args) -> int:
    if args.model:
        from recon.train.evaluate_file import evaluate_model_file

        print(json.dumps(evaluate_model_file(args.run, args.model)))
        return 0
    from recon.train.runs import evaluate_run

    print(json.dumps(evaluate_run(args.run)))
    return 0


def _add_compress(sub) -> None:
    from recon.export.compress.options import CompressOptions

    d = CompressOptions()
    p = sub.add_parser("compress", help="compress a run's splats into a small .spz or compressed .ply")
    p.add_argument("run", help="run folder written by recon train")
    p.add_argument(
        "--out", required=True, metavar="FILE", help="FILE.spz (Niantic spz) or FILE.ply (SuperSplat)"
    )
    p.add_argument("--target-mb", type=float, help="fit the file into this many megabytes (10^6 bytes)")
    p.add_argument(
        "--keep",
        dest="keep_contribution",
        type=float,
        default=d.keep_contribution,
        help="without --target-mb: keep the splats making this share of the views' pixels (default "
        f"{d.keep_contribution})",
    )
    p.add_argument(
        "--sh-degree", type=int, help="SH degree of the file (default: the run's for .spz, 0 for .ply)"
    )
    p.add_argument(
        "--steps",
        type=int,
        default=d.sparsify_steps,
        help=f"fine-tune steps of each phase, sparsify and recover (default {d.sparsify_steps}; 0 = none)",
    )
    p.set_defaults(func=_run_compress)


def _run_compress(args) -> int:
    from recon.export.compress.options import CompressOptions
    from recon.train.compress import compress_run

    opts = _config_from_args(CompressOptions, args, sparsify_steps=args.steps, recover_steps=args.steps)
    summary = compress_run(args.run, args.out, opts)
    print(json.dumps(summary))
    print(
        f"wrote {summary['splats_out']:,} splats to {args.out}: {summary['bytes'] / 1e6:.2f} MB, "
        f"{summary['ratio']}x smaller than the 3DGS PLY",
        file=sys.stderr,
    )
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a run as splat files or a mesh")
    p.add_argument("run", help="run folder written by recon train")
    p.add_argument("--splat", metavar="FILE.splat", help="write the 32-bytes-per-splat .splat format")
    p.add_argument("--ply", metavar="FILE.ply", help="write the standard 3DGS splat PLY")
    p.add_argument(
        "--mesh", metavar="FILE", help="write a triangle mesh with vertex colours (.ply, .obj or .glb)"
    )
    p.add_argument(
        "--method",
        choices=("tsdf", "sugar"),
        default="tsdf",
        help="tsdf: fuse rendered depth (any run); sugar: density level set + Poisson (runs trained with sugar)",
    )
    p.add_argument("--voxel", type=float, help="TSDF voxel size in scene units (default depth-trunc/1024)")
    p.add_argument("--sdf-trunc", type=float, help="TSDF truncation distance (default 5 voxels)")
    p.add_argument(
        "--depth-ratio",
        type=float,
        default=1.0,
        help="TSDF surface depth: 1 = median depth (default, sharpest), 0 = expected depth / alpha, or a blend",
    )
    p.add_argument(
        "--depth-trunc", type=float, help="ignore depth beyond this (default 2x the camera radius)"
    )
    p.add_argument(
        "--depth-upsample",
        type=int,
        default=4,
        metavar="N",
        help="TSDF: upsample each view's depth N times before fusion, keeping depth edges (default 4, at most "
        "4 MP a view; 1 = off)",
    )
    _add_box(p, "--bounds", "crop the mesh to this box (default: the observed surface's extent)")
    p.add_argument("--decimate", type=int, default=0, metavar="N", help="simplify to at most N triangles")
    p.add_argument(
        "--level", type=float, default=0.3, help="sugar: density level of the surface (default 0.3)"
    )
    p.add_argument("--poisson-depth", type=int, default=9, help="sugar: Poisson octree depth (default 9)")
    p.set_defaults(func=_run_export)


def _run_export(args) -> int:
    from recon.train.runs import export_run

    if not (args.splat or args.ply or args.mesh):
        raise ReconError("nothing to export; pass --splat FILE.splat, --ply FILE.ply and/or --mesh FILE.ply")
    _check_outputs(args.splat, args.ply, args.mesh)
    if args.splat or args.ply:
        for line in export_run(args.run, splat=args.splat, ply=args.ply):
            print(line, file=sys.stderr)
    if args.mesh:
        from recon.export.mesh import MeshOptions, export_run_mesh

        if not 0.0 <= args.depth_ratio <= 1.0:
            raise ReconError(
                f"--depth-ratio {args.depth_ratio}: use a value from 0 (expected depth) to 1 (median)"
            )
        if args.depth_upsample < 1:
            raise ReconError(f"--depth-upsample {args.depth_upsample}: use a whole number from 1 (off) up")

        bounds = None if args.bounds is None else (tuple(args.bounds[:3]), tuple(args.bounds[3:]))
        opts = _config_from_args(MeshOptions, args, bounds=bounds)
        info = export_run_mesh(args.run, args.mesh, opts)
        print(f"wrote {info['triangles']:,} triangles to {args.mesh} in {info['seconds']} s", file=sys.stderr)
    return 0


def _add_eval_mesh(sub) -> None:
    p = sub.add_parser(
        "eval-mesh", help="score a mesh against a ground-truth mesh (Chamfer, F-score, normals)"
    )
    p.add_argument("pred", help="mesh to score (.ply, .obj, .glb)")
    p.add_argument("gt", help="ground-truth mesh")
    p.add_argument(
        "--tau", type=float, help="F-score distance threshold (default 1%% of the GT bounding-box diagonal)"
    )
    p.add_argument(
        "--samples", type=int, default=200_000, help="points sampled on each mesh (default 200000)"
    )
    _add_box(p, "--crop", "score only the triangles inside this box")
    p.add_argument(
        "--visible-from",
        metavar="SCENE",
        help="count only ground truth that a camera of this scene sees (like DTU's observation masks)",
    )
    p.add_argument(
        "--align",
        action="store_true",
        help="register the mesh to the ground truth first (similarity, as recon align), then score",
    )
    p.add_argument(
        "--ot", action="store_true", help="also report the Sinkhorn divergence of the two surfaces' samples"
    )
    p.add_argument("--ot-samples", type=int, default=2000, help="points per surface for --ot (default 2000)")
    p.set_defaults(func=_run_eval_mesh)


def _run_eval_mesh(args) -> int:
    from recon.eval.mesh_metrics import eval_mesh_files

    if args.samples < 1:
        raise ReconError(f"--samples {args.samples}: use a whole number of points from 1 up (default 200000)")
    if args.tau is not None and not (math.isfinite(args.tau) and args.tau > 0):
        raise ReconError(f"--tau {args.tau}: use a positive distance in scene units (or leave it out)")
    crop = None if args.crop is None else (args.crop[:3], args.crop[3:])
    if args.ot and args.ot_samples < 10:
        raise ReconError(f"--ot-samples {args.ot_samples}: use at least 10 points per surface")
    scores = eval_mesh_files(
        args.pred,
        args.gt,
        tau=args.tau,
        n_samples=args.samples,
        crop=crop,
        visible_from=args.visible_from,
        align=args.align,
        ot_samples=args.ot_samples if args.ot else None,
    )
    print(json.dumps(scores))
    return 0


def _add_align(sub) -> None:
    p = sub.add_parser(
        "align", help="register a mesh, point cloud or splat PLY to a reference (similarity, partial overlap)"
    )
    p.add_argument("src", help="file to move: mesh (.ply, .obj, .glb), point cloud PLY or splat PLY")
    p.add_argument("ref", help="reference, in any of the same formats")
    p.add_argument("--out", metavar="ALIGNED", help="write the moved source here, in the source's format")
    p.add_argument(
        "--scale",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="estimate the scale too (default); --no-scale: rigid, scale 1",
    )
    p.set_defaults(func=_run_align)


def _run_align(args) -> int:
    from recon.eval.align import AlignConfig
    from recon.eval.align_io import align_files

    _check_outputs(args.out)
    result = align_files(args.src, args.ref, out=args.out, config=AlignConfig(with_scale=args.scale))
    print(json.dumps(result))
    return 0


def _add_view(sub) -> None:
    p = sub.add_parser("view", help="look at a run, splats, a mesh or a scene in the browser")
    p.add_argument("target", help="run folder, scene folder, splat .ply, or mesh (.ply, .obj, .glb)")
    p.add_argument(
        "--port", type=int, default=8080, help="port to serve on; the next free one if busy (default 8080)"
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.set_defaults(func=_run_view)


def _run_view(args) -> int:
    from viewer.app import serve

    return serve(args.target, host=args.host, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recon", description="Photos in, 3D out.")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_process(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_export(sub)
    _add_compress(sub)
    _add_eval_mesh(sub)
    _add_align(sub)
    _add_view(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP outside training's own handler: unwinds like Ctrl-C (temporary files removed, locks
    released) and exits 128 + the signal's number, without the native stack trace of a library's handler."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


def _handle_termination() -> dict[int, object]:
    """SIGTERM and SIGHUP raise ``Terminated`` (an ignored one, as under nohup, stays ignored); returns the
    handlers to put back."""
    old = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            prev = signal.getsignal(sig)
            if prev == signal.SIG_IGN:
                continue
            signal.signal(sig, _raise_terminated)
        except ValueError:  # not the main thread
            break
        old[sig] = signal.SIG_DFL if prev is None else prev
    return old


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    old_handlers = _handle_termination()
    try:
        return _run(args)
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except ReconError as err:
        print(f"recon: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # on a path the user gave (a folder in the way, no permission, a full disk)
        if err.filename is None:
            raise
        print(f"recon: error: {os_error_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:
        from recon.train.trainer import TrainingFailed

        if isinstance(err, TrainingFailed):
            print(f"recon: error: {err}", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt as err:
        signum = err.signum if isinstance(err, Terminated) else signal.SIGINT
        what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        print(f"recon: {what}", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())

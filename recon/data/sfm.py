"""`recon process`: a folder of photos -> calibrated cameras and sparse points, with pycolmap.

Stages: prepare (upright, resized copies), SIFT extraction, matching, mapping (incremental, with the global mapper as
a fallback when too few photos register), export (COLMAP ``sparse/0``, ``transforms.json``, ``points3D.ply``,
``report.json``). Everything is built in a temporary folder beside the output and renamed into place at the end,
so a failure or Ctrl-C never leaves a half-written scene.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from .atomic import cannot_write
from .errors import ReconError
from .folder_lock import FolderLock
from .formats.colmap import read_colmap
from .formats.nerfstudio import write_transforms
from .native import pycolmap
from .photos import Photo, prepare_photos, scan_photos
from .ply import write_points_ply

log = logging.getLogger("recon")

MATCHERS = ("auto", "exhaustive", "sequential", "spatial")
MAPPERS = ("auto", "incremental", "global")


@dataclass
class ProcessConfig:
    """Options of `recon process`; defaults suit a few dozen to a few hundred handheld photos on a laptop."""

    max_image_size: int = 1600  # long side in pixels of the copies SfM and training use (0 keeps full size)
    camera_model: str = "SIMPLE_RADIAL"  # COLMAP camera model (SIMPLE_RADIAL, PINHOLE, OPENCV, ...)
    single_camera: bool | None = (
        None  # share one camera between photos; None = when all photos share size & focal
    )
    max_num_features: int = 8192  # SIFT features per image
    matcher: str = "auto"  # auto: exhaustive up to `exhaustive_max` photos, else sequential
    exhaustive_max: int = 150  # most photos matched exhaustively under `auto`
    sequential_overlap: int = 10  # neighbours matched per photo with the sequential matcher
    mapper: str = "auto"  # auto: incremental, then global if under `global_fallback_below` of photos register
    global_fallback_below: float = 0.9  # fraction of photos registered under which `auto` also tries global
    low_registration_warning: float = 0.5  # warn when fewer than this fraction of photos register
    num_threads: int = -1  # -1: all cores
    seed: int = 0  # random seed of the mappers (for repeatable results)


@dataclass
class ProcessReport:
    n_images: int
    n_registered: int
    registered_fraction: float
    mean_reprojection_error: float
    mean_track_length: float
    n_points: int
    mapper: str
    matcher: str
    seconds: dict[str, float]


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@contextmanager
def _stage(seconds: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    seconds[name] = round(time.perf_counter() - t0, 3)


def _check_options(cfg: ProcessConfig) -> None:
    if cfg.matcher not in MATCHERS:
        raise ReconError(f"unknown matcher {cfg.matcher!r}; choose one of {', '.join(MATCHERS)}")
    if cfg.mapper not in MAPPERS:
        raise ReconError(f"unknown mapper {cfg.mapper!r}; choose one of {', '.join(MAPPERS)}")
    if not hasattr(pycolmap.CameraModelId, cfg.camera_model):
        raise ReconError(
            f"unknown camera model {cfg.camera_model!r}; use a COLMAP model such as SIMPLE_RADIAL or OPENCV"
        )


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ReconError(f"output {out} is a file; choose a folder for --out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ReconError(
            f"output folder {out} is not empty; pass --overwrite to replace it or choose another --out"
        )


def _reader_options(
    cfg: ProcessConfig, photos: list[Photo]
) -> tuple[pycolmap.ImageReaderOptions, pycolmap.CameraMode]:
    """One shared camera when every photo has the same size and focal prior; the EXIF focal as its initial guess."""
    opts = pycolmap.ImageReaderOptions()
    opts.camera_model = cfg.camera_model
    sizes = {(p.width, p.height) for p in photos}
    focals = {None if p.focal_px is None else round(p.focal_px, 1) for p in photos}
    single = cfg.single_camera if cfg.single_camera is not None else (len(sizes) == 1 and len(focals) == 1)
    mode = pycolmap.CameraMode.SINGLE if single else pycolmap.CameraMode.AUTO
    f = photos[0].focal_px
    if single and f is not None and len(sizes) == 1:
        w, h = photos[0].width, photos[0].height
        model = pycolmap.Camera.create_from_model_name(0, cfg.camera_model, f, w, h)
        opts.camera_params = ",".join(f"{v:.6f}" for v in model.params)
    return opts, mode


def _match(db: Path, cfg: ProcessConfig, n: int) -> str:
    matcher = cfg.matcher
    if matcher == "auto":
        matcher = "exhaustive" if n <= cfg.exhaustive_max else "sequential"
    if matcher == "exhaustive":
        pycolmap.match_exhaustive(db)
    elif matcher == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = cfg.sequential_overlap
        pycolmap.match_sequential(db, pairing_options=pairing)
    else:
        pycolmap.match_spatial(db)
    return matcher


def _largest(models: dict[int, pycolmap.Reconstruction]) -> pycolmap.Reconstruction | None:
    """The model with the most registered images (COLMAP may return several; model 0 is not always the biggest)."""
    if not models:
        return None
    return max(models.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))


def _map_incremental(
    db: Path, images: Path, work: Path, cfg: ProcessConfig, bar
) -> pycolmap.Reconstruction | None:
    opts = pycolmap.IncrementalPipelineOptions()
    opts.num_threads = cfg.num_threads
    opts.random_seed = cfg.seed
    out = work / "incremental"
    out.mkdir()
    return _largest(
        pycolmap.incremental_mapping(db, images, out, options=opts, next_image_callback=lambda: bar(1))
    )


def _map_global(db: Path, images: Path, work: Path, cfg: ProcessConfig) -> pycolmap.Reconstruction | None:
    opts = pycolmap.GlobalPipelineOptions()
    if hasattr(opts, "random_seed"):
        opts.random_seed = cfg.seed
    if hasattr(opts, "num_threads"):
        opts.num_threads = cfg.num_threads
    out = work / "global"
    out.mkdir()
    return _largest(pycolmap.global_mapping(db, images, out, options=opts))


def _report(rec: pycolmap.Reconstruction, n_images: int, mapper: str, matcher: str, seconds) -> ProcessReport:
    n_reg = rec.num_reg_images()
    return ProcessReport(
        n_images=n_images,
        n_registered=n_reg,
        registered_fraction=round(n_reg / n_images, 4),
        mean_reprojection_error=float(rec.compute_mean_reprojection_error()),
        mean_track_length=float(rec.compute_mean_track_length()) if rec.num_points3D() else 0.0,
        n_points=rec.num_points3D(),
        mapper=mapper,
        matcher=matcher,
        seconds=seconds,
    )


def process_photos(
    photos_dir: str | Path,
    out: str | Path,
    cfg: ProcessConfig | None = None,
    overwrite: bool = False,
    console: Console | None = None,
) -> ProcessReport:
    """Solve the cameras of a photo folder and write a scene folder `recon train` reads (see module docstring)."""
    cfg = cfg or ProcessConfig()
    console = console or Console(stderr=True)
    photos_dir, out = Path(photos_dir), Path(out)
    _check_options(cfg)
    photos = scan_photos(photos_dir)
    if out.resolve() == photos_dir.resolve() or photos_dir.resolve() in out.resolve().parents:
        raise ReconError(f"--out {out} is inside the photo folder {photos_dir}; choose a folder outside it")
    with scene_lock(out):  # one writer per scene folder, until it is in place
        _check_output(out, overwrite)
        _remove_stale_work(out)
        return _process_locked(photos_dir, photos, out, cfg, console)


def scene_lock(out: Path) -> FolderLock:
    """The lock of scene folder ``out``: a file beside it, ``.NAME.lock``, since ``out`` is replaced by a rename."""
    full = out.resolve()
    return FolderLock(out, full.parent / f".{full.name}.lock", "scene folder")


def _work_prefix(out: Path) -> str:
    return f".{out.resolve().name}.tmp-"


def _remove_stale_work(out: Path) -> None:
    """Delete the work folders of earlier runs into ``out`` that were killed (we hold the lock: none is live)."""
    parent = out.resolve().parent
    stale = [p for p in parent.glob(_work_prefix(out) + "*") if p.is_dir()]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    if stale:
        log.info("removed %d unfinished scene folder(s) of an earlier run killed while writing", len(stale))


def _process_locked(
    photos_dir: Path, photos: list[Photo], out: Path, cfg: ProcessConfig, console: Console
) -> ProcessReport:
    try:
        work = Path(tempfile.mkdtemp(prefix=_work_prefix(out), dir=out.resolve().parent))
    except OSError as e:
        raise cannot_write(out, e) from None
    seconds: dict[str, float] = {}
    try:
        images = work / "images"
        db = work / "database.db"
        with _progress(console) as progress:
            with _stage(seconds, "prepare"):
                task = progress.add_task("prepare", total=len(photos))
                photos = prepare_photos(photos, images, cfg.max_image_size, lambda: progress.advance(task))
            with _stage(seconds, "extract"):
                task = progress.add_task("extract", total=len(photos))
                reader, mode = _reader_options(cfg, photos)
                extraction = pycolmap.FeatureExtractionOptions()
                extraction.num_threads = cfg.num_threads
                extraction.sift.max_num_features = cfg.max_num_features
                pycolmap.extract_features(
                    db,
                    images,
                    camera_mode=mode,
                    reader_options=reader,
                    extraction_options=extraction,
                    device=pycolmap.Device.cpu,
                )
                progress.update(task, completed=len(photos))
            with _stage(seconds, "match"):
                task = progress.add_task("match", total=1)
                matcher = _match(db, cfg, len(photos))
                progress.update(task, completed=1)
            with _stage(seconds, "map"):
                task = progress.add_task("map", total=len(photos))
                rec, mapper = None, "incremental"
                if cfg.mapper in ("auto", "incremental"):
                    rec = _map_incremental(db, images, work, cfg, lambda k: progress.advance(task, k))
                n_inc = 0 if rec is None else rec.num_reg_images()
                if cfg.mapper == "global" or (
                    cfg.mapper == "auto" and n_inc < cfg.global_fallback_below * len(photos)
                ):
                    if cfg.mapper == "auto":
                        log.info(
                            "incremental mapping registered %d of %d photos; trying the global mapper",
                            n_inc,
                            len(photos),
                        )
                    glob = _map_global(db, images, work, cfg)
                    if glob is not None and glob.num_reg_images() > n_inc:
                        rec, mapper = glob, "global"
                progress.update(task, completed=0 if rec is None else rec.num_reg_images())
        if rec is None or rec.num_reg_images() < 2:
            raise ReconError(
                f"structure from motion could not register the photos in {photos_dir}; take photos with more overlap "
                "(each point of the scene seen from 3+ photos) and more texture, or try --mapper global"
            )
        with _stage(seconds, "export"):
            _export(rec, work)
        report = _report(rec, len(photos), mapper, matcher, seconds)
        (work / "report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
        for leftover in ("incremental", "global"):
            shutil.rmtree(work / leftover, ignore_errors=True)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if report.registered_fraction < cfg.low_registration_warning:
        log.warning(
            "only %d of %d photos registered (%.0f%%): try --mapper global, --matcher exhaustive, a larger "
            "--max-image-size, or photos with more overlap",
            report.n_registered,
            report.n_images,
            100 * report.registered_fraction,
        )
    return report


def _export(rec: pycolmap.Reconstruction, work: Path) -> None:
    """Write sparse/0 (COLMAP binary), transforms.json (nerfstudio) and points3D.ply from the chosen model."""
    sparse = work / "sparse" / "0"
    sparse.mkdir(parents=True)
    rec.write_binary(str(sparse))
    cameras, names, xyz, rgb = read_colmap(sparse)
    write_transforms(
        work / "transforms.json", cameras, [work / "images" / n for n in names], ply_file_path="points3D.ply"
    )
    if xyz is None:
        xyz, rgb = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    write_points_ply(work / "points3D.ply", xyz, rgb)

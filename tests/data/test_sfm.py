"""`recon process`: real structure from motion on the sample scene and the lund photos, and every error path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from recon.cli import main
from recon.data.formats.nerfstudio import read_transforms
from recon.eval.pose import pose_error
from tests.paths import shared_data


def _run(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err
    return code, err


def _photo_dir(tmp_path: Path, n: int) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def _check_scene_files(scene: Path) -> dict:
    for name in (
        "sparse/0/cameras.bin",
        "sparse/0/images.bin",
        "sparse/0/points3D.bin",
        "transforms.json",
        "points3D.ply",
        "report.json",
    ):
        assert (scene / name).is_file(), name
    report = json.loads((scene / "report.json").read_text())
    assert set(report["seconds"]) >= {"prepare", "extract", "match", "map", "export"}
    return report


def test_process_sample_scene_registers_every_view_accurately(sample_scene, tmp_path, capsys):
    out = tmp_path / "scene"
    code, err = _run(["process", str(sample_scene / "images"), "--out", str(out)], capsys)
    assert code == 0, err
    report = _check_scene_files(out)
    n_photos = len(list((sample_scene / "images").iterdir()))
    assert report["n_registered"] == n_photos
    assert report["mean_reprojection_error"] < 1.0
    est, est_paths, _, _ = read_transforms(out / "transforms.json")
    true, true_paths, _, _ = read_transforms(sample_scene / "gt" / "transforms.json")
    by_name = {Path(p).name: i for i, p in enumerate(true_paths)}
    order = [by_name[Path(p).name] for p in est_paths]
    err = pose_error(est.viewmats, true.viewmats[order])
    scene_size = json.loads((sample_scene / "scene.json").read_text())["scene_size"]
    assert err.max_center_error < 0.01 * scene_size, err.center_errors
    assert err.median_rotation_error_deg < 1.0


def test_process_lund_photos(tmp_path, capsys):
    photos = shared_data("lund", "images")
    out = tmp_path / "lund"
    code, err = _run(["process", str(photos), "--out", str(out)], capsys)
    assert code == 0, err
    report = _check_scene_files(out)
    assert report["n_images"] == 29
    assert report["n_registered"] >= 27
    assert report["mean_reprojection_error"] < 2.0


def test_missing_folder(tmp_path, capsys):
    code, err = _run(["process", str(tmp_path / "nope"), "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert "does not exist" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_no_readable_images(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not a jpeg")
    (folder / "notes.txt").write_text("hello")
    code, err = _run(["process", str(folder), "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert "no readable images" in err
    assert not (tmp_path / "out").exists()


def test_fewer_than_three_images(tmp_path, capsys):
    folder = _photo_dir(tmp_path, 2)
    code, err = _run(["process", str(folder), "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert "at least 3" in err


def test_output_not_empty_without_overwrite(tmp_path, capsys):
    folder = _photo_dir(tmp_path, 3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, err = _run(["process", str(folder), "--out", str(out)], capsys)
    assert code == 2
    assert "--overwrite" in err
    assert (out / "keep.txt").read_text() == "precious"


def test_unregistrable_photos_fail_cleanly_and_leave_nothing(tmp_path, capsys):
    """Random noise has no matches: one clear error, exit 2, no output folder and no temporary folder left."""
    folder = _photo_dir(tmp_path, 3)
    out = tmp_path / "out"
    code, err = _run(["process", str(folder), "--out", str(out)], capsys)
    assert code == 2
    assert "could not register" in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["photos"]


def test_low_registration_warns(tmp_path, capsys, sample_scene):
    """Photos of two unrelated scenes: the sample views register, the noise does not -> a warning with what to try."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    views = sorted((sample_scene / "images").iterdir())[:8]
    for v in views:
        shutil.copy(v, folder / v.name)
    rng = np.random.default_rng(1)
    w, h = Image.open(views[0]).size
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"noise_{i:02d}.png")
    code, err = _run(
        ["process", str(folder), "--out", str(tmp_path / "out"), "--mapper", "incremental"], capsys
    )
    assert code == 0, err
    assert "photos registered" in err and "try" in err

"""Issue 20 for `recon process`: one writer per scene folder, leftovers of a killed run removed at the next start,
photos whose pixels cannot be decoded skipped with a warning, and OS errors on --out in one line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recon.cli import main
from recon.data.photos import prepare_photos, scan_photos
from recon.data.sfm import scene_lock


def _photo_dir(tmp_path: Path, n: int, suffix: str = ".png") -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(folder / f"{i:02d}{suffix}")
    return folder


def _truncated_jpeg(path: Path) -> None:
    """A JPEG whose header reads (size, EXIF) but whose pixels stop half way, as from an interrupted copy."""
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("recon: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ----- one writer per scene folder -----


def test_a_second_writer_of_a_scene_folder_is_refused(tmp_path, capsys):
    photos = _photo_dir(tmp_path, 3)
    out = tmp_path / "scene"
    with scene_lock(
        out
    ):  # another `recon process` writing this scene (flock on another descriptor conflicts)
        for flags in ([], ["--overwrite"]):
            code = main(["process", str(photos), "--out", str(out), *flags])
            err = capsys.readouterr().err
            assert code == 2, err
            line = _error_line(err)
            assert f"PID {os.getpid()}" in line and "in use" in line and str(out) in line
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # the lock file went with the lock


def test_a_live_writer_in_another_process_is_refused(tmp_path, capsys):
    photos = _photo_dir(tmp_path, 3)
    out = tmp_path / "scene"
    code = (
        "import sys, time; from pathlib import Path; from recon.data.folder_lock import FolderLock; "
        f"FolderLock(Path({str(out)!r}), Path({str(tmp_path / '.scene.lock')!r})).acquire(); "
        "print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["process", str(photos), "--out", str(out), "--overwrite"]) == 2
        assert f"PID {holder.pid}" in _error_line(capsys.readouterr().err)
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_and_a_killed_run_s_work_folder_are_cleared(tmp_path, capsys):
    photos = _photo_dir(tmp_path, 3)
    out = tmp_path / "scene"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".scene.lock").write_text(f"{dead.pid}\n")
    work = tmp_path / ".scene.tmp-k1ll3d"  # what a SIGKILLed `recon process` leaves beside its --out
    (work / "images").mkdir(parents=True)
    (work / "images" / "00.png").write_bytes(b"half")
    code = main(["process", str(photos), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "could not register" in _error_line(err)  # noise photos: SfM fails, after the start
    assert f"PID {dead.pid}" in err and "taking the lock over" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


# ----- photos that cannot be decoded -----


def test_a_truncated_jpeg_is_skipped_with_a_warning(tmp_path, caplog):
    photos = _photo_dir(tmp_path, 3, ".jpg")
    _truncated_jpeg(photos / "99.jpg")
    found = scan_photos(photos)
    assert len(found) == 4  # the header reads: only decoding finds the damage
    with caplog.at_level(logging.WARNING, logger="recon"):
        prepared = prepare_photos(found, tmp_path / "prepared", 0)
    assert [p.path.name for p in prepared] == ["00.jpg", "01.jpg", "02.jpg"]
    assert any("99.jpg" in r.getMessage() and "cannot be decoded" in r.getMessage() for r in caplog.records)


def test_recon_process_skips_a_truncated_jpeg_among_good_photos(tmp_path, capsys):
    photos = _photo_dir(tmp_path, 3, ".jpg")
    _truncated_jpeg(photos / "99.jpg")
    code = main(["process", str(photos), "--out", str(tmp_path / "scene")])
    err = capsys.readouterr().err
    assert "skipped 1 of 4 photos whose pixels cannot be decoded" in err and "99.jpg" in err, err
    assert code == 2 and "could not register" in _error_line(
        err
    )  # the noise photos themselves do not register


def test_too_few_decodable_photos_is_one_line(tmp_path, capsys):
    photos = _photo_dir(tmp_path, 2, ".jpg")
    _truncated_jpeg(photos / "98.jpg")
    _truncated_jpeg(photos / "99.jpg")
    assert main(["process", str(photos), "--out", str(tmp_path / "scene")]) == 2
    assert "only 2 decodable image(s) of 4" in _error_line(capsys.readouterr().err)


# ----- OS errors on --out -----


def test_process_out_under_a_regular_file_is_one_line(tmp_path, capsys):
    photos = _photo_dir(tmp_path, 3)
    (tmp_path / "afile").write_text("x")
    assert main(["process", str(photos), "--out", str(tmp_path / "afile" / "scene")]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "is a file, not a folder" in line and "--out" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_process_out_in_a_read_only_folder_is_one_line(tmp_path, capsys):
    photos = _photo_dir(tmp_path, 3)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["process", str(photos), "--out", str(ro / "scene")]) == 2
        assert "Permission denied" in _error_line(capsys.readouterr().err)
    finally:
        ro.chmod(0o755)

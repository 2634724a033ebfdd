"""Atomic writes: OS errors on the target are one ReconError line naming it, and the temporary files a killed
write leaves behind are recognised and removed (only those)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile

import pytest

from recon.data.atomic import atomic_path, atomic_write_text, is_temporary, remove_stale_temporaries
from recon.data.errors import ReconError


def test_a_folder_in_the_way_is_one_line(tmp_path):
    (tmp_path / "out.ply").mkdir()
    with pytest.raises(ReconError, match="is a folder; give a file name"):
        atomic_write_text(tmp_path / "out.ply", "x")


def test_a_file_where_a_folder_should_be_is_named(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ReconError) as e:
        atomic_write_text(tmp_path / "afile" / "sub" / "out.ply", "x")
    assert f"{tmp_path / 'afile'} is a file, not a folder" in str(e.value)


def test_no_permission_is_one_line(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(ReconError) as e:
        atomic_write_text(tmp_path / "out.txt", "x")
    assert str(e.value).startswith(f"cannot write {tmp_path / 'out.txt'}: Permission denied")


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    with pytest.raises(ReconError, match="No space left on device") as e:
        with atomic_path(tmp_path / "ckpt.pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_other_errors_of_the_writer_stay_internal(tmp_path):
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "a.txt"):
            raise ValueError("a bug")
    assert list(tmp_path.iterdir()) == []


def test_temporaries_of_a_killed_write_are_recognised_and_removed(tmp_path):
    """A writer SIGKILLed inside atomic_path leaves its temporary file; the next writer's start removes it."""
    (tmp_path / "ckpt").mkdir()
    (tmp_path / ".cache").mkdir()
    script = (
        "import os, signal, sys; from recon.data.atomic import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half'); os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    for target in (
        tmp_path / "ckpt" / "step_000010.pt",
        tmp_path / "config.yaml",
        tmp_path / ".cache" / "a.png",
    ):
        proc = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True)
        assert proc.returncode == -9
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert len(left) == 3 and all(is_temporary(os.path.basename(p)) for p in left), left
    keep = ["step_000020.pt", ".lock", "notes.tmp", ".hidden.tmp", "splats.ply"]
    for name in keep:
        (tmp_path / name).write_text("keep")
    removed = remove_stale_temporaries(tmp_path)
    assert len(removed) == 2  # not the one under .cache: other processes may be writing there
    after = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert after == sorted([*keep, next(p for p in left if p.startswith(".cache/"))])

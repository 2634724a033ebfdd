"""Issue 20, deliverable 6: OS errors on paths the user gives are one line (exit 2); a run that failed before its
first checkpoint is restarted with --overwrite (and the messages say so); temporary files of writes killed in an
earlier run are removed when the next one starts."""

from __future__ import annotations

import shutil

import pytest

from recon.cli import main
from recon.data.run_folder import RunFolder
from recon.train.trainer import train
from tests.train.test_robustness import SETS, _cfg

STALE = ".step_000003.k1ll3d00.pt.tmp.pt"  # as atomic_path names the temporary file of a checkpoint


def _error(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("recon: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def trained_run(tiny_scene, tmp_path_factory):
    run = tmp_path_factory.mktemp("paths") / "run"
    train(tiny_scene, run, _cfg("train.steps=3"))
    return run


def test_train_out_under_a_regular_file(tiny_scene, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code = main(["train", str(tiny_scene), "--out", str(tmp_path / "afile" / "run"), "--steps", "1", *SETS])
    line = _error(capsys, code)
    assert "is a file, not a folder" in line and "--out" in line


@pytest.mark.parametrize("flag", ["--ply", "--splat", "--mesh"])
def test_export_onto_a_folder(flag, trained_run, tmp_path, capsys):
    target = tmp_path / "out.ply"
    target.mkdir()
    line = _error(capsys, main(["export", str(trained_run), flag, str(target)]))
    assert f"{target} is a folder" in line


@pytest.mark.parametrize("flag", ["--ply", "--splat"])
def test_export_under_a_regular_file(flag, trained_run, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    line = _error(capsys, main(["export", str(trained_run), flag, str(tmp_path / "afile" / "x.ply")]))
    assert "is a file, not a folder" in line


def test_align_out_onto_a_folder(tmp_path, capsys):
    (tmp_path / "aligned.ply").mkdir()
    args = ["align", str(tmp_path / "a.ply"), str(tmp_path / "b.ply"), "--out", str(tmp_path / "aligned.ply")]
    assert "is a folder" in _error(capsys, main(args))


def test_an_unreadable_input_path_is_one_line(tmp_path, capsys):
    """An OSError that names a path (here: reading a folder as a file) is a user error, not a traceback."""
    (tmp_path / "mesh.ply").mkdir()
    code = main(["eval-mesh", str(tmp_path / "mesh.ply"), str(tmp_path / "mesh.ply"), "--samples", "10"])
    assert "mesh.ply" in _error(capsys, code)


def test_eval_mesh_samples_0_is_refused_not_nan(tmp_path, capsys):
    code = main(["eval-mesh", str(tmp_path / "a.ply"), str(tmp_path / "b.ply"), "--samples", "0"])
    assert "--samples" in _error(capsys, code)
    assert capsys.readouterr().out == ""


# ----- a run that failed before its first checkpoint -----


@pytest.fixture
def failed_run(tiny_scene, tmp_path, capsys):
    """A run that diverged at its first steps: config and log written, no checkpoint."""
    run = tmp_path / "run"
    bad = ["--set", "optim.opacities_lr=1e30", "--set", "optim.sh0_lr=1e30", "--set", "train.ckpt_every=1000"]
    code = main(["train", str(tiny_scene), "--out", str(run), "--steps", "50", *SETS, *bad])
    err = capsys.readouterr().err
    assert code == 1 and "training stopped" in err, err
    assert RunFolder(run).latest_checkpoint() is None and (run / "config.yaml").exists()
    return run


def test_a_failed_run_is_restarted_with_overwrite(failed_run, tiny_scene, capsys):
    plain = _error(capsys, main(["train", str(tiny_scene), "--out", str(failed_run), "--steps", "2", *SETS]))
    assert "before its first checkpoint" in plain and "--overwrite" in plain and "--resume" not in plain
    args = ["train", str(tiny_scene), "--out", str(failed_run), "--steps", "2", *SETS]
    resumed = _error(capsys, main([*args, "--resume"]))
    assert "--overwrite" in resumed
    assert main([*args, "--overwrite"]) == 0
    assert RunFolder(failed_run).latest_checkpoint() is not None


# ----- stale temporary files -----


def test_stale_temporaries_are_removed_when_a_run_starts(tiny_scene, tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_scene, run, _cfg("train.steps=3"))
    for where in (run / "ckpt" / STALE, run / ".config.k1ll3d00.yaml.tmp.yaml"):
        where.write_bytes(b"half a file")
    keep = run / "notes.tmp"
    keep.write_text("mine")
    code = main(["-v", "train", str(tiny_scene), "--out", str(run), "--resume", "--steps", "4", *SETS])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "removed 2 temporary file(s)" in err, err
    assert not (run / "ckpt" / STALE).exists() and not (run / ".config.k1ll3d00.yaml.tmp.yaml").exists()
    assert keep.read_text() == "mine"


@pytest.mark.parametrize(
    "name, text", [("run.json", '{"scen'), ("config.yaml", "train: [1"), ("run.json", "[]")]
)
def test_a_damaged_run_file_is_one_line(name, text, trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / name).write_text(text)
    line = _error(capsys, main(["eval", str(run)]))
    assert name in line and "--overwrite" in line

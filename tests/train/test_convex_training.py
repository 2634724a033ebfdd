"""Training smooth convexes (``configs/convex.yaml``, 3DCS) end to end on the tiny scene through the CLI, and every
tool that reopens the run (resume, eval, export, viewer) reading it back as convexes."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from recon.cli import main
from recon.data.errors import ReconError
from recon.models.convex import ConvexModel
from recon.models.registry import load_model_file
from recon.train.checkpoint import latest_checkpoint, load_checkpoint
from recon.train.config import Config
from recon.train.overrides import build_config
from recon.train.runs import load_run_model
from recon.train.trainer import train
from tests.paths import REPO

PRESET = str(REPO / "configs" / "convex.yaml")
QUICK = [
    "train.log_every=1",
    "train.ckpt_every=15",
    "data.split_every=5",
    "model.convex.points=5",
    # a split at every fifth step from step 5, so densification really runs in a 30-step test
    "strategy.convex.refine_start=0.15",
    "strategy.convex.refine_every=0.17",
    "strategy.convex.max_grad=0.0",
]


@pytest.fixture(scope="module")
def convex_run(tiny_scene, tmp_path_factory):
    run = tmp_path_factory.mktemp("convexes") / "run"
    sets = [f"--set={s}" for s in QUICK]
    assert (
        main(["train", str(tiny_scene), "--out", str(run), "--config", PRESET, "--steps", "30", *sets]) == 0
    )
    return run


def test_convexes_train_split_and_write_a_reloadable_run(convex_run):
    run = convex_run
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(log) == 30 and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    assert "mask" in log[-1] and log[-1]["mask"] > 0  # the 3DCS mask loss is on
    counts = [r["num_gaussians"] for r in log]
    assert max(counts) > counts[0]  # densification split convexes
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["primitive"] == "convex" and cfg["strategy"]["kind"] == "convex"

    ply = load_model_file(run / "convexes.ply")
    ck = load_checkpoint(latest_checkpoint(run))
    assert isinstance(ply, ConvexModel) and ck["primitive"] == "convex"
    assert ply.points_per_convex == 5
    for k in ConvexModel.PARAM_NAMES:
        assert torch.equal(ply.params[k].data, ck["params"][k]), k
    model, step, _ = load_run_model(run)
    assert isinstance(model, ConvexModel) and step == 30
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["psnr"] is not None and metrics["num_primitives"] == len(model)


def test_resume_continues_exactly(convex_run, tiny_scene, tmp_path):
    """Resuming from step 15 reproduces the uninterrupted run's step-30 model bit for bit."""
    run = tmp_path / "run"
    sets = [f"--set={s}" for s in QUICK]
    base = ["train", str(tiny_scene), "--out", str(run), "--config", PRESET, *sets]
    assert main([*base, "--steps", "30", "--set=train.ckpt_every=15", "--set=train.eval_at_end=false"]) == 0
    for p in (run / "ckpt").glob("*30*"):
        p.unlink()
    assert main([*base, "--steps", "30", "--resume", "--set=train.eval_at_end=false"]) == 0
    a = load_checkpoint(latest_checkpoint(run))["params"]
    b = load_checkpoint(latest_checkpoint(convex_run))["params"]
    for k in ConvexModel.PARAM_NAMES:
        assert torch.equal(a[k], b[k]), k


def test_eval_export_and_viewer_reopen_the_run_as_convexes(convex_run, tmp_path, capsys):
    run = convex_run
    assert main(["eval", str(run)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["psnr"] is not None
    assert (
        main(["export", str(run), "--ply", str(tmp_path / "out.ply"), "--splat", str(tmp_path / "a.splat")])
        == 0
    )
    assert isinstance(load_model_file(tmp_path / "out.ply"), ConvexModel)
    assert (tmp_path / "a.splat").stat().st_size == 32 * len(load_run_model(run)[0])
    mesh = tmp_path / "mesh.ply"
    assert main(["export", str(run), "--mesh", str(mesh), "--method", "tsdf", "--depth-upsample", "1"]) == 0
    assert mesh.stat().st_size > 0

    from viewer.snapshot import ModelSnapshot
    from viewer.targets import load_target

    for target in (load_target(run), load_target(tmp_path / "out.ply")):
        assert isinstance(target.model, ConvexModel)
        assert isinstance(ModelSnapshot.of(target.model).model, ConvexModel)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["model.primitive=convex"], "strategy.kind=default edits per-Gaussian"),  # the Gaussian strategy
        (["reg.normal.weight=0.05"], "reg.normal needs a rendered normal map"),
        (["reg.flat.weight=0.1"], "reg.flat needs per-primitive parameters"),
        (["train.backend=gsplat"], "cpu"),
    ],
)
def test_what_convexes_cannot_do_is_refused_before_the_run_folder(tiny_scene, tmp_path, sets, message):
    run = tmp_path / "run"
    preset = None if sets == ["model.primitive=convex"] else PRESET
    with pytest.raises(ReconError, match=message):
        train(tiny_scene, run, build_config(Config, preset=preset, sets=sets))
    assert not run.exists()


def test_indoor_and_outdoor_presets_layer_on_the_convex_preset():
    indoor = build_config(Config, preset=REPO / "configs" / "convex_indoor.yaml")
    outdoor = build_config(Config, preset=REPO / "configs" / "convex_outdoor.yaml")
    for cfg in (indoor, outdoor):
        assert (
            cfg.model.primitive == "convex" and cfg.strategy.kind == "convex" and cfg.reg.mask.weight == 5e-4
        )
    assert (indoor.strategy.convex.shrink, indoor.strategy.convex.child_sigma) == (0.7, 0.85)
    assert (indoor.optim.points_lr, indoor.model.convex.sigma_init) == (4e-4, 9e-4)
    assert (outdoor.strategy.convex.max_grad, outdoor.optim.sigma_lr) == (2e-3, 4e-3)

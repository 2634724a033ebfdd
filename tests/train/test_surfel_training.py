"""Training 2D surfels (``model.primitive=surfel2d``) end to end on the tiny scene, on the reference backend, and
every tool that reopens the run (eval, export, viewer) rendering it as surfels again."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import recon.export.mesh as mesh_export
from recon.cli import main
from recon.data.errors import ReconError
from recon.models.splats import SplatModel
from recon.train.checkpoint import latest_checkpoint, load_checkpoint
from recon.train.config import Config
from recon.train.overrides import build_config
from recon.train.runs import load_run_model
from recon.train.trainer import train

SURFELS = [
    "model.primitive=surfel2d",
    "train.backend=reference",
    "model.sh_degree=1",
    "train.log_every=1",
    "train.ckpt_every=1000",
    "strategy.default.refine_every=10",
    "strategy.default.refine_start=0.2",
    "strategy.default.grow_grad2d=0.00005",
    "data.split_every=5",
    # both 2DGS regularizers from the first step, so their per-pixel-depth maps are exercised too
    "reg.dist.weight=100",
    "reg.normal.weight=0.05",
]


@pytest.fixture(scope="module")
def surfel_run(tiny_scene, tmp_path_factory):
    run = tmp_path_factory.mktemp("surfels") / "run"
    result = train(tiny_scene, run, build_config(Config, sets=[*SURFELS, "train.steps=40"]))
    return run, result


def test_surfels_train_and_write_a_reloadable_run(surfel_run):
    run, result = surfel_run
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(log) == 40 and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    assert {"dist", "normal"} <= set(log[-1])
    first = sum(r["loss"] for r in log[:5]) / 5
    last = sum(r["loss"] for r in log[-5:]) / 5
    assert last < first, (first, last)
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["primitive"] == "surfel2d"

    ply = SplatModel.load_ply(run / "splats.ply")
    ck = load_checkpoint(latest_checkpoint(run))
    assert ply.primitive == "surfel2d" and ck["primitive"] == "surfel2d"
    assert len(ply) == result.num_primitives == ck["params"]["means"].shape[0]
    for k in ("means", "quats", "opacities", "sh0", "shN"):
        assert torch.equal(ply.params[k].data, ck["params"][k]), k
    assert torch.equal(ply.params["scales"].data[:, :2], ck["params"]["scales"][:, :2])
    model, step, _ = load_run_model(run)
    assert model.primitive == "surfel2d" and step == 40
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["psnr"] is not None and metrics["num_primitives"] == result.num_primitives


def test_eval_export_and_viewer_reopen_the_run_as_surfels(surfel_run, tmp_path, capsys, monkeypatch):
    run, _ = surfel_run
    assert main(["eval", str(run)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["psnr"] is not None
    assert main(["export", str(run), "--ply", str(tmp_path / "out.ply")]) == 0
    assert SplatModel.load_ply(tmp_path / "out.ply").primitive == "surfel2d"

    seen = {}

    def capture(model, cameras, opts, console=None):
        seen["primitive"] = model.primitive
        raise ReconError("captured")

    monkeypatch.setattr("recon.export.mesh.run.extract_mesh", capture)  # the name export_run_mesh calls
    with pytest.raises(ReconError, match="captured"):
        mesh_export.export_run_mesh(run, tmp_path / "mesh.ply", mesh_export.MeshOptions())
    assert seen["primitive"] == "surfel2d"

    from viewer.snapshot import ModelSnapshot
    from viewer.targets import load_target

    target = load_target(run)
    assert target.model.primitive == "surfel2d"
    assert ModelSnapshot.of(target.model).model.primitive == "surfel2d"


def test_surfels_on_gsplat_are_refused_before_the_run_folder_is_touched(tiny_scene, tmp_path):
    run = tmp_path / "run"
    cfg = build_config(Config, sets=["model.primitive=surfel2d", "train.backend=gsplat"])
    with pytest.raises(ReconError, match="cpu.*reference"):
        train(tiny_scene, run, cfg)
    assert not run.exists()


def test_surfel_preset_loads():
    from tests.paths import REPO

    cfg = build_config(Config, preset=REPO / "configs" / "surfel.yaml")
    assert cfg.model.primitive == "surfel2d"
    assert (cfg.reg.dist.kind, cfg.reg.dist.weight, cfg.reg.dist.start_step) == ("ndc2", 1000.0, 3000)
    assert (cfg.reg.normal.weight, cfg.reg.normal.start_step) == (0.05, 7000)


def test_flattening_surfels_is_refused_before_the_run_folder_is_touched(tiny_scene, tmp_path):
    run = tmp_path / "run"
    cfg = build_config(
        Config, sets=["model.primitive=surfel2d", "train.backend=reference", "reg.flat.weight=0.1"]
    )
    with pytest.raises(ReconError, match="reg.flat.weight=0"):
        train(tiny_scene, run, cfg)
    assert not run.exists()

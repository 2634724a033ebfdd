"""Training end to end on a tiny generated scene: learning, resume equality, outputs and every failure path."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from plyfile import PlyData

from recon.cli import main
from recon.models.splats import SplatModel
from recon.train.checkpoint import latest_checkpoint, load_checkpoint
from recon.train.config import Config
from recon.train.overrides import build_config
from recon.train.trainer import train

FAST = [
    "train.backend=cpu",
    "model.sh_degree=1",
    "train.log_every=1",
    "strategy.default.refine_every=10",
    "strategy.default.refine_start=0.1",
    "strategy.default.grow_grad2d=0.00005",
    "data.split_every=5",
]


def _cfg(*sets: str) -> Config:
    return build_config(Config, sets=[*FAST, *sets])


def test_training_learns_and_writes_the_run_folder(tiny_scene, tmp_path):
    run = tmp_path / "run"
    result = train(tiny_scene, run, _cfg("train.steps=200"))
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    first = sum(r["psnr"] for r in log[:5]) / 5
    last = sum(r["psnr"] for r in log[-5:]) / 5
    assert last > first + 3.0, (first, last)
    for name in ("config.yaml", "splats.ply", "metrics.json", "run.json"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_images"] == 2 and metrics["psnr"] > 15
    assert set(metrics) >= {
        "psnr",
        "ssim",
        "lpips",
        "num_primitives",
        "steps",
        "train_seconds",
        "split",
        "n_images",
    }
    assert metrics["steps"] == 200 == result.steps
    assert len(list((run / "renders" / "test").glob("*.png"))) == 2
    assert latest_checkpoint(run).name == "step_000200.pt"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["steps"] == 200
    ply = PlyData.read(str(run / "splats.ply"))["vertex"]
    assert len(ply.data) == result.num_primitives


def test_resume_equals_one_long_run(tiny_scene, tmp_path):
    """2N steps in one run == N steps + a resumed N (fixed seed, one thread), densification included."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        n = 30
        sets = ("train.threads=1", "train.eval_at_end=false", "strategy.default.refine_start=0.05")
        train(tiny_scene, tmp_path / "long", _cfg(f"train.steps={2 * n}", *sets))
        cfg_half = _cfg(f"train.steps={2 * n}", f"train.ckpt_every={n}", *sets)

        # Stop after N steps by handing the trainer a stop request, as Ctrl-C would.
        def stop_at_n(trainer, stats):
            if trainer.step == n:
                trainer._stop_requested = True

        train(tiny_scene, tmp_path / "split", cfg_half, on_step=stop_at_n)
        assert latest_checkpoint(tmp_path / "split").name == f"step_{n:06d}.pt"
        train(tiny_scene, tmp_path / "split", cfg_half, resume=True)
    finally:
        torch.set_num_threads(threads)
    a = load_checkpoint(latest_checkpoint(tmp_path / "long"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "split"))
    assert a["step"] == b["step"] == 2 * n
    for k in SplatModel.PARAM_NAMES:
        assert a["params"][k].shape == b["params"][k].shape, k
        assert torch.allclose(a["params"][k], b["params"][k], atol=1e-5, rtol=0), k


def test_ply_round_trip_of_a_trained_run(tiny_scene, tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_scene, run, _cfg("train.steps=20", "train.eval_at_end=false"))
    model = SplatModel.load_ply(run / "splats.ply")
    ck = load_checkpoint(latest_checkpoint(run))
    for k in SplatModel.PARAM_NAMES:
        assert torch.equal(model.params[k].data, ck["params"][k]), k
    assert main(["export", str(run), "--splat", str(tmp_path / "s.splat")]) == 0
    assert (tmp_path / "s.splat").stat().st_size == 32 * len(model)
    assert main(["eval", str(run)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["psnr"] is not None and (run / "metrics.json").exists()


def test_nan_stops_training_naming_step_and_term(tiny_scene, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(
        [
            "train",
            str(tiny_scene),
            "--out",
            str(run),
            "--steps",
            "50",
            *sum((["--set", s] for s in FAST), []),
            "--set",
            "train.ckpt_every=5",
            "--set",
            "optim.opacities_lr=1e30",
            "--set",
            "optim.sh0_lr=1e30",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "training stopped" in err and "step" in err
    assert "loss term" in err or "parameter" in err
    ck = latest_checkpoint(run)
    if ck is not None:  # every checkpoint kept must hold finite parameters
        assert all(torch.isfinite(v).all() for v in load_checkpoint(ck)["params"].values())


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "{missing}", "--out", "{run}"], "does not exist"),
        (["train", "{empty}", "--out", "{run}"], "no scene found"),
        (["train", "{scene}", "--out", "{run}", "--set", "train.stepz=3"], "unknown config key"),
        (["train", "{scene}", "--out", "{run}", "--config", "{missing}"], "does not exist"),
        (["train", "{scene}", "--out", "{run}", "--resume"], "no checkpoint to resume"),
        (["eval", "{missing}"], "does not exist"),
        (["export", "{empty}", "--splat", "{run}/x.splat"], "has no splats.ply"),
    ],
)
def test_user_errors_exit_2_with_one_line(args, message, tiny_scene, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    subs = {
        "missing": str(tmp_path / "missing"),
        "empty": str(tmp_path / "empty"),
        "scene": str(tiny_scene),
        "run": str(tmp_path / "run"),
    }
    code = main([a.format(**subs) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and err.count("\n") == 1, err


def test_existing_run_needs_resume_or_overwrite(tiny_scene, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    assert main(["train", str(tiny_scene), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "--resume" not in err  # no checkpoint: resuming cannot work (issue 20)
    assert (run / "notes.txt").read_text() == "mine"


def test_mcmc_progressive_and_random_background_train(tiny_scene, tmp_path):
    """MCMC densification grows to its cap; coarse-to-fine and random backgrounds run through the same loop."""
    cfg = _cfg(
        "train.steps=60",
        "strategy.kind=mcmc",
        "strategy.mcmc.cap_max=66",
        "strategy.mcmc.refine_every=10",
        "strategy.mcmc.refine_start=0.05",
        "reg.opacity_l1.weight=0.01",  # MCMC's L1 terms, as configs/mcmc.yaml sets them
        "reg.scale_l1.weight=0.01",
        "train.progressive=[[0.0, 2.0], [0.5, 1.0]]",
        "data.random_background=true",
        "train.eval_at_end=false",
    )
    result = train(tiny_scene, tmp_path / "run", cfg)
    assert result.num_primitives == 66  # grown by 5% per refinement from 60, then held at the cap
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {"opacity_reg", "scale_reg"} <= set(log[-1])
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)


def test_progressive_factor_schedule():
    from recon.train.trainer import _progressive_factor

    schedule = [(0.0, 4.0), (0.25, 2.0), (0.6, 1.0)]
    assert [_progressive_factor(p, schedule) for p in (0.0, 0.2, 0.3, 0.7)] == [4.0, 4.0, 2.0, 1.0]
    assert _progressive_factor(0.5, []) == 1.0


def test_sugar_prune_removes_low_opacity_gaussians_with_their_optimizer_state(tiny_scene, tmp_path):
    from recon.train.trainer import Trainer, load_training_scene

    cfg = _cfg(
        "train.steps=12",
        "strategy.default.refine_start=0.9",  # no densification in this short run
        "reg.sugar.entropy_weight=0.1",
        "reg.sugar.prune_opacity=0.5",
        "reg.sugar.prune_step=6",
    )
    trainer = Trainer(load_training_scene(tiny_scene, cfg), cfg, tmp_path / "run")
    with torch.no_grad():  # half the Gaussians clearly transparent, half clearly opaque
        op = trainer.model.params["opacities"]
        op[::2] = -4.0
        op[1::2] = 4.0
    n0 = len(trainer.model.params["means"])
    for _ in range(6):
        trainer.train_step()
    assert len(trainer.model.params["means"]) == n0
    trainer.train_step()  # step 6 crosses prune_step
    kept = trainer.model.params
    assert len(kept["means"]) == n0 - (n0 + 1) // 2
    assert torch.sigmoid(kept["opacities"]).min() > 0.5
    for name, opt in trainer.optimizers.items():
        state = opt.state[opt.param_groups[0]["params"][0]]
        assert state["exp_avg"].shape[0] == len(kept["means"]), name
    for _ in range(5):
        trainer.train_step()
    assert len(trainer.model.params["means"]) == n0 - (n0 + 1) // 2

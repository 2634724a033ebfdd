"""`recon train`: fit any representation (``model.kind``; splats of ``model.primitive``) to a scene's photos, with
checkpoints, resume, progress and a clean stop.

One step: pick a training view, render it through the representation (one render with everything the loss
needs), compute the named loss terms, backpropagate, let the densifier read the screen-space gradients, step the
optimizers, then let the densifier add, split and remove primitives. Schedules follow `schedule.Clock` (steps or
a time budget). Nothing here knows which representation it trains.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from recon.data.errors import ReconError
from recon.data.run_folder import RunFolder
from recon.data.scene import Scene
from recon.eval.render_eval import write_metrics
from recon.losses.photometric import photometric_loss, psnr
from recon.models import Representation, create_model, model_from_state
from recon.regularizers import RegContext, build_regularizers, needed_outputs, regularization_terms

from .checkpoint import rng_state, set_rng_state
from .config import Config
from .densify import make_densifier
from .overrides import dump_yaml, to_dict
from .run_setup import check_config, load_training_scene, prepare_run, scene_for_training, training_backend
from .schedule import Clock, sh_degree_at

log = logging.getLogger("recon")

# Signals that stop training after the current step with a checkpoint, as Ctrl-C does.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class TrainingFailed(Exception):
    """Training cannot go on (NaN/Inf); the message names the step, the term and the last good checkpoint."""


@dataclass
class TrainResult:
    run: Path
    steps: int
    seconds: float
    num_primitives: int
    metrics: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    # the signal that stopped an interrupted run (None: stopped from the viewer)
    stop_signal: int | None = None


class ViewSampler:
    """Training views in a fresh random order each epoch (seeded; its state is checkpointed)."""

    def __init__(self, ids: np.ndarray, seed: int):
        self.ids = np.asarray(ids)
        self.rng = np.random.default_rng(seed)
        self.order: np.ndarray = np.empty(0, dtype=np.int64)
        self.pos = 0

    def next(self) -> int:
        if self.pos >= len(self.order):
            self.order = self.rng.permutation(self.ids)
            self.pos = 0
        i = int(self.order[self.pos])
        self.pos += 1
        return i

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "order": self.order.copy(), "pos": self.pos}

    def load_state_dict(self, s: dict) -> None:
        self.rng.bit_generator.state = s["rng"]
        self.order = np.asarray(s["order"])
        self.pos = int(s["pos"])


def scene_extent(scene: Scene) -> float:
    """3DGS's scene radius: 1.1 × the largest distance of a camera centre from their mean."""
    c = scene.cameras.centers
    return float(1.1 * np.linalg.norm(c - c.mean(0), axis=1).max()) or 1.0


def make_optimizers(model: Representation, cfg: Config, extent: float) -> dict[str, torch.optim.Optimizer]:
    """One Adam per parameter tensor (densification replaces tensors and their optimizer state by name)."""
    lrs = model.learning_rates(cfg.optim, extent)
    return {
        name: torch.optim.Adam([{"params": p, "lr": lrs[name], "name": name}], eps=1e-15)
        for name, p in model.params.items()
    }


def _progressive_factor(progress: float, schedule: list[tuple[float, float]]) -> float:
    factor = 1.0
    for start, f in sorted(schedule):
        if progress >= start:
            factor = f
    return factor


class Trainer:
    """Owns one run: scene, model, optimizers, strategy and schedules; `run()` trains to the end."""

    def __init__(self, scene: Scene, cfg: Config, run: Path, console: Console | None = None):
        self.scene, self.cfg, self.run_dir = scene, cfg, Path(run)
        self.console = console or Console(stderr=True)
        self.backend = training_backend(cfg)
        torch.manual_seed(cfg.train.seed)
        np.random.seed(cfg.train.seed)
        self.extent = scene_extent(scene)
        self.model = create_model(scene, cfg.model, cfg.train.seed)
        self.optimizers = make_optimizers(self.model, cfg, self.extent)
        self.clock = Clock(cfg.train.steps, cfg.train.time_budget)
        self.densifier = self._make_densifier()
        self.sampler = ViewSampler(scene.train_ids, cfg.train.seed)
        self.regularizers = build_regularizers(cfg.reg)
        self.step = 0
        self.elapsed = 0.0
        self.background = torch.tensor(cfg.data.background, dtype=torch.float32)
        self.last_good: Path | None = None
        self._stop_requested = False
        self.stop_signal: int | None = None

    def _make_densifier(self):
        c = self.cfg
        return make_densifier(
            c.strategy, c.train.steps, c.model.max_gaussians, self.model.capabilities, self.model.params,
            self.optimizers, self.extent,
        )  # fmt: skip

    # ----- checkpoints -----
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "elapsed": self.elapsed,
            **self.model.state_dict(),  # kind, params and what the representation needs to rebuild itself
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            **self.densifier.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng_state(),
            "config": to_dict(self.cfg),
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.model = model_from_state(s)
        self.optimizers = make_optimizers(self.model, self.cfg, self.extent)
        for k, o in self.optimizers.items():
            o.load_state_dict(s["optimizers"][k])
        self.densifier = self._make_densifier()
        self.densifier.load_state_dict(s)
        self.sampler.load_state_dict(s["sampler"])
        set_rng_state(s["rng"])
        self.step = int(s["step"])
        self.elapsed = float(s["elapsed"])

    def save(self) -> Path:
        path = RunFolder(self.run_dir).save_checkpoint(self.step, self.state_dict())
        self.last_good = path
        return path

    # ----- one step -----
    def _target(
        self, i: int, factor: float, bg: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
        cams = self.scene.cameras[[i]]
        viewmats, Ks = cams.torch()
        pixels = self.scene.image(i) if bg is None else self.scene.images.image_on(i, bg.numpy())
        img = torch.from_numpy(pixels)
        w, h = int(cams.widths[0]), int(cams.heights[0])
        if factor > 1:
            nw, nh = max(1, round(w / factor)), max(1, round(h / factor))
            img = F.interpolate(img.permute(2, 0, 1)[None], size=(nh, nw), mode="area")[0].permute(1, 2, 0)
            Ks = Ks.clone()
            Ks[:, 0] *= nw / w
            Ks[:, 1] *= nh / h
            w, h = nw, nh
        return img, viewmats, Ks, w, h

    def _check_finite(self, terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            if not torch.isfinite(value).all():
                self._fail(f"loss term '{name}' became {value.item()} at step {self.step + 1}")

    def _check_params(self) -> None:
        for name, p in self.model.params.items():
            if not torch.isfinite(p).all():
                self._fail(f"parameter '{name}' has NaN/Inf values after step {self.step}")

    def _fail(self, what: str) -> None:
        where = (
            f"the last good checkpoint is {self.last_good}"
            if self.last_good
            else "no checkpoint was written yet"
        )
        raise TrainingFailed(
            f"training stopped: {what}; {where}. Try a lower learning rate or check the inputs."
        )

    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        progress = self.clock.progress(self.step, self.elapsed)
        nominal = self.clock.nominal_step(self.step, self.elapsed)
        sh_degree = sh_degree_at(progress, self.model.max_sh_degree, cfg.model.sh_degree_interval)
        lrs = self.model.learning_rates(cfg.optim, self.extent, progress)
        for name, o in self.optimizers.items():
            for g in o.param_groups:
                g["lr"] = lrs[name]
        position_lr = lrs[self.model.position_param]
        i = self.sampler.next()
        bg = self.background
        random_bg = cfg.data.random_background and self.scene.images.has_alpha(i)
        if random_bg:
            bg = torch.rand(3)
        factor = _progressive_factor(progress, cfg.train.progressive)
        target, viewmats, Ks, w, h = self._target(i, factor, bg if random_bg else None)
        outputs = ("rgb", *needed_outputs(self.regularizers, nominal))
        out, info = self.model.render(
            viewmats, Ks, w, h, outputs, sh_degree=sh_degree, backgrounds=bg[None], backend=self.backend,
            absgrad=self.densifier.absgrad,
        )  # fmt: skip
        img = out.rgb[0]
        terms = photometric_loss(img, target, cfg.train.ssim_lambda)
        if self.regularizers:
            ctx = RegContext(
                out, info, self.model.params, nominal, viewmats, Ks, w, h, target, self.backend,
                primitive=self.model.primitive,
            )  # fmt: skip
            terms.update(regularization_terms(self.regularizers, ctx))
        self._check_finite(terms)
        loss = sum(terms.values())
        self.densifier.begin(nominal)
        self.densifier.pre_backward(self.model.params, self.optimizers, info)
        loss.backward()
        for o in self.optimizers.values():
            o.step()
            o.zero_grad(set_to_none=True)
        self.densifier.post_backward(self.model.params, self.optimizers, info, position_lr)
        self._prune_for_regularizers(nominal)
        self.step += 1
        stats = {k: float(v.detach()) for k, v in terms.items()}
        stats.update(
            loss=float(loss.detach()),
            psnr=float(psnr(img.detach().clamp(0, 1), target)),
            sh_degree=sh_degree,
            means_lr=position_lr,
            progress=progress,
        )
        return stats

    @torch.no_grad()
    def _prune_for_regularizers(self, nominal: int) -> None:
        """Removals a regularizer's schedule asks for (SuGaR's opacity prune), never below one primitive."""
        for reg in self.regularizers:
            mask = reg.prune_mask(self.model.params, nominal)
            if mask is None or not bool(mask.any()) or bool(mask.all()):
                continue
            self.densifier.remove(self.model.params, self.optimizers, mask)
            self.console.log(f"{reg.name}: pruned {int(mask.sum())} {self.model.noun} at step {nominal}")

    # ----- the loop -----
    def _on_stop_signal(self, signum, frame) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        self.stop_signal = signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self.console.print(
            f"[yellow]{name}: stopping after this step and saving a checkpoint ({name} again to abort)"
        )

    def _install_stop_handlers(self) -> dict[int, Any]:
        """Ctrl-C, SIGTERM (kill, a container stop, a scheduler's time limit) and SIGHUP (the terminal closed)
        stop after the current step with a checkpoint. SIGTERM/SIGHUP left ignored (nohup) stay ignored.
        Returns the handlers to put back; none outside the main thread (e.g. a viewer thread)."""
        old: dict[int, Any] = {}
        for sig in STOP_SIGNALS:
            try:
                prev = signal.getsignal(sig)
                if sig != signal.SIGINT and prev == signal.SIG_IGN:
                    continue
                signal.signal(sig, self._on_stop_signal)
            except ValueError:  # not in the main thread: no graceful stop by signal
                break
            old[sig] = signal.SIG_DFL if prev is None else prev
        return old

    def run(self, on_step=None) -> TrainResult:
        cfg = self.cfg
        log_path = RunFolder(self.run_dir).log_path
        old_handlers = self._install_stop_handlers()
        total = cfg.train.time_budget or cfg.train.steps
        columns = [
            TextColumn("[bold]train"),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        ]
        interrupted = False
        t_last = time.perf_counter()
        window: list[float] = []
        try:
            with (
                Progress(*columns, console=self.console, transient=False) as bar,
                open(log_path, "a") as logf,
            ):
                task = bar.add_task("train", total=total, status="")
                while not self.clock.done(self.step, self.elapsed):
                    t0 = time.perf_counter()
                    stats = self.train_step()
                    dt = time.perf_counter() - t0
                    self.elapsed += dt
                    window = (window + [dt])[-20:]
                    if self.step % cfg.train.log_every == 0 or self.step == 1:
                        self._check_params()
                        rec = {
                            "step": self.step,
                            "elapsed": round(self.elapsed, 3),
                            "num_gaussians": len(self.model),
                            "sec_per_step": round(float(np.mean(window)), 4),
                            **stats,
                        }
                        logf.write(json.dumps(rec) + "\n")
                        logf.flush()
                    if self.step % cfg.train.ckpt_every == 0:
                        self._check_params()  # a checkpoint is only ever written from finite parameters
                        self.save()
                    if time.perf_counter() - t_last > 0.25:
                        t_last = time.perf_counter()
                        status = (
                            f"step {self.step}  loss {stats['loss']:.4f}  psnr {stats['psnr']:.2f}  "
                            f"N {len(self.model):,}  {np.mean(window):.3f} s/step"
                        )
                        done = self.elapsed if cfg.train.time_budget else self.step
                        bar.update(task, completed=done, status=status)
                    if on_step is not None:
                        on_step(self, stats)
                    if self._stop_requested:
                        interrupted = True
                        break
                bar.update(task, completed=self.elapsed if cfg.train.time_budget else self.step)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        self.save()
        self.model.save(RunFolder(self.run_dir).model_path(self.model.file_name))
        result = TrainResult(
            self.run_dir, self.step, self.elapsed, len(self.model), interrupted=interrupted,
            stop_signal=self.stop_signal if interrupted else None,
        )  # fmt: skip
        if interrupted:
            self.console.print(f"interrupted: checkpoint saved at step {self.step}; continue with --resume")
        elif cfg.train.eval_at_end:
            result.metrics = write_metrics(
                self.model, self.scene, RunFolder(self.run_dir), self.step, self.elapsed, self.backend
            )
        return result


def train(
    scene_path: str | Path,
    run: str | Path,
    cfg: Config,
    resume: bool = False,
    overwrite: bool = False,
    console: Console | None = None,
    on_step=None,
) -> TrainResult:
    """Train into run folder ``run`` (see DESIGN.md §3 for its contents)."""
    console = console or Console(stderr=True)
    run = Path(run)
    check_config(cfg)  # refuse impossible numbers, backend or regularizer before touching the run folder
    lock = prepare_run(run, resume, overwrite)  # one writer per run folder, until training ends
    try:
        return _train_locked(scene_path, run, cfg, resume, console, on_step)
    finally:
        lock.release()


def _train_locked(
    scene_path: str | Path, run: Path, cfg: Config, resume: bool, console: Console, on_step
) -> TrainResult:
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    scene_dir = scene_for_training(Path(scene_path), run, console)
    scene = load_training_scene(scene_dir, cfg)
    if len(scene.train_ids) == 0:
        raise ReconError(
            f"scene {scene_dir} has no training images; lower data.split_every or fix the split file"
        )
    folder = RunFolder(run)
    folder.write_config(dump_yaml(cfg))
    folder.write_scene_dir(scene_dir)
    trainer = Trainer(scene, cfg, run, console)
    if resume:
        found = folder.load_newest_checkpoint(trainer.load_state_dict, set_aside=True)
        if found is None:
            raise ReconError(
                f"no checkpoint in {folder.ckpt_dir} can be read; start the run again with --overwrite"
            )
        ck = found[0]
        trainer.last_good = ck
        console.print(f"resuming from {ck} (step {trainer.step})")
    result = trainer.run(on_step=on_step)
    if not math.isfinite(result.seconds):
        raise TrainingFailed("training time is not finite")
    return result

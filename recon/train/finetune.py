"""A short photometric fine-tune of a splat model with fixed primitives: no densification, no schedules.

Why not ``Trainer``: compression changes the model between phases (gates, removed rows, masked SH) and needs a
hook after every optimizer step; ``Trainer`` owns a run folder, a densifier and schedules over a whole training.
The pieces are the trainer's: its view order (``ViewSampler``), loss (``photometric_loss``), Adam per parameter
with the model's learning rates, and its position learning rate at the end of training.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from recon.data.scene import Scene
from recon.losses.photometric import photometric_loss, psnr
from recon.render import rasterize

from .config import Config
from .trainer import ViewSampler, scene_extent


def train_view(scene: Scene, i: int) -> tuple[Tensor, Tensor, Tensor, int, int]:
    """(image [H,W,3], viewmats, Ks, width, height) of view ``i``."""
    cams = scene.cameras[[i]]
    viewmats, Ks = cams.torch()
    return torch.from_numpy(scene.image(i)), viewmats, Ks, int(cams.widths[0]), int(cams.heights[0])


def finetune(
    model,  # a splat model (``render_inputs``, ``params``, ``learning_rates``, ``sh_degree``)
    scene: Scene,
    cfg: Config,
    steps: int,
    backend: str,
    gates: Tensor | None = None,  # [N] in [0,1] multiplied into the opacities (trained by ``gate_step``)
    gate_step: Callable[[], None] | None = None,  # the gates' optimizer step (after backward)
    after_step: Callable[[int], None] | None = None,  # after each optimizer step (proxes, masks)
    seed: int = 0,
) -> dict[str, float]:
    """Fine-tune ``model`` in place for ``steps`` steps; returns the mean training PSNR of the last 20 steps."""
    extent = scene_extent(scene)
    lrs = dict(model.learning_rates(cfg.optim, extent))
    lrs["means"] = cfg.optim.means_lr_final * extent  # where training left the position learning rate
    optimizers = [torch.optim.Adam([p], lr=lrs[name], eps=1e-15) for name, p in model.params.items()]
    sampler = ViewSampler(scene.train_ids, seed)
    background = torch.tensor(cfg.data.background, dtype=torch.float32)[None]
    recent: list[float] = []
    for step in range(steps):
        target, viewmats, Ks, w, h = train_view(scene, sampler.next())
        inputs = model.render_inputs()
        if gates is not None:
            inputs["opacities"] = inputs["opacities"] * gates
        out, _ = rasterize(
            **inputs, viewmats=viewmats, Ks=Ks, width=w, height=h, sh_degree=model.sh_degree,
            backgrounds=background, backend=backend,
        )  # fmt: skip
        img = out.rgb[0]
        loss = sum(photometric_loss(img, target, cfg.train.ssim_lambda).values())
        loss.backward()
        for o in optimizers:
            o.step()
            o.zero_grad(set_to_none=True)
        if gate_step is not None:
            gate_step()
        if after_step is not None:
            after_step(step)
        recent = (recent + [float(psnr(img.detach().clamp(0, 1), target))])[-20:]
    return {"train_psnr": float(np.mean(recent)) if recent else float("nan")}

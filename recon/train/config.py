"""The training configuration: nested dataclasses with commented defaults (3DGS values unless noted).

Presets in ``configs/*.yaml`` override these; ``--set a.b=c`` overrides the preset; the resolved config is saved as
``config.yaml`` in the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from recon.models.registry import PRIMITIVES, REPRESENTATIONS
from recon.regularizers import RegularizersConfig

MODEL_KINDS = tuple(REPRESENTATIONS)  # model.kind choices, from the registry
PRIMITIVE_NAMES = PRIMITIVES  # model.primitive choices, from the registry


@dataclass
class DataConfig:
    downscale: float = 1.0  # image downscale factor (2 = half size); resized copies are cached on disk
    split_every: int = 8  # every Nth image (by sorted name) is held out for testing; 0 = no test split
    split_file: str | None = None  # JSON {"train": [...], "test": [...]} overriding split_every
    background: tuple[float, float, float] = (
        1.0,
        1.0,
        1.0,
    )  # background for transparent images and rendering
    random_background: bool = False  # random background each step (only for scenes with transparent images)
    ram_budget_mb: int = 2048  # most memory the decoded-image cache may hold


@dataclass
class ConvexConfig:
    """How smooth convexes (model.primitive=convex, 3DCS) start; METHODS.md §3.1."""

    points: int = 6  # points per convex (3..8)
    init_size: float = 1.2  # initial radius: this × sqrt(mean squared distance to the 3 nearest neighbours)
    delta_init: float = 0.1  # initial smoothness δ = this / sqrt(that mean squared distance)
    sigma_init: float = 0.00095  # initial sharpness σ (indoor 0.0009, outdoor 0.001)


@dataclass
class ModelConfig:
    # the representation (recon/models/registry.py): "splats" = primitives composited by the rasterizer
    kind: Literal[MODEL_KINDS] = "splats"
    # what splats are (recon/models/primitives/): 3D Gaussians (3DGS, the default) or 2D Gaussian surfels (2DGS: flat
    # discs rendered at each ray's intersection with their plane; cpu/reference backends; configs/surfel.yaml)
    primitive: Literal[PRIMITIVE_NAMES] = "gaussian3d"
    sh_degree: int = 3  # highest spherical-harmonics degree
    sh_degree_interval: float = (
        1000 / 30000
    )  # raise the active SH degree by one after each such fraction of training
    init_opacity: float = 0.1  # opacity of initial Gaussians
    init_scale: float = 1.0  # multiplier of the initial scale (mean distance to the 3 nearest neighbours)
    init_random_points: int = (
        100_000  # Gaussians placed at random in the camera bounds when a scene has no points
    )
    max_gaussians: int = 1_000_000  # hard cap on the number of primitives (densification stops growing there)
    convex: ConvexConfig = field(default_factory=ConvexConfig)  # initial convexes (model.primitive=convex)


@dataclass
class OptimConfig:
    means_lr: float = 1.6e-4  # times the scene extent
    means_lr_final: float = 1.6e-6  # reached at the end by exponential decay, times the scene extent
    scales_lr: float = 5e-3
    quats_lr: float = 1e-3
    opacities_lr: float = 5e-2
    sh0_lr: float = 2.5e-3
    shN_lr: float = 2.5e-3 / 20
    # convexes (3DCS; their opacities use opacities_lr, configs/convex.yaml sets 0.01 as 3DCS)
    points_lr: float = 5e-4  # convex points, not times the scene extent (indoor 4e-4)
    points_lr_final: float = 5e-6  # reached at the end by exponential decay (indoor 4e-6)
    delta_lr: float = 5e-3  # log smoothness
    sigma_lr: float = 4.5e-3  # log sharpness (outdoor 4e-3)
    mask_lr: float = 1e-2  # the convex mask


@dataclass
class DefaultStrategyConfig:
    """gsplat's DefaultStrategy (3DGS densification); iterations are fractions of training (of `train.steps`)."""

    prune_opa: float = 0.005  # prune Gaussians below this opacity
    grow_grad2d: float = 0.0002  # densify Gaussians whose mean screen-space gradient exceeds this
    grow_scale3d: float = 0.01  # clone below / split above this scale (times the scene extent)
    prune_scale3d: float = (
        0.1  # prune Gaussians larger than this (times the scene extent) after the first reset
    )
    refine_start: float = 500 / 30000  # start densifying after this fraction of training
    refine_stop: float = 15000 / 30000  # stop densifying after this fraction
    refine_every: int = 100  # densify every this many steps
    reset_every: int = 3000  # reset opacities every this many steps
    absgrad: bool = False  # use the absolute screen-space gradient (AbsGS); then raise grow_grad2d to ~0.0008


@dataclass
class MCMCStrategyConfig:
    """3DGS-MCMC (gsplat's MCMCStrategy, with pure-torch relocation on the CPU)."""

    cap_max: int = 300_000  # number of Gaussians to grow to
    noise_lr: float = 5e5  # scale of the position noise
    refine_start: float = 500 / 30000
    refine_stop: float = 25000 / 30000
    refine_every: int = 100
    min_opacity: float = 0.005  # relocate Gaussians below this opacity
    # (its L1 terms on opacities and scales are regularizers: reg.opacity_l1 and reg.scale_l1, set in mcmc.yaml)


@dataclass
class ConvexStrategyConfig:
    """3DCS densification and pruning (METHODS.md §3.1); every schedule is a fraction of training."""

    refine_start: float = 500 / 30000  # first split
    refine_stop: float = 9000 / 30000  # last split (indoor 9500)
    refine_every: float = 200 / 30000  # split and prune this often while splitting
    prune_every: float = 1000 / 30000  # prune this often after splitting has stopped
    reset_every: float = 3000 / 30000  # opacity reset this often while splitting (to at most reset_opacity)
    reset_opacity: float = 0.2
    # split convexes whose mean signed dL/dσ (σ activated) over the views they were visible in reaches this;
    # ×8.5 when the scene extent exceeds 300. 3DCS's 2.5e-5 is for its own loss scale. Ours: on the sample scene
    # the mean over the first 120 steps is above 0.0157 for 10% of the initial convexes and above 0.052 for 1%;
    # 0.015 split them from 6,405 to 35,763 in 80 steps, so the default takes about the top 1%. The indoor /
    # outdoor presets keep 3DCS's ratios to it (6e-6 / 2.5e-5 and 1e-6 / 2.5e-5).
    max_grad: float = 0.05
    shrink: float = (
        0.63  # child points = child centre + shrink × (parent points − parent centre) (indoor 0.7)
    )
    child_opacity: float = 0.5  # child opacity = this × the parent's
    child_delta: float = 1.0  # child log δ = this × the parent's
    child_sigma: float = 0.88  # child log σ = this × the parent's (indoor 0.85)
    prune_opacity: float = 0.03  # prune below this opacity
    prune_mask: float = 0.01  # prune where sigmoid(mask) is at most this (indoor 0.02)
    prune_size: float = 0.3  # prune convexes larger than this × the scene extent ...
    prune_size_after: float = 3000 / 30000  # ... after this fraction of training


@dataclass
class StrategyConfig:
    # default: 3DGS (gsplat's DefaultStrategy); mcmc: 3DGS-MCMC; convex: 3DCS splitting (model.primitive=convex)
    kind: Literal["default", "mcmc", "convex"] = "default"
    default: DefaultStrategyConfig = field(default_factory=DefaultStrategyConfig)
    mcmc: MCMCStrategyConfig = field(default_factory=MCMCStrategyConfig)
    convex: ConvexStrategyConfig = field(default_factory=ConvexStrategyConfig)


@dataclass
class TrainConfig:
    steps: int = (
        30_000  # training steps (with a time budget: the nominal length that schedules are fractions of)
    )
    time_budget: float | None = (
        None  # seconds; when set, train until it runs out and every schedule follows it
    )
    ssim_lambda: float = 0.2  # loss = (1-λ)·L1 + λ·(1-SSIM)
    seed: int = 0
    backend: Literal["auto", "cpu", "reference", "gsplat"] = "auto"
    ckpt_every: int = 5000  # checkpoint every this many steps (and at the end)
    log_every: int = 10  # write a line to log.jsonl every this many steps
    progressive: list[tuple[float, float]] = field(default_factory=list)  # [[fraction, extra downscale], ...]
    eval_at_end: bool = True  # render the test split and write metrics.json when training ends
    threads: int = 0  # CPU threads for torch and the kernels; 0 = all cores


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # geometric regularizers, all off by default
    reg: RegularizersConfig = field(default_factory=RegularizersConfig)

"""``recon compress``: a run's splats into a small file other tools open (``.spz``, compressed PLY).

Steps, each in ``recon/export/compress/``: importance of every splat over the training views; the splat count and
SH band groups that fit ``--target-mb`` (measured by encoding); importance pruning to a margin above that count;
a short fine-tune with the k-level group envelope on per-splat gates and per-band SH groups (the loss decides which
survive); the hard threshold to the budget; a short recovery fine-tune with the removed groups held at zero;
quantisation by the format's encoder. The fine-tunes use the trainer's pieces (``finetune.py``), which is why
this orchestration lives in ``recon/train`` and the pieces in ``recon/export``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from recon.data.atomic import atomic_path
from recon.data.errors import ReconError
from recon.export.compress.budget import band_budget, fit_count, planned
from recon.export.compress.envelope import (
    GateOptimizer,
    apply_band_masks,
    band_masks,
    band_slices,
    prox_bands,
    prox_gates,
)
from recon.export.compress.formats import Format, format_for
from recon.export.compress.importance import contribution
from recon.export.compress.options import CompressOptions
from recon.export.compress.params import SplatArrays
from recon.sparsity import top_k_mask

from .finetune import finetune, train_view
from .run_setup import load_training_scene, training_backend
from .runs import check_run, load_run_config, load_run_model

log = logging.getLogger("recon")


def ply_size(n: int, degree: int) -> int:
    """Bytes of the standard 3DGS PLY of ``n`` splats at SH ``degree`` (the size compression is measured against)."""
    props = 17 + 3 * ((degree + 1) ** 2 - 1)
    header = 60 + 30 * props
    return header + 4 * props * n


def _subset(model, rows: torch.Tensor):
    """A copy of ``model`` with only the primitives at ``rows``."""
    state = model.state_dict()
    state["params"] = {k: v[rows].clone() for k, v in state["params"].items()}
    return type(model).from_state(state)


def _views(scene, ids):
    for i in ids:
        _, viewmats, Ks, w, h = train_view(scene, int(i))
        yield viewmats, Ks, w, h


def _check_out(out: str | Path) -> tuple[Path, Format]:
    out = Path(out)
    fmt = format_for(out)
    if not out.parent.is_dir():
        raise ReconError(f"--out {out}: folder {out.parent} does not exist; create it or choose another")
    if out.is_dir():
        raise ReconError(f"--out {out} is a folder; pass a file name ending in .spz or .ply")
    return out, fmt


def _budget(
    arrays: SplatArrays, importance: torch.Tensor, fmt: Format, degree: int, opts: CompressOptions
) -> int:
    """How many splats the file keeps: what fits the target, else those holding keep_contribution of the pixels."""
    if opts.target_mb is None:
        share = torch.cumsum(importance, 0) / importance.sum().clamp_min(1e-12)
        return min(len(arrays), int((share < opts.keep_contribution).sum()) + 1)
    target = int(opts.target_mb * 1e6)
    n = fit_count(arrays, fmt.encode, target, degree, opts.sh_energy)
    if n == 0:
        smallest = len(fmt.encode(planned(arrays, 1, degree, opts.sh_energy)[0]))
        raise ReconError(f"--target-mb {opts.target_mb}: even one splat takes {smallest} bytes; ask for more")
    return n


def _file_degree(model, fmt: Format, opts: CompressOptions) -> int:
    """SH degree of the file: asked for, else the model's where zeros are cheap (entropy coded), else 0."""
    wanted = opts.sh_degree if opts.sh_degree is not None else (model.sh_degree if fmt.entropy_coded else 0)
    return min(model.sh_degree, wanted)


def _sparsify(model, scene, cfg, backend: str, n_keep: int, k_bands: list[int], degree: int, opts) -> tuple:
    """The envelope's fine-tune: per-splat gates and SH band groups pulled toward k non-zero groups by the prox
    after every step (a plain fine-tune where nothing is over budget or the strengths are 0). Returns (gates, mean
    training PSNR, None without steps)."""
    n = len(model)
    gates = torch.ones(n)
    gated = n_keep < n and opts.gate_strength > 0
    banded = degree > 0 and opts.band_strength > 0 and any(k < n for k in k_bands)
    if opts.sparsify_steps == 0:
        return gates, None
    steps = opts.sparsify_steps
    g_lam, b_lam = opts.gate_strength / steps, opts.band_strength / steps
    gates.requires_grad_(True)

    def prox(_step: int) -> None:
        if gated:
            prox_gates(gates, n_keep, g_lam)
        if banded:
            prox_bands(model.params["shN"].data, degree, k_bands, b_lam)

    stats = finetune(
        model, scene, cfg, steps, backend, gates=gates if gated else None,
        gate_step=GateOptimizer(gates, opts.gate_lr).step, after_step=prox,
    )  # fmt: skip
    log.info(
        "compress: %d of %d gates non-zero after the envelope (budget %d)", int((gates > 0).sum()), n, n_keep
    )
    return gates.detach(), stats["train_psnr"]


@torch.no_grad()
def _threshold(model, gates, importance_rank, n_keep: int, k_bands, degree: int, shN_before) -> tuple:
    """The hard threshold: the k strongest gates (ties to the more important splat) fold into the opacities; the
    k_l strongest band groups get back their values from before the shrinking prox (debiased), the others are
    zero. Returns (the smaller model, its band masks [n_keep, degree])."""
    keep = top_k_mask(gates + 1e-6 * importance_rank, n_keep)
    masks = band_masks(model.params["shN"].data, degree, k_bands)
    opacity = torch.sigmoid(model.params["opacities"]) * gates.clamp(1e-4, 1.0)
    model.params["opacities"].data = torch.logit(opacity.clamp(1e-6, 1 - 1e-6))
    for l, s in enumerate(band_slices(degree)):
        model.params["shN"].data[:, s] = shN_before[:, s] * masks[:, l, None, None]
    return _subset(model, keep.nonzero()[:, 0]), masks[keep]


def _encode_within(model, fmt: Format, degree: int, opts, scene, backend: str) -> tuple[SplatArrays, bytes]:
    """Quantised file bytes; one still over the target (gzip's ratio moves a little) loses its least important
    splats until it fits."""
    final = SplatArrays.from_model(model).with_degree(degree)
    data = fmt.encode(final)
    if opts.target_mb is None or len(data) <= opts.target_mb * 1e6:
        return final, data
    imp = contribution(model.render_inputs(), _views(scene, scene.train_ids), backend)
    ranked = final.take(torch.argsort(imp, descending=True).numpy())
    n_fit = fit_count(ranked, fmt.encode, int(opts.target_mb * 1e6), degree, 1.0)
    final = ranked.take(np.arange(max(n_fit, 1)))
    return final, fmt.encode(final)


def compress_run(run: str | Path, out: str | Path, opts: CompressOptions | None = None) -> dict:
    """Compress the newest model of ``run`` into ``out`` (format by suffix); returns a summary."""
    opts = opts or CompressOptions()
    opts.check()
    out, fmt = _check_out(out)
    t0 = time.perf_counter()
    folder = check_run(run)
    cfg = load_run_config(folder.path)
    model, _, _ = load_run_model(folder.path)
    if not hasattr(model, "render_inputs") or "primitives" not in model.capabilities:
        raise ReconError(f"recon compress handles splat runs; {folder.path} holds {model.label}")
    if opts.threads > 0:
        torch.set_num_threads(opts.threads)
    scene = load_training_scene(folder.scene_dir(), cfg)
    backend = training_backend(cfg)
    n_in, degree = len(model), _file_degree(model, fmt, opts)

    # importance, the budget it implies, and pruning by importance to a margin above that budget
    with torch.no_grad():
        importance = contribution(model.render_inputs(), _views(scene, scene.train_ids), backend)
    order = torch.argsort(importance, descending=True)
    ranked = SplatArrays.from_model(model).take(order.numpy())
    n_keep = _budget(ranked, importance[order], fmt, degree, opts)
    k_bands = band_budget(ranked.take(np.arange(n_keep)).with_degree(degree).shN, degree, opts.sh_energy)
    n_pre = min(n_in, max(n_keep, math.ceil(n_keep * opts.margin)))
    model = _subset(model, order[:n_pre])
    with torch.no_grad():
        model.params["shN"][:, (degree + 1) ** 2 - 1 :] = 0.0  # bands the file will not hold
    shN_before = model.params["shN"].detach().clone()

    # the envelope's fine-tune, the hard threshold, and a recovery fine-tune with removed band groups held at zero
    gates, sparsify_psnr = _sparsify(model, scene, cfg, backend, n_keep, k_bands, degree, opts)
    rank = torch.linspace(1.0, 0.0, n_pre)  # the splats are in decreasing importance
    model, masks = _threshold(model, gates, rank, n_keep, k_bands, degree, shN_before)
    stats = {"sparsify": sparsify_psnr}
    if opts.recover_steps:
        hold = lambda _step: apply_band_masks(model.params["shN"].data, degree, masks)  # noqa: E731
        stats["recover"] = finetune(model, scene, cfg, opts.recover_steps, backend, after_step=hold)[
            "train_psnr"
        ]

    with torch.no_grad():
        final, data = _encode_within(model, fmt, degree, opts, scene, backend)
    with atomic_path(out) as tmp:
        Path(tmp).write_bytes(data)
    reference = ply_size(n_in, model.sh_degree)
    return {
        "out": str(out),
        "format": fmt.name,
        "bytes": len(data),
        "ply_bytes": reference,
        "ratio": round(reference / len(data), 2),
        "splats_in": n_in,
        "splats_out": len(final),
        "sh_degree": degree,
        "sh_groups_kept": [int(k) for k in masks.sum(0)] if degree else [],
        "train_psnr": {k: round(v, 3) for k, v in stats.items() if v is not None},
        "seconds": round(time.perf_counter() - t0, 1),
    }

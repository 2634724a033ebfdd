"""Held-out evaluation: render the test cameras, write the images, and measure PSNR, SSIM and (if possible) LPIPS."""

from __future__ import annotations

import logging
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from recon.data.atomic import atomic_path
from recon.data.scene import Scene
from recon.losses.photometric import psnr, ssim
from recon.models.gaussians import GaussianModel
from recon.render import rasterize

log = logging.getLogger("recon")


def lpips_metric():
    """An LPIPS function if its network weights are already on this machine, else (None, reason).

    The `lpips` package downloads torchvision's backbone weights on first use; we never download at run time.
    """
    try:
        import lpips  # noqa: F401
    except ImportError:
        return None, "the lpips package is not installed"
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    if not any(hub.glob("alexnet-*.pth")):
        return None, f"LPIPS backbone weights (alexnet) are not in {hub}; nothing is downloaded at run time"
    import lpips

    net = lpips.LPIPS(net="alex", verbose=False)
    return (lambda a, b: float(net(a.permute(2, 0, 1)[None] * 2 - 1, b.permute(2, 0, 1)[None] * 2 - 1))), None


@torch.no_grad()
def render_view(
    model: GaussianModel, scene: Scene, i: int, sh_degree: int, backend: str, bg=None
) -> torch.Tensor:
    cams = scene.cameras[[i]]
    viewmats, Ks = cams.torch()
    inputs = model.render_inputs()
    bg = torch.as_tensor(scene.background if bg is None else bg, dtype=torch.float32)[None]
    out, _ = rasterize(
        **inputs,
        viewmats=viewmats,
        Ks=Ks,
        width=int(cams.widths[0]),
        height=int(cams.heights[0]),
        sh_degree=sh_degree,
        backgrounds=bg,
        backend=backend,
    )
    return out.rgb[0].clamp(0, 1)


def evaluate(model: GaussianModel, scene: Scene, out_dir: Path | None, backend: str = "auto") -> dict:
    """Metrics over the test split (or nothing if there is none); renders are written to ``out_dir`` as PNG."""
    ids = [int(i) for i in scene.test_ids]
    if not ids:
        return {"psnr": None, "ssim": None, "lpips": None, "lpips_note": "no test images", "n_test": 0}
    lp, reason = lpips_metric()
    if reason:
        log.info("LPIPS not computed: %s", reason)
    ps, ss, ls = [], [], []
    for i in ids:
        img = render_view(model, scene, i, model.sh_degree, backend)
        gt = torch.from_numpy(scene.image(i))
        ps.append(float(psnr(img, gt)))
        ss.append(float(ssim(img, gt)))
        if lp is not None:
            ls.append(lp(img, gt))
        if out_dir is not None:
            path = Path(out_dir) / f"{Path(scene.names[i]).stem}.png"
            with atomic_path(path) as tmp:
                iio.imwrite(tmp, (img.numpy() * 255 + 0.5).astype(np.uint8))
    return {
        "psnr": float(np.mean(ps)),
        "ssim": float(np.mean(ss)),
        "lpips": float(np.mean(ls)) if ls else None,
        "lpips_note": reason,
        "n_test": len(ids),
    }

"""Held-out evaluation: render the test cameras, write the images, and measure PSNR, SSIM and (if possible) LPIPS."""

from __future__ import annotations

import logging
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from recon.data.atomic import atomic_path
from recon.data.run_folder import RunFolder
from recon.data.scene import Scene
from recon.losses.photometric import psnr, ssim
from recon.models import Representation

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
def render_view(model: Representation, scene: Scene, i: int, backend: str, bg=None) -> torch.Tensor:
    """Camera ``i`` of ``scene`` rendered in full (every SH degree) over the scene's background: [H,W,3]."""
    cams = scene.cameras[[i]]
    viewmats, Ks = cams.torch()
    bg = torch.as_tensor(scene.background if bg is None else bg, dtype=torch.float32)[None]
    out, _ = model.render(
        viewmats, Ks, int(cams.widths[0]), int(cams.heights[0]), ("rgb",), backgrounds=bg, backend=backend
    )
    return out.rgb[0].clamp(0, 1)


def evaluate(model: Representation, scene: Scene, out_dir: Path | None, backend: str = "auto") -> dict:
    """Metrics over the test split (or nothing if there is none); renders are written to ``out_dir`` as PNG."""
    ids = [int(i) for i in scene.test_ids]
    if not ids:
        return {"psnr": None, "ssim": None, "lpips": None, "lpips_note": "no test images", "n_test": 0}
    lp, reason = lpips_metric()
    if reason:
        log.info("LPIPS not computed: %s", reason)
    ps, ss, ls = [], [], []
    for i in ids:
        img = render_view(model, scene, i, backend)
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


def write_metrics(
    model: Representation, scene: Scene, run: RunFolder, steps: int, seconds: float, backend: str
) -> dict:
    """Evaluate on the test split and write the run's metrics.json and renders/test/*.png."""
    m = evaluate(model, scene, run.renders_dir("test"), backend)
    metrics = {
        "psnr": m["psnr"],
        "ssim": m["ssim"],
        "lpips": m["lpips"],
        "lpips_note": m["lpips_note"],
        "num_primitives": len(model),
        "steps": steps,
        "train_seconds": round(seconds, 2),
        "split": "test",
        "n_images": m["n_test"],
    }
    run.write_metrics(metrics)
    return metrics

"""``recon eval RUN --model FILE``: score a splat file (3DGS PLY, ``.spz``, compressed PLY) on a run's held-out
views, without touching the run's own metrics.

Why: a compressed file is judged on the same test split, resolution and background as the run it came from.
"""

from __future__ import annotations

from pathlib import Path

import torch

from recon.data.errors import ReconError
from recon.eval.render_eval import evaluate
from recon.models.registry import load_model_file

from .run_setup import load_training_scene, training_backend
from .runs import check_run, load_run_config


def evaluate_model_file(run: str | Path, path: str | Path) -> dict:
    """Held-out metrics of the splats in ``path`` on ``run``'s test views (nothing is written)."""
    path = Path(path)
    if not path.is_file():
        raise ReconError(f"--model {path} does not exist; pass a splat file (.ply, .spz)")
    folder = check_run(run)
    cfg = load_run_config(folder.path)
    scene = load_training_scene(folder.scene_dir(), cfg)
    model = load_model_file(path, "splats")
    with torch.no_grad():
        metrics = evaluate(model, scene, None, training_backend(cfg))
    return {"model": str(path), "bytes": path.stat().st_size, "num_primitives": len(model), **metrics}

"""``RunFolder``: the layout of a run folder (DESIGN.md §3), owned in one place.

Why here, at the bottom of the import graph: train writes run folders, and eval, export and the viewer read them;
each used to keep its own copy of the file names and of how to find the scene or the newest model. Only the
layout and file I/O live here; what the files mean (the typed config, the model) is read by the layers above.

    RUN/config.yaml        the resolved training config
    RUN/run.json           {"scene": absolute path of the scene folder trained on}
    RUN/ckpt/step_N.pt     checkpoints (newest three kept), written atomically
    RUN/<model file>       the representation's own file (Gaussians: splats.ply)
    RUN/metrics.json       held-out metrics (recon.eval)
    RUN/log.jsonl          one JSON object per logged step
    RUN/renders/test/      held-out renders
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from .atomic import atomic_path, atomic_write_text
from .errors import ReconError

CKPT_RE = re.compile(r"step_(\d+)\.pt$")


class RunFolder:
    CONFIG = "config.yaml"
    META = "run.json"
    METRICS = "metrics.json"
    LOG = "log.jsonl"
    CKPT_DIR = "ckpt"
    RENDERS = "renders"
    DEFAULT_MODEL_FILE = "splats.ply"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_path = self.path / self.CONFIG
        self.meta_path = self.path / self.META
        self.metrics_path = self.path / self.METRICS
        self.log_path = self.path / self.LOG
        self.ckpt_dir = self.path / self.CKPT_DIR

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # ----- paths -----
    def renders_dir(self, split: str = "test") -> Path:
        return self.path / self.RENDERS / split

    def model_path(self, file_name: str | None = None) -> Path:
        return self.path / (file_name or self.DEFAULT_MODEL_FILE)

    def checkpoint_path(self, step: int) -> Path:
        return self.ckpt_dir / f"step_{step:06d}.pt"

    # ----- checks -----
    def check_trained(self, model_file: str | None = None) -> RunFolder:
        """This folder, or a ReconError saying what to do when it holds no trained model."""
        if not self.path.is_dir():
            raise ReconError(f"run folder {self.path} does not exist; pass a folder written by `recon train`")
        if not self.model_path(model_file).exists() and self.latest_checkpoint() is None:
            raise ReconError(
                f"{self.path} has no {model_file or self.DEFAULT_MODEL_FILE} or checkpoint; "
                f"train it first with `recon train SCENE --out {self.path}`"
            )
        return self

    # ----- config and scene -----
    def config_dict(self) -> dict[str, Any]:
        """The saved config as plain data ({} when there is none)."""
        if not self.config_path.exists():
            return {}
        return yaml.safe_load(self.config_path.read_text()) or {}

    def setting(self, section: str, key: str, default: Any = None) -> Any:
        """One value of the saved config (``default`` when the file or the key is absent)."""
        return (self.config_dict().get(section) or {}).get(key, default)

    def write_config(self, text: str) -> None:
        atomic_write_text(self.config_path, text)

    def scene_dir(self) -> Path:
        if not self.meta_path.exists():
            raise ReconError(
                f"{self.path} has no {self.META} naming its scene; it was not written by `recon train`"
            )
        return Path(json.loads(self.meta_path.read_text())["scene"])

    def write_scene_dir(self, scene_dir: Path) -> None:
        atomic_write_text(
            self.meta_path, json.dumps({"scene": str(Path(scene_dir).resolve())}, indent=2) + "\n"
        )

    # ----- checkpoints -----
    def checkpoints(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        if not self.ckpt_dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.ckpt_dir.iterdir() if (m := CKPT_RE.search(p.name))]
        return [p for _, p in sorted(found)]

    def latest_checkpoint(self) -> Path | None:
        ckpts = self.checkpoints()
        return ckpts[-1] if ckpts else None

    def save_checkpoint(self, step: int, payload: dict[str, Any], keep: int = 3) -> Path:
        """Write ``payload`` with torch.save via a temporary file, then drop all but the newest ``keep``."""
        import torch

        path = self.checkpoint_path(step)
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        for old in self.checkpoints()[:-keep] if keep > 0 else []:
            old.unlink(missing_ok=True)
        return path

    # ----- results -----
    def write_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_text(self.metrics_path, json.dumps(metrics, indent=2) + "\n")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)

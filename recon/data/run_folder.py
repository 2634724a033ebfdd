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
    RUN/.lock              the PID of the `recon train` writing the run, while it runs (``RunLock``)
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .atomic import atomic_path, atomic_write_text
from .errors import ReconError
from .folder_lock import FolderLock

CKPT_RE = re.compile(r"step_(\d+)\.pt$")
UNREADABLE_SUFFIX = ".unreadable"  # an unreadable checkpoint set aside by a resumed run

log = logging.getLogger("recon")
T = TypeVar("T")


class RunFolder:
    CONFIG = "config.yaml"
    META = "run.json"
    METRICS = "metrics.json"
    LOG = "log.jsonl"
    CKPT_DIR = "ckpt"
    RENDERS = "renders"
    DEFAULT_MODEL_FILE = "splats.ply"
    LOCK = ".lock"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_path = self.path / self.CONFIG
        self.meta_path = self.path / self.META
        self.metrics_path = self.path / self.METRICS
        self.log_path = self.path / self.LOG
        self.ckpt_dir = self.path / self.CKPT_DIR
        self.lock_path = self.path / self.LOCK

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
        try:
            data = yaml.safe_load(self.config_path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ReconError(
                f"{self.config_path} cannot be read ({error_line(e, 80)}); restore it, or train the run again "
                "with --overwrite"
            ) from None
        if not isinstance(data, dict):
            raise ReconError(
                f"{self.config_path} does not hold a config; restore it, or train again with --overwrite"
            )
        return data

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
        try:
            scene = json.loads(self.meta_path.read_text())["scene"]
            if not isinstance(scene, str):
                raise TypeError("scene is not a path")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise ReconError(
                f'{self.meta_path} is damaged ({error_line(e, 80)}); write {{"scene": "/path/to/scene"}} '
                "into it, or train the run again with --overwrite"
            ) from None
        return Path(scene)

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

    def load_newest_checkpoint(
        self, use: Callable[[dict[str, Any]], T] | None = None, set_aside: bool = False
    ) -> tuple[Path, T] | None:
        """The newest checkpoint that can be read, as (path, ``use(state)``) (``use`` defaults to the state itself);
        None when there is none. A checkpoint that fails to load or to ``use`` (truncated, garbage, from a
        full disk) is reported in one warning line and the next older one is tried. ``set_aside`` (a writer
        holding the run) renames the unreadable ones to ``*.pt.unreadable`` so they are neither pruned in place
        of good ones nor taken for the newest again."""
        for path in reversed(self.checkpoints()):
            try:
                state = load_checkpoint(path)
                if not isinstance(state, dict):
                    raise TypeError(f"holds a {type(state).__name__}, not a checkpoint")
                return path, (use(state) if use is not None else state)
            except Exception as e:  # any failure to read or use it: try the older one
                what = error_line(e)
                if set_aside:
                    aside = path.with_name(path.name + UNREADABLE_SUFFIX)
                    path.replace(aside)
                    log.warning(
                        f"checkpoint {path} cannot be read ({what}); moved to {aside.name}, trying older"
                    )
                else:
                    log.warning(f"checkpoint {path} cannot be read ({what}); trying an older one")
        return None

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


class RunLock(FolderLock):
    """One writer per run folder: ``RUN/.lock`` holds the PID of the ``recon train`` writing it (``FolderLock``)."""

    def __init__(self, folder: str | Path):
        super().__init__(folder, Path(folder) / RunFolder.LOCK, "run folder")


def error_line(e: BaseException, limit: int = 160) -> str:
    """``TypeName: first line of the message``, cut to ``limit`` characters."""
    lines = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""Checkpoints: everything needed to continue training exactly where it stopped, written atomically."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon.data.atomic import atomic_path

CKPT_RE = re.compile(r"step_(\d+)\.pt$")


def ckpt_path(run: Path, step: int) -> Path:
    return Path(run) / "ckpt" / f"step_{step:06d}.pt"


def list_checkpoints(run: Path) -> list[Path]:
    folder = Path(run) / "ckpt"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CKPT_RE.search(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run: Path) -> Path | None:
    ckpts = list_checkpoints(run)
    return ckpts[-1] if ckpts else None


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(path: Path, payload: dict[str, Any], keep: int = 3) -> None:
    """Write ``payload`` with torch.save via a temporary file, then drop all but the newest ``keep`` checkpoints."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    old = list_checkpoints(path.parent.parent)[:-keep] if keep > 0 else []
    for p in old:
        p.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)

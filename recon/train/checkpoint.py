"""Checkpoints: everything needed to continue training exactly where it stopped, written atomically.

File layout and I/O belong to ``RunFolder``; these helpers are the trainer's view of them plus the RNG state.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon.data.run_folder import RunFolder, load_checkpoint

__all__ = [
    "latest_checkpoint",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
]


def latest_checkpoint(run: Path) -> Path | None:
    return RunFolder(run).latest_checkpoint()


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])

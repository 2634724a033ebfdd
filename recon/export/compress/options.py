"""Settings of ``recon compress`` (defaults chosen on a trained lund run; see scripts/bench_compress.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from recon.data.errors import ReconError


@dataclass
class CompressOptions:
    target_mb: float | None = None  # file size to fit (MB = 10⁶ bytes); None: prune by keep_contribution only
    keep_contribution: float = (
        0.99  # without a target: keep the splats that make this share of the views' pixels
    )
    sh_degree: int | None = None  # SH degree of the file; None: the model's for .spz, 0 for compressed PLY
    sh_energy: float = 0.8  # per SH band, keep the groups (primitive × band) holding this share of its energy
    margin: float = 1.3  # importance pruning keeps margin × budget splats; the envelope chooses among them
    sparsify_steps: int = 100  # fine-tune steps with the envelope's prox on gates and SH bands
    recover_steps: int = 100  # fine-tune steps after the hard threshold (PSNR back)
    gate_lr: float = 0.02  # step of the gates (normalised gradient)
    gate_strength: float = 2.0  # total prox strength on the gates over the sparsify steps
    band_strength: float = 0.5  # total prox strength on the SH band groups over the sparsify steps
    spz_version: int = 2  # 2: readable by every spz viewer; 3: smallest-three rotations (+1 byte a splat)
    threads: int = 0  # torch threads; 0 = leave as is

    def check(self) -> None:
        """Refuse values that cannot work, in one line naming the option."""
        if self.target_mb is not None and not (math.isfinite(self.target_mb) and self.target_mb > 0):
            raise ReconError(f"--target-mb {self.target_mb}: use a positive size in megabytes")
        if not 0 < self.keep_contribution <= 1:
            raise ReconError(f"--keep {self.keep_contribution}: use a share in (0, 1], e.g. 0.99")
        if self.sh_degree is not None and not 0 <= self.sh_degree <= 3:
            raise ReconError(f"--sh-degree {self.sh_degree}: use 0, 1, 2 or 3")
        if not 0 <= self.sh_energy <= 1:
            raise ReconError(f"--sh-energy {self.sh_energy}: use a share in [0, 1]")
        if self.sparsify_steps < 0 or self.recover_steps < 0:
            raise ReconError("--steps: use a whole number of fine-tune steps from 0 up")
        if self.spz_version not in (2, 3):
            raise ReconError(f"spz version {self.spz_version}: recon writes versions 2 and 3")

"""A frozen copy of a model: what the viewer renders while training goes on changing the real one.

Densification replaces the parameter tensors and the optimizer steps them in place, so the viewer never reads
``trainer.model`` from its own threads: the training thread takes ``model.snapshot()`` (a few memcpys), and the
viewer's threads render it and turn its Gaussian preview into splats at their leisure. Any representation works:
the snapshot talks to it only through the ``Representation`` interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from recon.models import Representation
from recon.render import RenderOutputs


@dataclass(frozen=True)
class ModelSnapshot:
    model: Representation  # a detached CPU copy (``Representation.snapshot``)
    sh_degree: int  # the SH degree to render with (the active one during training)
    step: int | None = None

    @classmethod
    def of(
        cls, model: Representation, sh_degree: int | None = None, step: int | None = None
    ) -> ModelSnapshot:
        degree = model.max_sh_degree if sh_degree is None else int(sh_degree)
        return cls(model.snapshot(), degree, step)

    def __len__(self) -> int:
        return len(self.model)

    @property
    def noun(self) -> str:
        return self.model.noun

    def render(
        self,
        viewmat: np.ndarray,
        K: np.ndarray,
        width: int,
        height: int,
        outputs: Sequence[str],
        background,
        backend,
    ) -> RenderOutputs:
        """One camera's maps (no gradient)."""
        bg = torch.as_tensor(background, dtype=torch.float32)[None]
        with torch.no_grad():
            out, _ = self.model.render(
                torch.as_tensor(viewmat, dtype=torch.float32)[None],
                torch.as_tensor(K, dtype=torch.float32)[None],
                int(width),
                int(height),
                outputs,
                sh_degree=self.sh_degree,
                backgrounds=bg,
                backend=backend,
            )
        return out

    def splat_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(centers [N,3], covariances [N,3,3], rgbs [N,3] in [0,1], opacities [N,1]) for viser's splat renderer:
        the model's Gaussian preview (surfels as flat Gaussians; the view-independent colour, since the browser
        renderer has no SH)."""
        g = self.model.preview()
        return g.means, g.covariances(), g.rgb, g.opacities[:, None]

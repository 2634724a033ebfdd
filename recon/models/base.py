"""The representation seam (DESIGN.md §3): the one interface the trainer, eval, export and the viewer talk to.

Why: Gaussians, surfels, convexes and neural fields must plug in the same way. Everything above ``recon/models``
renders cameras into ``RenderOutputs`` + ``info``, asks for parameter groups and learning rates, saves and loads,
and previews, through this interface alone; nothing outside a representation's own module tests its kind by name.
What a representation can serve beyond that (per-primitive parameters for densification and for the regularizers
that read them) it declares in ``capabilities``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from recon.render import RenderOutputs
from recon.render.projection import quat_to_rotmat

SH_C0 = 0.28209479177387814


@dataclass(frozen=True)
class GaussianCloud:
    """A representation seen as plain 3D Gaussians: what splat files (``.splat``) and the viewer's browser
    renderer show. float32 CPU arrays."""

    means: np.ndarray  # [N,3]
    quats: np.ndarray  # [N,4] wxyz, normalised
    scales: np.ndarray  # [N,3] linear (not log)
    opacities: np.ndarray  # [N] in [0,1]
    rgb: np.ndarray  # [N,3] view-independent colour in [0,1]

    def __len__(self) -> int:
        return len(self.means)

    def covariances(self) -> np.ndarray:
        """[N,3,3] Σ = R diag(s)² Rᵀ."""
        r = quat_to_rotmat(torch.from_numpy(self.quats)).numpy()
        m = r * self.scales[:, None, :]
        return (m @ m.transpose(0, 2, 1)).astype(np.float32)


@dataclass(frozen=True)
class Traits:
    """What a representation configured by a ``model`` config section offers, known before it is built (so a
    run can be refused before its folder is touched)."""

    label: str  # how messages name it, as its config says it: e.g. "model.primitive=NAME"
    capabilities: frozenset[str]  # see Representation.capabilities
    resolve_backend: Callable[
        [str], str
    ]  # "auto" | a backend -> the concrete backend; ValueError if impossible


class Representation(ABC):
    """A trainable scene model. Subclasses set ``kind`` (the ``model.kind`` they are registered under) and keep
    their trainable tensors in ``params`` (a ParameterDict: densification strategies add and remove rows of it,
    the trainer builds one optimizer per entry)."""

    kind: ClassVar[str]
    # the model.primitive values it holds (several classes may share a kind: splats of Gaussians and surfels in
    # one, convexes in another); empty for representations without primitives
    primitives: ClassVar[tuple[str, ...]] = ()
    params: torch.nn.ParameterDict
    file_name: ClassVar[str]  # the model file in a run folder (Gaussians: splats.ply)
    position_param: ClassVar[str] = (
        "means"  # the entry of ``params`` whose learning rate MCMC's noise follows
    )

    # ----- what it is -----
    @classmethod
    @abstractmethod
    def traits(cls, model_cfg: Any) -> Traits:
        """Label, capabilities and backends of the model ``model_cfg`` describes."""

    @property
    def primitive(self) -> str | None:
        """The rasterizer primitive it renders with (``recon.render.PRIMITIVES``), None if it is not splats."""
        return None

    @property
    @abstractmethod
    def capabilities(self) -> frozenset[str]:
        """What it offers beyond rendering: "primitives" (per-primitive means/scales/quats/opacities/SH rows that
        densification and primitive regularizers edit), "volumetric", "contributors" (see recon.regularizers)."""

    @property
    @abstractmethod
    def label(self) -> str:
        """How messages name it, as its config says it: e.g. "model.primitive=NAME"."""

    @property
    @abstractmethod
    def noun(self) -> str:
        """What its elements are called in messages ("Gaussians", "surfels", ...)."""

    @property
    def max_sh_degree(self) -> int:
        """The highest SH degree it renders with (0 for representations without SH)."""
        return 0

    def __len__(self) -> int:
        """Number of primitives (or, for a field, of trainable parameters)."""
        return sum(int(p.numel()) for p in self.params.values())

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    # ----- construction -----
    @classmethod
    @abstractmethod
    def initialize(cls, scene: Any, model_cfg: Any, seed: int) -> Representation:
        """A fresh model for ``scene`` (a ``recon.data.scene.Scene``) from the ``model`` config section."""

    # ----- rendering -----
    @abstractmethod
    def backends(self) -> tuple[str, ...]:
        """Concrete backends that render it (for ``resolve_backend``)."""

    @abstractmethod
    def render(
        self,
        viewmats: Tensor,  # [C,4,4] world-to-camera, OpenCV axes
        Ks: Tensor,  # [C,3,3]
        width: int,
        height: int,
        outputs: Sequence[str] = ("rgb",),
        *,
        sh_degree: int | None = None,  # None: max_sh_degree
        backgrounds: Tensor | None = None,  # [C,3]
        backend: str = "auto",
        absgrad: bool = False,
    ) -> tuple[RenderOutputs, dict[str, Any]]:
        """Render C cameras into the maps named in ``outputs`` plus the info dict densification reads."""

    # ----- training -----
    @abstractmethod
    def learning_rates(self, optim: Any, extent: float, progress: float = 0.0) -> dict[str, float]:
        """The learning rate of each entry of ``params`` from the ``optim`` config section and the scene extent,
        at ``progress`` (0..1) through training: the trainer sets them every step, so decays live here."""

    # ----- persistence -----
    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything ``from_state`` needs to rebuild it (parameters cloned)."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: dict[str, Any]) -> Representation: ...

    @abstractmethod
    def save(self, path: str | Path) -> None:
        """Write its own file atomically (Gaussians: the standard 3DGS PLY)."""

    @classmethod
    @abstractmethod
    def load(cls, path: str | Path, **hints: Any) -> Representation: ...

    # ----- viewing -----
    @abstractmethod
    def preview(self) -> GaussianCloud:
        """It as plain 3D Gaussians, for the browser viewer and for splat files."""

    def snapshot(self) -> Representation:
        """A detached CPU copy that renders like this one while training goes on changing the original."""
        with torch.no_grad():
            state = self.state_dict()
            state["params"] = {k: v.detach().to("cpu", copy=True) for k, v in state["params"].items()}
        return type(self).from_state(state)


def sh0_to_rgb(sh0: Tensor) -> Tensor:
    """Degree-0 SH coefficient -> the colour it renders (colour = SH·C0 + 0.5)."""
    return sh0 * SH_C0 + 0.5


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """Colour in [0,1] -> degree-0 SH coefficient that renders it."""
    return (rgb - 0.5) / SH_C0

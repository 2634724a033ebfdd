"""Photometric losses: L1 and SSIM (the 3DGS loss is (1-λ)·L1 + λ·(1-SSIM), λ = 0.2)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor


@functools.lru_cache(maxsize=8)
def _gaussian_window(size: int, sigma: float, channels: int, dtype: torch.dtype, device: str) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :]).to(dtype=dtype, device=device)
    return w.expand(channels, 1, size, size).contiguous()


def ssim(img: Tensor, ref: Tensor, window: int = 11, sigma: float = 1.5, reduce: bool = True) -> Tensor:
    """SSIM of images [...,H,W,C] in [0,1] with an 11×11 Gaussian window (σ = 1.5), zero-padded as 3DGS does."""
    x = img.reshape(-1, *img.shape[-3:]).permute(0, 3, 1, 2)
    y = ref.reshape(-1, *ref.shape[-3:]).permute(0, 3, 1, 2)
    c = x.shape[1]
    w = _gaussian_window(window, sigma, c, x.dtype, str(x.device))
    pad = window // 2
    mu_x = F.conv2d(x, w, padding=pad, groups=c)
    mu_y = F.conv2d(y, w, padding=pad, groups=c)
    sxx = F.conv2d(x * x, w, padding=pad, groups=c) - mu_x**2
    syy = F.conv2d(y * y, w, padding=pad, groups=c) - mu_y**2
    sxy = F.conv2d(x * y, w, padding=pad, groups=c) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.mean() if reduce else s


def l1(img: Tensor, ref: Tensor) -> Tensor:
    return (img - ref).abs().mean()


def psnr(img: Tensor, ref: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB for images in [0,1]."""
    mse = ((img - ref) ** 2).mean()
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


def photometric_loss(img: Tensor, ref: Tensor, ssim_lambda: float = 0.2) -> dict[str, Tensor]:
    """Named terms of the 3DGS photometric loss."""
    return {"l1": (1 - ssim_lambda) * l1(img, ref), "ssim": ssim_lambda * (1 - ssim(img, ref))}

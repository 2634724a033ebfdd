import math

import torch

from recon.losses.photometric import photometric_loss, psnr, ssim


def test_ssim_identity_and_known_properties():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(32, 40, 3, generator=g)
    assert torch.isclose(ssim(img, img), torch.tensor(1.0), atol=1e-5)
    noisy = (img + 0.2 * torch.randn(img.shape, generator=g)).clamp(0, 1)
    assert ssim(noisy, img) < 0.9
    # SSIM ignores a constant brightness shift far less than an equal-energy noise: structure matters.
    shifted = img * 0.9 + 0.05
    assert ssim(shifted, img) > ssim(noisy, img)
    # Symmetric, and batched shapes agree with single images.
    assert torch.isclose(ssim(noisy, img), ssim(img, noisy), atol=1e-6)
    both = ssim(torch.stack([noisy, img]), torch.stack([img, img]), reduce=False)
    assert both.shape == (2, 3, 32, 40)


def test_psnr_known_value_and_loss_terms():
    a = torch.zeros(4, 4, 3)
    b = torch.full((4, 4, 3), 0.1)
    assert math.isclose(psnr(a, b).item(), 20.0, rel_tol=1e-5)
    terms = photometric_loss(a, b, ssim_lambda=0.2)
    assert math.isclose(terms["l1"].item(), 0.8 * 0.1, rel_tol=1e-5)
    assert terms["ssim"].item() > 0

"""Frame-quality metrics on uint8 frames ``(..., H, W, 3)``, one value per frame.

PSNR and SSIM follow the usual video-prediction protocol (TECO, FitVid): pixel
values in [0, 1], SSIM with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
K2 = 0.03, averaged over channels and valid window positions.
"""

from __future__ import annotations

import numpy as np
import torch


def _as_unit_float(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    frames = torch.as_tensor(np.asarray(frames) if not torch.is_tensor(frames) else frames)
    if frames.dtype != torch.uint8:
        raise ValueError(f"metrics expect uint8 frames, got {frames.dtype}")
    if frames.ndim < 3 or frames.shape[-1] != 3:
        raise ValueError(f"metrics expect frames of shape (..., H, W, 3), got {tuple(frames.shape)}")
    return frames.float() / 255.0


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"frame shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")


def psnr(target: np.ndarray | torch.Tensor, prediction: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per frame, shape ``(...)``; identical frames give +inf."""
    x, y = _as_unit_float(target), _as_unit_float(prediction)
    _check_pair(x, y)
    mse = (x - y).pow(2).mean(dim=(-3, -2, -1))
    return 10 * torch.log10(1.0 / mse)


def _gaussian_blur_matrix(size: int, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """``(size - window + 1, size)`` float64 matrix whose rows are the 1-D Gaussian at each valid offset.

    The 2-D window is the outer product of the 1-D one, so ``M_h @ image @ M_w.T`` is the valid
    11x11 Gaussian filter as two matrix products: fast in float64, where a grouped 2-D
    convolution runs some 30 times slower on a CPU.
    """
    coords = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    matrix = torch.zeros(size - window + 1, size, dtype=torch.float64)
    for i in range(size - window + 1):
        matrix[i, i : i + window] = g
    return matrix


SSIM_CHUNK = 256  # frames blurred at once: float64 blurs of many frames at once need gigabytes


def _ssim_nchw(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM per frame of float64 frames ``(N, 3, H, W)`` in [0, 1]."""
    rows, cols = _gaussian_blur_matrix(x.shape[-2]), _gaussian_blur_matrix(x.shape[-1])

    def blur(z: torch.Tensor) -> torch.Tensor:
        return rows @ z @ cols.T

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def ssim(target: np.ndarray | torch.Tensor, prediction: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Structural similarity per frame, shape ``(...)``, in [-1, 1]; 1 means identical."""
    x, y = _as_unit_float(target), _as_unit_float(prediction)
    _check_pair(x, y)
    lead = x.shape[:-3]
    if min(x.shape[-3:-1]) < 11:
        raise ValueError(f"SSIM needs frames of at least 11x11 pixels, got {tuple(x.shape[-3:-1])}")
    # float64: var = E[x^2] - E[x]^2 cancels badly in float32 next to the small constant C2
    x = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2)
    y = y.reshape(-1, *y.shape[-3:]).permute(0, 3, 1, 2)
    chunks = [
        _ssim_nchw(x[i : i + SSIM_CHUNK].double(), y[i : i + SSIM_CHUNK].double())
        for i in range(0, x.shape[0], SSIM_CHUNK)
    ]
    return torch.cat(chunks).reshape(lead).float()

import math

import numpy as np
import pytest
import torch

from worldmodel.metrics import frames as frames_module
from worldmodel.metrics import psnr, ssim


def test_psnr_matches_hand_computed_value():
    a = np.zeros((2, 16, 16, 3), np.uint8)
    b = a.copy()
    b[0] += 51  # error 0.2 everywhere -> MSE 0.04 -> PSNR = 10 log10(1/0.04)
    values = psnr(a, b)
    assert values.shape == (2,)
    assert values[0].item() == pytest.approx(10 * math.log10(25), abs=1e-4)
    assert math.isinf(values[1].item())


def test_ssim_of_identical_frames_is_one():
    frames = np.random.default_rng(0).integers(0, 256, (3, 4, 32, 32, 3), dtype=np.uint8)
    values = ssim(frames, frames)
    assert values.shape == (3, 4)
    torch.testing.assert_close(values, torch.ones(3, 4))


def test_ssim_of_constant_frames_is_the_luminance_term():
    # constant images have zero variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a = np.full((1, 16, 16, 3), 102, np.uint8)
    b = np.full((1, 16, 16, 3), 204, np.uint8)
    x, y, c1 = 0.4, 0.8, 0.01**2
    assert ssim(a, b).item() == pytest.approx((2 * x * y + c1) / (x * x + y * y + c1), abs=1e-5)


def test_ssim_drops_with_noise():
    rng = np.random.default_rng(0)
    clean = rng.integers(50, 200, (1, 32, 32, 3)).astype(np.uint8)
    mild = np.clip(clean + rng.normal(0, 5, clean.shape), 0, 255).astype(np.uint8)
    heavy = np.clip(clean + rng.normal(0, 40, clean.shape), 0, 255).astype(np.uint8)
    assert 1 > ssim(clean, mild).item() > ssim(clean, heavy).item()


def _ssim_by_2d_convolution(a: np.ndarray, b: np.ndarray) -> torch.Tensor:
    """The textbook computation: an 11x11 Gaussian window (sigma 1.5) as one grouped 2-D convolution."""
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    window = (g[:, None] * g[None, :] / g.sum() ** 2).expand(3, 1, 11, 11)
    x, y = (torch.as_tensor(f).permute(0, 3, 1, 2).double() / 255 for f in (a, b))

    def blur(z):
        return torch.nn.functional.conv2d(z, window, groups=3)

    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y, cov = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2, blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3)).float()


def test_ssim_equals_the_2d_convolution_reference_on_non_square_frames():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (4, 20, 27, 3), dtype=np.uint8)
    b = np.clip(a + rng.normal(0, 30, a.shape), 0, 255).astype(np.uint8)
    torch.testing.assert_close(ssim(a, b), _ssim_by_2d_convolution(a, b), rtol=0, atol=1e-6)


def test_ssim_in_chunks_equals_one_pass(monkeypatch):
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 256, (2, 7, 16, 16, 3), dtype=np.uint8)
    whole = ssim(a, b)
    monkeypatch.setattr(frames_module, "SSIM_CHUNK", 3)  # 7 frames in chunks of 3, 3 and 1
    torch.testing.assert_close(ssim(a, b), whole, rtol=0, atol=0)


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_bad_inputs_raise(metric):
    frames = np.zeros((1, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        metric(frames.astype(np.float32), frames)
    with pytest.raises(ValueError, match="differ"):
        metric(frames, np.zeros((1, 16, 12, 3), np.uint8))

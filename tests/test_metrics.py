import math

import numpy as np
import pytest
import torch

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


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_bad_inputs_raise(metric):
    frames = np.zeros((1, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        metric(frames.astype(np.float32), frames)
    with pytest.raises(ValueError, match="differ"):
        metric(frames, np.zeros((1, 16, 12, 3), np.uint8))

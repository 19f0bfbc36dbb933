import numpy as np
import pytest
import torch

from tests.conftest import moving_square_video
from worldmodel.episodes import DatasetManifest, episode_paths, read_episode, write_episode
from worldmodel.likelihood import (
    code_values,
    episode_code_scores,
    expert_reward_stats,
    reward_statistics,
    stat_key,
)
from worldmodel.token_cache import CODES_KEY, build_token_cache
from worldmodel.tokenizer import FrameTokenizer, TokenizerConfig
from worldmodel.train_video import VideoTraining, train_video
from worldmodel.transformer import VideoTransformer, VideoTransformerConfig
from worldmodel.video_model import VideoModel

TRANSFORMER = VideoTransformerConfig(vocab_size=16, code_shape=(4, 4), window=2, embed_dim=24, layers=2, heads=2)
TOKENIZER = TokenizerConfig(
    image_size=32, base_channels=8, ch_mult=(1, 2, 2, 2), latent_dim=8, quantizer="vq",
    quantizer_kwargs={"codebook_size": 16},
)


def _code_log_probs(*args, **kwargs) -> torch.Tensor:
    return episode_code_scores(*args, **kwargs).log_prob


def _transformer(**overrides) -> VideoTransformer:
    torch.manual_seed(0)
    return VideoTransformer(VideoTransformerConfig(**{**TRANSFORMER.__dict__, **overrides})).eval()


def test_episode_scores_equal_each_phase_scored_as_a_clip():
    model = _transformer()
    codes = np.random.default_rng(0).integers(0, 16, (9, 4, 4)).astype(np.uint16)  # as the token cache stores them
    per_code = _code_log_probs(model, codes, stride=1)
    assert per_code.shape == (9, 4, 4)
    full = model.log_prob(torch.from_numpy(codes.astype(np.int64))[None])[0]
    torch.testing.assert_close(per_code.sum((1, 2)), full, atol=1e-4, rtol=1e-5)
    strided = _code_log_probs(model, codes, stride=3).sum((1, 2))
    for phase in range(3):
        clip = torch.from_numpy(codes[phase::3].astype(np.int64))[None]
        torch.testing.assert_close(strided[phase::3], model.log_prob(clip)[0], atol=1e-4, rtol=1e-5)


def test_task_conditioned_scores_use_the_task():
    model = _transformer(num_tasks=2)
    with torch.no_grad():
        model.blocks[0].ln1.task_weight.normal_()  # make the task matter
    codes = np.random.default_rng(1).integers(0, 16, (4, 4, 4))
    a, b = (_code_log_probs(model, codes, task=t).sum() for t in (0, 1))
    assert not torch.isclose(a, b)
    torch.testing.assert_close(a, model.log_prob(torch.from_numpy(codes)[None], task=torch.tensor([0])).sum())


def test_bad_episode_inputs_are_named():
    model = _transformer()
    with pytest.raises(ValueError, match=r"\(T, h, w\)"):
        _code_log_probs(model, np.zeros((2, 3, 4, 4), np.int64))
    with pytest.raises(ValueError, match="stride"):
        _code_log_probs(model, np.zeros((3, 4, 4), np.int64), stride=0)
    with pytest.raises(ValueError, match="unknown reward score"):
        code_values(episode_code_scores(model, np.zeros((3, 4, 4), np.int64)), "ratio")


def test_reward_statistics_skip_each_episodes_reset_frame():
    found = reward_statistics([np.array([-100.0, 1.0, 2.0, 3.0]), np.array([50.0, 5.0])])
    assert found["frames"] == 4
    assert found["mean"] == pytest.approx(2.75) and found["std"] == pytest.approx(np.std([1, 2, 3, 5]))
    with pytest.raises(ValueError, match="at least 2"):
        reward_statistics([np.array([0.0, 1.0])])


def _dataset_with_manifest(root):
    for i, split in enumerate(["train", "train", "train", "test"]):
        write_episode(root / split / f"ep{i}.npz", moving_square_video(12, 32, i), np.zeros((12, 1), np.float32))
    DatasetManifest("dmc", ["cartpole-swingup"], {"type": "box", "shape": [1], "low": -1.0, "high": 1.0}).save(root)
    return root


def test_expert_stats_from_a_token_cache_and_from_training(tmp_path):
    root = _dataset_with_manifest(tmp_path / "data")
    torch.manual_seed(0)
    tokenizer = FrameTokenizer(TOKENIZER)
    cache = tmp_path / "cache"
    build_token_cache(root, tokenizer, cache)
    model = _transformer()
    stats = expert_reward_stats(model, cache, stride=2)
    scores = [
        _code_log_probs(model, read_episode(p, frames_key=CODES_KEY).video, stride=2).sum((1, 2)).numpy()
        for p in episode_paths(cache, "train")
    ]
    assert {k: stats["cartpole-swingup"][k] for k in ("mean", "std", "frames")} == reward_statistics(scores)
    assert stats["cartpole-swingup"]["frames"] == 33
    adjusted = [
        code_values(episode_code_scores(model, read_episode(p, frames_key=CODES_KEY).video, stride=2), "entropy_adjusted")
        .sum((1, 2)).numpy()
        for p in episode_paths(cache, "train")
    ]
    expected = reward_statistics(adjusted)
    assert stats["cartpole-swingup"][stat_key("entropy_adjusted", "mean")] == expected["mean"]
    assert stats["cartpole-swingup"][stat_key("entropy_adjusted", "std")] == expected["std"]
    assert expected["mean"] > reward_statistics(scores)["mean"]  # the entropy is positive

    tokenizer.save(tmp_path / "tok")
    training = VideoTraining(steps=2, batch_size=2, clip_length=4, eval_every=100, checkpoint_every=100, eval_clips=2)
    train_video(root, tmp_path / "tok", tmp_path / "run", TRANSFORMER, training)
    bundle = VideoModel.load(tmp_path / "run" / "model")
    assert set(bundle.info.reward_stats) == {"cartpole-swingup"}
    assert bundle.info.reward_stats["cartpole-swingup"]["frames"] == 33

    (cache / "manifest.json").unlink()
    with pytest.raises(ValueError, match="no manifest"):
        expert_reward_stats(model, cache, stride=1)

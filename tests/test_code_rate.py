"""A transformer on a causal video tokenizer's codes: k frames per code step, k actions as one, rewards summed."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.conftest import moving_square_video, randomize_weights
from tests.test_video_tokenizer import CONFIG as VIDEO_TOKENIZER
from experiments.eval_consistency import Protocol, evaluate_consistency
from worldmodel.code_rate import aligned_frames, code_rate_action_space, group_actions, group_rewards
from worldmodel.episodes import DatasetManifest, read_episode, write_episode
from worldmodel.reward import VideoLikelihoodReward
from worldmodel.token_cache import CODES_KEY, build_token_cache
from worldmodel.train_video import VideoTraining, fit_to_data, train_video
from worldmodel.transformer import VideoTransformer, VideoTransformerConfig
from worldmodel.video_model import VideoModel, VideoModelInfo
from worldmodel.video_tokenizer import CausalVideoTokenizer

DISCRETE = {"type": "discrete", "n": 3}
TRANSFORMER = VideoTransformerConfig(vocab_size=1, code_shape=(1, 1), window=4, embed_dim=32, layers=2, heads=2)


def test_k_actions_become_one_and_their_rewards_one_sum():
    actions = np.array([0, 1, 2, 1, 2])  # frames 0..4; groups (0, 1), (2, 1), (2, <none>)
    assert group_actions(actions, 2, DISCRETE).tolist() == [0 * 3 + 1, 2 * 3 + 1, 2 * 3 + 0]
    assert code_rate_action_space(DISCRETE, 2) == {"type": "discrete", "n": 9}
    box = np.arange(10, dtype=np.float32).reshape(5, 2)
    assert group_actions(box, 2, {"type": "box", "shape": [2]}).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 0]]
    assert code_rate_action_space({"type": "box", "shape": [2], "low": -1.0, "high": 1.0}, 2) == {
        "type": "box", "shape": [4], "low": -1.0, "high": 1.0}
    assert group_actions(np.zeros((5, 0), np.float32), 2, None).shape == (3, 0)
    assert group_actions(np.stack([actions, actions]), 2, DISCRETE).shape == (2, 3)  # leading dims kept
    assert group_rewards(np.array([1.0, 2.0, 3.0, 4.0, 5.0], np.float32), 2).tolist() == [3.0, 7.0, 5.0]
    assert group_actions(actions, 1, DISCRETE).tolist() == actions.tolist()
    assert code_rate_action_space(DISCRETE, 1) == DISCRETE
    assert [aligned_frames(n, 4) for n in (1, 4, 5, 8, 9, 100)] == [1, 1, 5, 5, 9, 97]


def _tokenizer() -> CausalVideoTokenizer:
    torch.manual_seed(0)
    return randomize_weights(CausalVideoTokenizer(VIDEO_TOKENIZER)).eval()


def _dataset(root, episodes: int = 3, frames: int = 19):
    """One square's drift at 16x16 from several starting frames, one action of 3 and a reward of 1 per frame.

    The held-out episode repeats the first: the codes of an untrained tokenizer are too chaotic to
    generalise from, so what a model shows here is that it fits its data.
    """
    DatasetManifest("test", ["squares"], DISCRETE, frame_skip=2, fps=10.0).save(root)
    for i in range(episodes):
        episode = (moving_square_video(frames + i, 16, 0)[i:], np.random.default_rng(i).integers(3, size=frames),
                   np.ones(frames, np.float32))
        write_episode(root / "train" / f"ep{i}.npz", *episode, terminated=True)
        if i == 0:
            write_episode(root / "test" / "ep0.npz", *episode, terminated=True)
    return root


def test_a_video_tokenizer_cache_is_at_the_rate_of_its_code_steps(tmp_path):
    data, tokenizer = _dataset(tmp_path / "data"), _tokenizer()
    build_token_cache(data, tokenizer, tmp_path / "cache")
    source, cached = read_episode(data / "train" / "ep0.npz"), read_episode(tmp_path / "cache" / "train" / "ep0.npz",
                                                                           frames_key=CODES_KEY)
    # 19 frames: the first 17 (1 + 4 x 4) become 5 code steps, the last 2 are left out
    assert torch.equal(torch.as_tensor(cached.video.astype(np.int64)), tokenizer.encode(source.video[:17]))
    assert cached.actions.tolist() == group_actions(source.actions[:17], 4, DISCRETE).tolist()
    assert cached.actions[0] == ((source.actions[0] * 3 + source.actions[1]) * 3 + source.actions[2]) * 3 + \
        source.actions[3]
    assert cached.rewards.tolist() == [4.0, 4.0, 4.0, 4.0, 1.0]
    assert not cached.terminated  # the episode's end was cut off
    manifest = DatasetManifest.load(tmp_path / "cache")
    assert (manifest.frame_skip, manifest.fps, manifest.action_space) == (8, 2.5, {"type": "discrete", "n": 81})


def _bundle(tmp_path) -> VideoModel:
    data = _dataset(tmp_path / "data")
    _tokenizer().save(tmp_path / "tok")
    training = VideoTraining(steps=150, batch_size=4, clip_length=4, lr=3e-3, warmup_steps=0, eval_every=100,
                             checkpoint_every=100, eval_clips=2)
    config = fit_to_data(TRANSFORMER, _tokenizer(), DatasetManifest.load(data))
    assert (config.num_actions, config.vocab_size) == (81, 125)  # 3 actions, 4 at a time
    summary = train_video(data, tmp_path / "tok", tmp_path / "run", config, training)
    assert summary["bits_per_code"] < 0.25 * math.log2(125)  # an untrained model scores about log2(vocab)
    assert summary["bits_per_dim"] == pytest.approx(summary["bits_per_code"] * 16 / (16 * 16 * 3 * 4))
    return VideoModel.load(tmp_path / "run" / "model")


def test_a_transformer_on_video_codes_learns_and_continues_videos_at_the_frame_rate(tmp_path):
    model = _bundle(tmp_path)
    assert model.transformer.config.num_actions == 81 and model.frames_per_code_step == 4
    assert (model.info.frame_skip, model.info.action_space, model.info.reward_stats) == (2, DISCRETE, {})
    videos = moving_square_video(19, 16, 0)[None]
    actions = np.random.default_rng(0).integers(3, size=(1, 19))  # the first episode's
    predicted = model.continue_video(videos, 6, 7, actions, top_k=1)
    assert predicted.shape == (1, 7, 16, 16, 3) and predicted.dtype == torch.uint8
    # it follows the videos' actions up to the one into the last predicted frame, and none after it
    later = actions.copy()
    later[:, 12:] = 2 - later[:, 12:]
    assert torch.equal(model.continue_video(videos, 6, 7, later, top_k=1), predicted)
    earlier = actions.copy()
    earlier[:, 6:12] = 2 - earlier[:, 6:12]
    assert not torch.equal(model.continue_video(videos, 6, 7, earlier, top_k=1), predicted)
    # it learnt the episode: its frames are those the tokenizer makes of the truth, frame for frame
    ceiling = model.reconstruct(videos, 6, 8).float()
    error = [(predicted.float() - ceiling[:, shift : shift + 7]).abs().mean().item() for shift in (0, 1)]
    assert error[0] < 0.5 * error[1]


def test_frame_by_frame_uses_of_a_video_codes_model_are_refused(tmp_path):
    torch.manual_seed(0)
    config = replace(TRANSFORMER, vocab_size=125, code_shape=(4, 4), num_actions=81)
    model = VideoModel(_tokenizer(), VideoTransformer(config), VideoModelInfo(action_space=DISCRETE, tasks=["a"]))
    frames = torch.zeros(1, 5, 16, 16, 3, dtype=torch.uint8)
    for use in (lambda: model.scorer(1), lambda: model.sampler(1), lambda: model.log_prob(frames),
                lambda: model.rollout(frames, 4), lambda: VideoLikelihoodReward(model, 1)):
        with pytest.raises(ValueError, match="code steps stand for 4 frames each"):
            use()


def test_reconstruction_ceiling_sees_the_context_the_model_sees(tmp_path):
    tokenizer = _tokenizer()
    model = VideoModel(tokenizer, VideoTransformer(replace(TRANSFORMER, vocab_size=125, code_shape=(4, 4))),
                       VideoModelInfo(action_space=DISCRETE))
    videos = np.stack([moving_square_video(12, 16, 0)])
    # context 6: its last 5 frames (1 + 4) are the tokenizer's context; 4 more frames fill one code step
    assert torch.equal(model.reconstruct(videos, 6, 4), tokenizer.decode(tokenizer.encode(videos[:, 1:10]))[:, 5:9])
    # 3 frames leave the last code step one short: the last frame is repeated into it
    padded = np.concatenate([videos[:, 1:9], videos[:, 8:9]], axis=1)
    assert torch.equal(model.reconstruct(videos, 6, 3), tokenizer.decode(tokenizer.encode(padded))[:, 5:8])


def test_eval_consistency_runs_a_video_codes_model_at_the_frame_rate(tmp_path):
    torch.manual_seed(0)
    tokenizer = CausalVideoTokenizer(replace(VIDEO_TOKENIZER, image_size=32))  # LPIPS needs 32 x 32
    config = replace(TRANSFORMER, vocab_size=125, code_shape=tokenizer.code_shape, num_actions=81)
    VideoModel(tokenizer, VideoTransformer(config), VideoModelInfo(frame_skip=2, action_space=DISCRETE)).save(
        tmp_path / "model")
    data = tmp_path / "posed"
    DatasetManifest("test", ["squares"], DISCRETE, frame_skip=2).save(data)
    for i in range(2):
        write_episode(data / "test" / f"ep{i}.npz", moving_square_video(19, 32, i),
                      np.random.default_rng(i).integers(3, size=19), poses=np.zeros((19, 4), np.float32))
    protocol = Protocol(context=6, horizon=9, fvd_context=3, fvd_length=10, late_from=5)
    report = evaluate_consistency(tmp_path / "model", data, tmp_path / "eval", protocol, videos=2, fvd_videos=0,
                                  short_window=2, batch_size=2, save_videos=0)
    rows = {row["name"]: row for row in report["results"]}
    assert {"model", "model, window 2 code steps (8 frames)", "copy-last", "tokenizer (sees the truth)"} <= set(rows)
    assert all(len(curve) == 9 for row in rows.values() for curve in row["curves"].values())

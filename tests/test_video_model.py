import json

import numpy as np
import pytest
import torch

from tests.conftest import moving_square_video
from worldmodel.checkpoint import CheckpointError
from worldmodel.tokenizer import FrameTokenizer, TokenizerConfig
from worldmodel.transformer import VideoTransformer, VideoTransformerConfig
from worldmodel.video_model import VideoModel, VideoModelInfo

TOKENIZER = TokenizerConfig(
    image_size=32, base_channels=8, ch_mult=(1, 2, 2, 2), latent_dim=8, quantizer="vq",
    quantizer_kwargs={"codebook_size": 16},
)
TRANSFORMER = VideoTransformerConfig(
    vocab_size=16, code_shape=(4, 4), window=3, embed_dim=24, layers=2, heads=2, num_tasks=2, num_actions=5
)


def _model() -> VideoModel:
    torch.manual_seed(0)
    info = VideoModelInfo(frame_skip=2, action_space={"type": "discrete", "n": 5}, tasks=["walk", "run"])
    return VideoModel(FrameTokenizer(TOKENIZER), VideoTransformer(TRANSFORMER), info)


def _clips(batch: int = 2, length: int = 6) -> np.ndarray:
    return np.stack([moving_square_video(length, 32, seed) for seed in range(batch)])


def test_log_prob_scorer_and_rollout_shapes():
    model, frames = _model(), _clips()
    actions, task = torch.tensor([[1, 2, 3, 4, 0], [0, 0, 1, 1, 2]]), torch.tensor([0, 1])
    log_prob = model.log_prob(frames, actions, task)
    assert log_prob.shape == (2, 6) and log_prob.dtype == torch.float32
    codes = model.tokenizer.encode(frames)
    assert codes.shape == (2, 6, *model.transformer.config.code_shape)
    torch.testing.assert_close(log_prob, model.transformer.log_prob(codes, actions, task))
    scorer = model.scorer(2)
    streamed = [scorer.push(frames[:, t], None if t == 0 else actions[:, t - 1], task) for t in range(6)]
    torch.testing.assert_close(torch.stack(streamed, 1), log_prob, atol=1e-4, rtol=1e-4)
    seen = []

    def policy(latest: torch.Tensor) -> torch.Tensor:
        seen.append(latest)
        return torch.zeros(2, dtype=torch.long)

    generator = torch.Generator().manual_seed(0)
    video = model.rollout(frames[:, :3], horizon=2, policy=policy, task=task, generator=generator)
    assert video.shape == (2, 2, 32, 32, 3) and video.dtype == torch.uint8
    assert seen[0].shape == (2, 32, 32, 3) and seen[0].dtype == torch.uint8
    assert model.task_id("run") == 1


def test_save_load_round_trip_gives_identical_scores_and_samples(tmp_path):
    model, frames = _model(), _clips()
    model.save(tmp_path / "model")
    loaded = VideoModel.load(tmp_path / "model")
    assert loaded.info == model.info and loaded.window == 3 and loaded.image_size == 32
    task = torch.tensor([1, 0])
    torch.testing.assert_close(loaded.log_prob(frames, task=task), model.log_prob(frames, task=task), rtol=0, atol=0)
    samples = [
        m.rollout(frames[:, :2], 3, task=task, top_k=4, generator=torch.Generator().manual_seed(7))
        for m in (model, loaded)
    ]
    assert torch.equal(samples[0], samples[1])


def test_loading_mismatched_parts_names_the_problem(tmp_path):
    _model().save(tmp_path / "model")
    bundle_file = tmp_path / "model" / "bundle.json"
    bundle = json.loads(bundle_file.read_text())
    bundle_file.write_text(json.dumps({**bundle, "window": 7}))
    with pytest.raises(CheckpointError, match="window: bundle.json says 7, the parts have 3"):
        VideoModel.load(tmp_path / "model")
    bundle_file.write_text(json.dumps(bundle))
    other = VideoTransformerConfig.from_dict({**TRANSFORMER.to_dict(), "vocab_size": 32})
    VideoTransformer(other).save(tmp_path / "model" / "transformer")
    with pytest.raises(CheckpointError, match="transformer models"):
        VideoModel.load(tmp_path / "model")
    with pytest.raises(CheckpointError, match="no video model directory"):
        VideoModel.load(tmp_path / "missing")


def test_bundle_records_the_tokenizer_kind_and_old_bundles_still_load(tmp_path):
    model, frames = _model(), _clips()
    model.save(tmp_path / "model")
    bundle_file = tmp_path / "model" / "bundle.json"
    tokenizer_config = tmp_path / "model" / "tokenizer" / "config.json"
    bundle = json.loads(bundle_file.read_text())
    assert bundle["tokenizer_kind"] == "frame_tokenizer" == VideoModel.load(tmp_path / "model").tokenizer.kind
    # written before kinds were recorded: neither bundle.json nor the tokenizer checkpoint names one
    bundle_file.write_text(json.dumps({k: v for k, v in bundle.items() if k != "tokenizer_kind"}))
    config = json.loads(tokenizer_config.read_text())
    tokenizer_config.write_text(json.dumps({k: v for k, v in config.items() if k != "kind"}))
    task = torch.tensor([1, 0])
    old = VideoModel.load(tmp_path / "model")
    torch.testing.assert_close(old.log_prob(frames, task=task), model.log_prob(frames, task=task), rtol=0, atol=0)
    bundle_file.write_text(json.dumps({**bundle, "tokenizer_kind": "causal_video"}))
    with pytest.raises(CheckpointError, match="tokenizer_kind: bundle.json says causal_video, the parts have frame_tok"):
        VideoModel.load(tmp_path / "model")


def test_bundle_refuses_inconsistent_metadata():
    tokenizer, transformer = FrameTokenizer(TOKENIZER), VideoTransformer(TRANSFORMER)
    with pytest.raises(ValueError, match="2 tasks, but 1 are named"):
        VideoModel(tokenizer, transformer, VideoModelInfo(tasks=["walk"]))
    with pytest.raises(ValueError, match="reward statistics"):
        VideoModel(tokenizer, transformer, VideoModelInfo(tasks=["a", "b"], reward_stats={"c": {"mean": 0, "std": 1}}))

import json
from dataclasses import replace

import imageio
import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import moving_square_video
from tests.test_video_model import TOKENIZER, TRANSFORMER
from experiments.benchmarks import video_model as bench
from experiments.cli import main
from worldmodel.episodes import DatasetManifest, read_episode, write_episode
from worldmodel.tokenizer import FrameTokenizer
from worldmodel.transformer import VideoTransformer
from worldmodel.video_model import VideoModel, VideoModelInfo

TINY = replace(TRANSFORMER, num_tasks=0, num_actions=0)  # action-free, as VIPER scores


def _labelled(root):
    """The tiny dataset plus a random-policy test episode, all labelled in a manifest."""
    write_episode(root / "test" / "ep9.npz", moving_square_video(16, 32, 9), np.arange(16) % 16)
    policies = {"train/ep0.npz": "expert", "test/ep3.npz": "expert", "test/ep9.npz": "random"}
    episodes = {path: {"task": "square", "policy": policy} for path, policy in policies.items()}
    DatasetManifest("synthetic", ["square"], {"type": "discrete", "n": 16}, episodes=episodes).save(root)
    return root


def test_eval_video_scores_groups_and_saves_rollouts(tiny_dataset, tmp_path, capsys):
    torch.manual_seed(0)
    config = replace(TINY, num_actions=16)
    info = VideoModelInfo(action_space={"type": "discrete", "n": 16}, tasks=[])
    VideoModel(FrameTokenizer(TOKENIZER), VideoTransformer(config), info).save(tmp_path / "model")
    out = tmp_path / "eval"
    main(["eval-video", "--model", str(tmp_path / "model"), "--data", str(_labelled(tiny_dataset)),
          "--out", str(out), "--context", "4", "--horizon", "3", "--rollouts", "1"])
    assert f"| {tiny_dataset} | expert | 1 | 16 |" in capsys.readouterr().out
    report = json.loads((out / "eval_video.json").read_text())
    groups = {row["policy"]: row for row in report["likelihood"]}
    assert set(groups) == {"expert", "random"} and groups["random"]["frames"] == 16
    model = VideoModel.load(tmp_path / "model")
    scores = model.log_prob(read_episode(tiny_dataset / "test" / "ep3.npz").video[None])[0]
    assert groups["expert"]["log_prob_per_frame"] == pytest.approx(scores.mean().item(), rel=1e-5)
    after_context = scores[model.window :].mean().item()
    assert groups["expert"]["log_prob_per_frame_after_context"] == pytest.approx(after_context, rel=1e-5)
    rollout = report["rollouts"][0]
    assert rollout["policy"] == "expert" and rollout["frames"] == 7 and len(rollout["psnr_db"]) == 3
    gif = imageio.mimread(rollout["gif"])
    assert len(gif) == 7 and gif[0].shape[:2] == (4 * 32, 4 * 2 * 32)
    assert Image.open(rollout["png"]).size == (2 * 7 * 32, 2 * 2 * 32)
    assert (out / "eval_video.md").read_text().startswith("| dataset | policy |")
    with pytest.raises(SystemExit, match="no video model directory"):
        main(["eval-video", "--model", str(tmp_path / "missing"), "--data", str(tiny_dataset), "--out", str(out)])


def test_benchmark_streaming_equals_receptive_field_reference_and_runs_small():
    model = bench.random_model(TINY)
    cost = bench.reward_cost(model, envs=2, steps=3, checks=2)
    assert cost["max_abs_diff"] < 1e-4 and cost["stream_ms"] > 0
    assert "full receptive field, 7 frames" in bench.reward_table(cost, TINY, 2)
    sampling = bench.sampling_speed(model, batch=1, context=2, horizon=1)
    assert sampling["identical"] and "| 2 | 1 | 1 |" in bench.sampling_table([sampling])
    short, long = (bench.rollout_peak_rss(TINY, frames) for frames in (2, 6))
    assert short["kv_cache_bytes"] == long["kv_cache_bytes"] > 0
    assert "peak RSS ratio" in bench.memory_table(short, long, TINY)

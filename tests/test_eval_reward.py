import json

import numpy as np
import pytest
import torch
from scipy import stats

from experiments.cli import main
from experiments.eval_reward import calibrate_reward, evaluate_reward
from tests.conftest import moving_square_video, randomize_weights
from worldmodel.episodes import DatasetManifest, write_episode
from worldmodel.tokenizer import FrameTokenizer, TokenizerConfig
from worldmodel.transformer import VideoTransformer, VideoTransformerConfig
from worldmodel.video_model import VideoModel, VideoModelInfo

TASK = "cartpole-swingup"
POLICIES = {"expert": 900.0, "noisy0.5": 600.0, "random": 50.0}


def _graded_dataset(root):
    """Two episodes per policy, with their true returns in the manifest as `wm collect` writes them."""
    manifest = DatasetManifest("dmc", [TASK], {"type": "box", "shape": [1], "low": -1.0, "high": 1.0}, frame_skip=2)
    for i, (policy, true_return) in enumerate(POLICIES.items()):
        for j in range(2):
            relpath = f"test/{TASK}/{policy}/seed{j}.npz"
            write_episode(root / relpath, moving_square_video(10, 32, 3 * i + j), np.zeros((10, 1), np.float32))
            manifest.episodes[relpath] = {"task": TASK, "policy": policy, "seed": j, "return": true_return + j}
    manifest.save(root)
    return root


def _model(path, seed=0, tasks=(TASK,)):
    torch.manual_seed(seed)
    tokenizer = FrameTokenizer(TokenizerConfig(
        image_size=32, base_channels=8, ch_mult=(1, 2, 2, 2), latent_dim=8, quantizer="vq",
        quantizer_kwargs={"codebook_size": 16},
    ))
    transformer = VideoTransformer(
        VideoTransformerConfig(vocab_size=16, code_shape=(4, 4), window=2, embed_dim=24, layers=2, heads=2,
                               num_tasks=len(tasks) if len(tasks) > 1 else 0)
    )
    if len(tasks) > 1:
        randomize_weights(transformer)  # task embeddings start at zero: make the tasks differ, as training would
    VideoModel(tokenizer, transformer, VideoModelInfo(frame_skip=2, tasks=list(tasks))).save(path)
    return path


def test_report_scores_episodes_as_the_wrapper_and_correlates(tmp_path):
    data, model_dir = _graded_dataset(tmp_path / "graded"), _model(tmp_path / "model")
    report = evaluate_reward(model_dir, [data], tmp_path / "out")
    model = VideoModel.load(model_dir)
    assert report["standardized"] == [] and len(report["episodes"]) == 6
    for episode in report["episodes"]:
        video = np.load(episode["path"])["video"]
        expected = model.log_prob(video[None])[0, 1:].sum().item()  # reset frame unrewarded
        assert episode["viper_return"] == pytest.approx(expected, rel=1e-5)
    true = [e["true_return"] for e in report["episodes"]]
    viper = [e["viper_return"] for e in report["episodes"]]
    correlations = report["correlations"][TASK]
    assert correlations["spearman"] == pytest.approx(stats.spearmanr(true, viper).statistic)
    assert correlations["pearson"] == pytest.approx(stats.pearsonr(true, viper).statistic)
    assert {row["policy"] for row in report["by_policy"]} == set(POLICIES)
    for name in ("viper_vs_true_return.png", "reward_curves.png", "likelihood_heatmap.png", "reward_eval.md"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert json.loads((tmp_path / "out" / "reward_eval.json").read_text())["table"] == report["table"]

    adjusted = evaluate_reward(model_dir, [data], tmp_path / "adjusted", score="entropy_adjusted")
    assert adjusted["score"] == "entropy_adjusted"
    for episode in adjusted["episodes"]:
        scores = model.transformer.code_scores(model.tokenizer.encode(np.load(episode["path"])["video"][None]))
        expected = (scores.log_prob + scores.entropy)[0, 1:].sum().item()
        assert episode["viper_return"] == pytest.approx(expected, rel=1e-5)

    baseline = VideoModel.load(_model(tmp_path / "baseline", seed=1))
    ratio = evaluate_reward(model_dir, [data], tmp_path / "ratio", baseline_dir=tmp_path / "baseline")
    assert ratio["baseline_model"] == str(tmp_path / "baseline")
    for episode in ratio["episodes"]:
        video = np.load(episode["path"])["video"][None]
        expected = (model.log_prob(video) - baseline.log_prob(video))[0, 1:].sum().item()
        assert episode["viper_return"] == pytest.approx(expected, rel=1e-4)


def test_calibration_stores_statistics_that_standardise_the_report(tmp_path):
    data, model_dir = _graded_dataset(tmp_path / "graded"), _model(tmp_path / "model")
    raw = evaluate_reward(model_dir, [data], tmp_path / "raw")
    for path in (data / "test").rglob("*.npz"):  # calibrate on the same episodes, as if they were expert data
        target = data / "train" / path.relative_to(data / "test")
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    manifest = DatasetManifest.load(data)
    manifest.episodes = {k.replace("test/", "train/", 1): v for k, v in manifest.episodes.items()}
    manifest.save(data)
    found = calibrate_reward(model_dir, data)[TASK]
    assert VideoModel.load(model_dir).info.reward_stats[TASK] == found and found["frames"] == 6 * 9
    standardised = evaluate_reward(model_dir, [data], tmp_path / "std", split="train")
    assert standardised["standardized"] == [TASK]
    raw_returns = {e["path"].replace("/test/", "/train/"): e["viper_return"] for e in raw["episodes"]}
    for episode in standardised["episodes"]:
        expected = (raw_returns[episode["path"]] - 9 * found["mean"]) / found["std"]
        assert episode["viper_return"] == pytest.approx(expected, rel=1e-4, abs=1e-3)


def test_one_model_of_two_sources_is_scored_as_its_own_baseline(tmp_path, capsys):
    data = _graded_dataset(tmp_path / "graded")
    model_dir = _model(tmp_path / "model", tasks=(TASK, f"{TASK}@play"))
    main(["eval-reward", "--model", str(model_dir), "--baseline-model", str(model_dir), "--baseline-task",
          f"{TASK}@play", "--data", str(data), "--out", str(tmp_path / "out")])
    report = json.loads((tmp_path / "out" / "reward_eval.json").read_text())
    assert report["baseline_task"] == f"{TASK}@play"
    model, gaps = VideoModel.load(model_dir), []
    for episode in report["episodes"]:
        video = np.load(episode["path"])["video"][None]
        expert, play = (model.log_prob(video, task=torch.tensor([i]))[0, 1:].sum().item() for i in (0, 1))
        assert episode["viper_return"] == pytest.approx(expert - play, rel=1e-4, abs=1e-3)
        gaps.append(abs(expert - play))
    assert max(gaps) > 0.1  # the two sources score differently: the baseline's task was heeded


def test_cli_names_missing_manifests_and_episodes(tmp_path, capsys):
    model_dir = _model(tmp_path / "model")
    (tmp_path / "bare" / "test").mkdir(parents=True)
    with pytest.raises(SystemExit, match="no manifest.json"):
        main(["eval-reward", "--model", str(model_dir), "--data", str(tmp_path / "bare"), "--out", str(tmp_path / "o")])
    data = _graded_dataset(tmp_path / "graded")
    with pytest.raises(SystemExit, match="no split 'train'"):
        main(["eval-reward", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "o"),
              "--split", "train"])

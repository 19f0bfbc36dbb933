import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from PIL import Image

import envs
from agents.drq import DrQConfig
from agents.replay import ObservationStack
from agents.workspace import Training, load_agent
from envs.experts import make_expert
from experiments.diagnose_reward import diagnose_reward
from experiments.reward_recipe import recipe_expert
from experiments.train_agent import env_factory, run_agent
from tests.conftest import randomize_weights
from worldmodel.tokenizer import FrameTokenizer, TokenizerConfig
from worldmodel.transformer import VideoTransformer, VideoTransformerConfig
from worldmodel.video_model import VideoModel, VideoModelInfo

AGENT = DrQConfig(encoder_channels=(8, 8), feature_dim=16, hidden_dim=32, batch_size=8)
STATS = {"mean": -150.0, "std": 10.0, "entropy_adjusted_mean": -20.0, "entropy_adjusted_std": 5.0, "frames": 100}


@pytest.fixture
def viper_run(tmp_path):
    """A few steps of DrQ on the VIPER likelihood ratio of two small perturbed 64-pixel models, 16-step episodes."""
    torch.manual_seed(0)
    tokenizer = FrameTokenizer(TokenizerConfig(
        image_size=64, base_channels=8, ch_mult=(1, 2, 2, 2), latent_dim=8, quantizer="vq",
        quantizer_kwargs={"codebook_size": 16},
    ))
    transformer = VideoTransformer(VideoTransformerConfig(
        vocab_size=16, code_shape=(8, 8), window=2, embed_dim=24, layers=2, heads=2,
    ))
    info = VideoModelInfo(frame_skip=2, tasks=["cartpole-swingup"], reward_stats={"cartpole-swingup": STATS})
    VideoModel(tokenizer, randomize_weights(transformer.eval()), info).save(tmp_path / "model")
    VideoModel(tokenizer, randomize_weights(transformer), info).save(tmp_path / "baseline")
    training = Training(total_steps=12, seed_steps=4, replay_capacity=100, eval_every=100, eval_episodes=0,
                           checkpoint_every=100, video_every=0)
    run_agent("dmc:cartpole-swingup", tmp_path / "run", "drq", AGENT, training, "viper", tmp_path / "model",
              action_repeat=2, max_episode_steps=16, baseline_dir=tmp_path / "baseline", score="entropy_adjusted",
              mode="joint")
    return tmp_path


def test_diagnosis_scores_the_agent_as_it_was_trained(viper_run, capsys):
    run = viper_run / "run"
    assert json.loads((run / "run.json").read_text())["viper_options"]["score"] == "entropy_adjusted"
    report = diagnose_reward(run, episodes=1, seed=7)
    rows = {row["policy"]: row for row in report["episodes"]}
    assert set(rows) == {"agent", "expert", "random"} and all(r["steps"] == 16 for r in rows.values())

    # The same agent stepped through the training env stack (VIPER wrapper inside action repeat).
    env = env_factory("dmc:cartpole-swingup", "viper", VideoModel.load(viper_run / "model"), 2, 16,
                      baseline=VideoModel.load(viper_run / "baseline"), score="entropy_adjusted", mode="joint")(0)
    agent = load_agent(run / "checkpoint")
    stack = ObservationStack(agent.obs_shape[0] // 3)
    frame, _ = env.reset(seed=7)
    obs, done, viper_return, true_return = stack.reset(frame), False, 0.0, 0.0
    while not done:
        frame, reward, terminated, truncated, info = env.step(agent.act(obs, sample=False))
        obs, done = stack.push(frame), terminated or truncated
        viper_return, true_return = viper_return + reward, true_return + info["task_reward"]
    assert rows["agent"]["true_return"] == pytest.approx(true_return, rel=1e-5)
    assert rows["agent"]["viper_return"] == pytest.approx(viper_return, rel=1e-4, abs=1e-3)
    assert rows["expert"]["true_return"] != rows["random"]["true_return"]
    # The expert's episode replayed with plain gymnasium calls and scored by full-sequence passes of both models:
    # the diagnosis reports the per-frame likelihood ratio and entropy difference averaged over the new frames.
    env = gym.wrappers.TimeLimit(envs.make("dmc:cartpole-swingup"), 16)
    expert = make_expert("cartpole-swingup", env)
    frame, _ = env.reset(seed=7)
    frames, done = [frame], False
    while not done:
        frame, _, terminated, truncated, _ = env.step(expert(frame))
        frames.append(frame)
        done = terminated or truncated
    scores = [_frame_scores(VideoModel.load(viper_run / name), np.stack(frames)) for name in ("model", "baseline")]
    log_prob, entropy = (ours[1:] - theirs[1:] for ours, theirs in zip(*scores))
    assert rows["expert"]["log_prob_all"] == pytest.approx(float(log_prob.mean()), rel=1e-4, abs=1e-3)
    assert rows["expert"]["entropy_all"] == pytest.approx(float(entropy.mean()), rel=1e-4, abs=1e-3)
    assert rows["expert"]["adjusted_second_half"] == pytest.approx(float((log_prob + entropy)[8:].mean()), abs=1e-3)

    out = run / "diagnosis"
    assert (out / "reward_trace.png").stat().st_size > 0 and (out / "diagnosis.md").read_text().startswith("| policy")
    side = Image.open(out / "side_by_side_0.gif")
    single = Image.open(out / "agent_0.gif")
    assert side.size == (3 * single.size[0], single.size[1]) and single.size[0] == 3 * 64
    assert side.n_frames == 17  # the reset frame and 16 steps


def _frame_scores(model: VideoModel, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame log-likelihood and predictive entropy ``(T,)`` of an episode, from one full-sequence pass."""
    scores = model.transformer.code_scores(model.tokenizer.encode(frames[None]))
    return tuple(part[0].flatten(1).sum(-1).detach().numpy() for part in scores)


def test_diagnosis_refuses_runs_it_cannot_rebuild(tmp_path, viper_run):
    with pytest.raises(FileNotFoundError, match="run.json"):
        diagnose_reward(tmp_path / "nothing")
    settings = json.loads((viper_run / "run" / "run.json").read_text())
    (viper_run / "run" / "run.json").write_text(json.dumps({**settings, "reward": "env", "model": None}))
    with pytest.raises(ValueError, match="not trained on a VIPER reward"):
        diagnose_reward(viper_run / "run")


def test_the_expert_can_be_a_trained_agent_and_defaults_to_the_recipes(viper_run, tmp_path):
    run = viper_run / "run"
    report = diagnose_reward(run, tmp_path / "as-agent", episodes=1, seed=7, expert=f"agent:{run}")
    rows = {row["policy"]: row for row in report["episodes"]}
    assert report["expert"] == f"agent:{run}"
    # the same deterministic agent from the same reset seed: the expert's row is the agent's
    assert {k: v for k, v in rows["expert"].items() if k != "policy"} == {
        k: v for k, v in rows["agent"].items() if k != "policy"}
    # a recipe's video model names the expert its videos came from; any other model names none
    recipe = tmp_path / "recipe"
    (recipe / "video" / "model").mkdir(parents=True)
    (recipe / "reward_recipe.json").write_text(json.dumps({"recipe": {"expert": "agent:runs/finger-expert"}}))
    assert recipe_expert(recipe / "video" / "model") == "agent:runs/finger-expert"
    assert recipe_expert(recipe / "video-random" / "model") is None and recipe_expert(viper_run / "model") is None
    with pytest.raises(ValueError, match="bad policy"):
        diagnose_reward(run, tmp_path / "bad", episodes=1, expert="agent")

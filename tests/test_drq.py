import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from agents import DRQ_PRESETS, DrQAgent, DrQConfig, DrQTraining, load_drq_agent, random_shift, train_drq
from worldmodel.checkpoint import CheckpointError

TINY = DrQConfig(encoder_channels=(8, 8), feature_dim=16, hidden_dim=32, batch_size=8)
OBS_SHAPE = (9, 40, 40)
ACTIONS = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([3.0, 1.0], np.float32))


def toy_batch(size: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "obs": rng.integers(0, 256, (size, *OBS_SHAPE), dtype=np.uint8),
        "action": rng.uniform(ACTIONS.low, ACTIONS.high, (size, 2)).astype(np.float32),
        "reward": rng.normal(size=size).astype(np.float32),
        "discount": np.ones(size, np.float32),
        "next_obs": rng.integers(0, 256, (size, *OBS_SHAPE), dtype=np.uint8),
    }


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(v, module.state_dict()[k]) for k, v in before.items())


def test_update_gives_finite_losses_and_trains_every_part():
    torch.manual_seed(0)
    agent = DrQAgent(TINY, OBS_SHAPE, ACTIONS)
    parts = {name: snapshot(getattr(agent, name)) for name in ("encoder", "critic", "actor", "critic_target", "encoder_target")}
    alpha = agent.alpha.item()
    metrics = agent.update(toy_batch())
    for name in ("critic_loss", "actor_loss", "alpha_loss", "alpha", "q", "entropy"):
        assert np.isfinite(metrics[name]), name
    for name, before in parts.items():
        assert changed(before, getattr(agent, name)), f"{name} did not change"
    assert agent.alpha.item() != alpha
    # The encoder learns from the critic alone; targets trail the online nets.
    actor_params = {id(p) for group in agent.optimizers["actor"].param_groups for p in group["params"]}
    assert not actor_params & {id(p) for p in agent.encoder.parameters()}
    online, target = agent.critic.q1[0].weight, agent.critic_target.q1[0].weight
    assert not torch.equal(online, target)


def test_rnd_and_intrinsic_rewards_join_the_env_reward():
    torch.manual_seed(0)
    agent = DrQAgent(dataclasses.replace(TINY, rnd_weight=1.0), OBS_SHAPE, ACTIONS)
    assert agent.rnd is not None and "rnd" in agent.optimizers
    metrics = agent.update(toy_batch(), intrinsic_reward_fn=lambda batch: torch.full_like(batch["reward"], 2.0))
    assert metrics["reward_rnd"] > 0 and metrics["reward_intrinsic"] == 2.0
    with pytest.raises(ValueError, match="intrinsic_reward_fn returned shape"):
        agent.update(toy_batch(), intrinsic_reward_fn=lambda batch: torch.zeros(3))


def test_act_returns_actions_in_the_box():
    torch.manual_seed(0)
    agent = DrQAgent(TINY, OBS_SHAPE, ACTIONS)
    batch = toy_batch()
    single = agent.act(batch["obs"][0], sample=True)
    assert single.shape == (2,) and ACTIONS.contains(single.astype(np.float32))
    many = agent.act(batch["obs"], sample=True)
    assert many.shape == (8, 2)
    assert np.all(many >= ACTIONS.low) and np.all(many <= ACTIONS.high)
    np.testing.assert_array_equal(agent.act(batch["obs"], sample=False), agent.act(batch["obs"], sample=False))


def test_bad_input_is_named():
    agent = DrQAgent(TINY, OBS_SHAPE, ACTIONS)
    with pytest.raises(ValueError, match=r"obs must be uint8 \(B, 9, 40, 40\)"):
        agent.act(np.zeros(OBS_SHAPE, np.float32), sample=False)
    with pytest.raises(ValueError, match="next_obs must be uint8"):
        agent.update({**toy_batch(), "next_obs": np.zeros((8, 6, 40, 40), np.uint8)})
    with pytest.raises(ValueError, match=r"action must be \(8, 2\)"):
        agent.update({**toy_batch(), "action": np.zeros((8, 3), np.float32)})
    with pytest.raises(ValueError, match="missing"):
        agent.update({"obs": toy_batch()["obs"]})
    with pytest.raises(ValueError, match="Box action space"):
        DrQAgent(TINY, OBS_SHAPE, gym.spaces.Discrete(3))
    with pytest.raises(ValueError, match="unknown DrQConfig keys"):
        DrQConfig.from_dict({"encoder_channels": [8], "lr_typo": 1.0})


def test_state_tensors_round_trip_and_refuse_another_shape():
    torch.manual_seed(0)
    agent = DrQAgent(TINY, OBS_SHAPE, ACTIONS)
    agent.update(toy_batch())
    tensors = agent.state_tensors()
    assert any(k.startswith("optim.critic.") for k in tensors) and "model.log_alpha" in tensors
    twin = DrQAgent(DrQConfig.from_dict(json.loads(json.dumps(TINY.to_dict()))), OBS_SHAPE, ACTIONS)
    twin.load_state_tensors(tensors)
    obs = toy_batch()["obs"]
    np.testing.assert_array_equal(agent.act(obs, sample=False), twin.act(obs, sample=False))
    # Same weights and optimizer moments, same randomness: identical next updates.
    torch.manual_seed(1)
    first = agent.update(toy_batch(seed=1))
    torch.manual_seed(1)
    assert twin.update(toy_batch(seed=1)) == first
    wider = DrQAgent(DrQConfig(encoder_channels=(8, 16), feature_dim=16, hidden_dim=32), OBS_SHAPE, ACTIONS)
    with pytest.raises(CheckpointError, match="wrong shapes"):
        wider.load_state_tensors(tensors)


def test_random_shift_moves_images_by_at_most_pad():
    torch.manual_seed(0)
    images = torch.zeros(64, 3, 20, 20, dtype=torch.uint8)
    images[:, :, 10, 10] = 255
    shifted = random_shift(images, pad=4)
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    rows, cols = torch.nonzero(shifted[:, 0] == 255, as_tuple=True)[1:]
    assert (rows - 10).abs().max() <= 4 and (cols - 10).abs().max() <= 4
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # shifts differ per sample
    assert torch.equal(random_shift(images, pad=0), images)


def test_presets():
    assert DRQ_PRESETS["viper"].encoder_channels == (32, 64, 128, 256)
    assert DRQ_PRESETS["viper"].hidden_dim == 256 and DRQ_PRESETS["viper"].lr == 3e-4
    assert len(DRQ_PRESETS["cpu"].encoder_channels) == 4
    assert DrQConfig.from_dict(DRQ_PRESETS["cpu"].to_dict()) == DRQ_PRESETS["cpu"]


class TaskRewardInInfo(gym.Wrapper):
    """Stands in for a VIPER wrapper: the agent's reward is -1, the true reward goes to info."""

    def step(self, action):
        frame, reward, terminated, truncated, info = self.env.step(action)
        return frame, -1.0, terminated, truncated, {**info, "task_reward": reward}


def make_env(seed: int) -> gym.Env:
    return TaskRewardInInfo(gym.wrappers.TimeLimit(envs.make("dmc:cartpole-swingup"), max_episode_steps=20))


def run_settings(total_steps: int) -> DrQTraining:
    return DrQTraining(
        total_steps=total_steps, seed_steps=20, replay_capacity=500, eval_every=40, eval_episodes=1,
        checkpoint_every=20, video_every=40, log_every=20, seed=3,
    )


def test_train_resume_repeats_an_uninterrupted_run(tmp_path):
    config = DrQConfig(encoder_channels=(8, 8), feature_dim=16, hidden_dim=32, batch_size=8, rnd_weight=1.0)
    first = train_drq(make_env, tmp_path / "split", config, run_settings(60))
    assert first["env_steps"] == 60 and first["updates"] == 41 and first["episodes"] == 3
    assert np.isfinite(first["eval_true_return"]) and first["eval_return"] == -20.0
    with pytest.raises(FileExistsError):
        train_drq(make_env, tmp_path / "split", config, run_settings(100))
    with pytest.raises(CheckpointError, match="config"):
        train_drq(make_env, tmp_path / "split", TINY, run_settings(100), resume=True)

    resumed = train_drq(make_env, tmp_path / "split", config, run_settings(100), resume=True)
    assert resumed["env_steps"] == 100 and resumed["updates"] == 81 and resumed["episodes"] == 5
    split = json.loads((tmp_path / "split" / "returns.json").read_text())
    assert [r["env_step"] for r in split["train"]] == [20, 40, 60, 80, 100]
    assert [r["episode"] for r in split["train"]] == [1, 2, 3, 4, 5]
    assert all(r["return"] == -20.0 and r["true_return"] >= 0 for r in split["train"])
    assert [r["env_step"] for r in split["eval"]] == [40, 60, 80, 100]
    gifs = sorted(p.name for p in (tmp_path / "split" / "videos").iterdir())  # every video_every, and each run's end
    assert gifs == ["eval_00000040.gif", "eval_00000060.gif", "eval_00000080.gif", "eval_00000100.gif"]
    assert any((tmp_path / "split" / "tb").iterdir())

    whole = train_drq(make_env, tmp_path / "whole", config, run_settings(100))
    assert whole["eval_true_return"] == resumed["eval_true_return"]
    once = json.loads((tmp_path / "whole" / "returns.json").read_text())
    assert once["train"] == split["train"]
    a, b = load_drq_agent(tmp_path / "split" / "checkpoint"), load_drq_agent(tmp_path / "whole" / "checkpoint")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())

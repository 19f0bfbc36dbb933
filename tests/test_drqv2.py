import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from agents import DRQV2_PRESETS, DrQV2Agent, DrQV2Config, Training, load_agent, train_agent
from envs.wrappers import StateObservation
from worldmodel.checkpoint import CheckpointError

PIXELS = (6, 16, 16)
ACTIONS = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
TINY = DrQV2Config(encoder_channels=4, encoder_layers=2, feature_dim=8, hidden_dim=16, batch_size=8, std_steps=100)


def toy_batch(obs_shape=PIXELS, size: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if len(obs_shape) == 3:
        obs = rng.integers(0, 256, (size, *obs_shape), dtype=np.uint8)
        next_obs = rng.integers(0, 256, (size, *obs_shape), dtype=np.uint8)
    else:
        obs, next_obs = rng.normal(size=(2, size, *obs_shape)).astype(np.float32)
    return {
        "obs": obs,
        "action": rng.uniform(-2, 2, (size, 2)).astype(np.float32),
        "reward": rng.normal(size=size).astype(np.float32),
        "discount": np.full(size, 0.99**3, np.float32),
        "next_obs": next_obs,
    }


@pytest.mark.parametrize("obs_shape", [PIXELS, (5,)])
def test_update_trains_every_part_and_the_target_follows_by_tau(obs_shape):
    torch.manual_seed(0)
    agent = DrQV2Agent(TINY, obs_shape, ACTIONS)
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    metrics = agent.update(toy_batch(obs_shape), step=50)
    assert all(np.isfinite(v) for v in metrics.values()) and metrics["std"] == pytest.approx(TINY.std(50))
    after = agent.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    expected = {"actor", "critic", "critic_target"} | ({"encoder"} if len(obs_shape) == 3 else set())
    assert changed == expected
    for name, target in agent.critic_target.state_dict().items():  # target <- (1 - tau) target + tau online
        online = agent.critic.state_dict()[name]
        torch.testing.assert_close(target, before[f"critic_target.{name}"].lerp(online, TINY.tau))


def test_standardised_rewards_make_updates_blind_to_the_reward_scale_and_offset():
    """With standardize_reward, rewards r and 150 r - 1000 train identical agents (the policy a continuing
    task's critic ranks is the same); without it they do not. The statistics travel with the weights."""
    config = dataclasses.replace(TINY, standardize_reward=True)

    def trained(config: DrQV2Config, scale: float, offset: float) -> DrQV2Agent:
        torch.manual_seed(0)
        agent = DrQV2Agent(config, (5,), ACTIONS)
        for seed in range(3):
            batch = toy_batch((5,), seed=seed)
            agent.update({**batch, "reward": scale * batch["reward"] + offset}, step=10)
        return agent

    plain, shifted = trained(config, 1.0, 0.0), trained(config, 150.0, -1000.0)
    for name, value in plain.actor.state_dict().items():
        torch.testing.assert_close(shifted.actor.state_dict()[name], value, rtol=1e-4, atol=1e-5)
    assert plain.reward_standardizer.batches == 3 and shifted.reward_standardizer.mean < -900
    unnormalised = trained(TINY, 1.0, 0.0), trained(TINY, 150.0, -1000.0)
    assert not torch.allclose(unnormalised[0].actor.policy[0].weight, unnormalised[1].actor.policy[0].weight)
    reloaded = DrQV2Agent(config, (5,), ACTIONS)
    reloaded.load_state_tensors(shifted.state_tensors())
    assert reloaded.reward_standardizer.mean == shifted.reward_standardizer.mean


def test_rnd_on_state_vectors_joins_the_critic_target():
    """Twin state agents whose RND weights are 1 and 2: their targets differ by exactly the bonus."""
    agents = []
    for weight in (1.0, 2.0):
        torch.manual_seed(0)
        agents.append(DrQV2Agent(dataclasses.replace(TINY, rnd_weight=weight), (5,), ACTIONS))
    assert agents[0].rnd is not None and not agents[0].rnd.pixels and "rnd" in agents[0].optimizers
    metrics = []
    for agent in agents:
        torch.manual_seed(1)
        metrics.append(agent.update(toy_batch((5,)), step=10))
    assert metrics[0]["reward_rnd"] == metrics[1]["reward_rnd"] > 0
    assert metrics[1]["target_q"] - metrics[0]["target_q"] == pytest.approx(metrics[0]["reward_rnd"], rel=1e-4)


def test_target_bootstraps_by_the_replay_discount_and_not_after_termination():
    torch.manual_seed(0)
    agent = DrQV2Agent(TINY, (5,), ACTIONS)
    assert agent.batch_spec() == {"batch_size": 8, "n_step": 3, "gamma": 0.99}
    reward = torch.arange(8.0)
    next_h = torch.randn(8, 5)
    discount = torch.tensor([0.0, 0.99**3] * 4)
    torch.manual_seed(1)
    target = agent.critic_target_q(reward, discount, next_h, std=0.2)
    torch.manual_seed(1)
    halved = agent.critic_target_q(reward, discount / 2, next_h, std=0.2)
    terminal = discount == 0
    assert torch.equal(target[terminal], reward[terminal])
    assert (target[~terminal] - reward[~terminal]).abs().min() > 1e-4
    torch.testing.assert_close(halved[~terminal] - reward[~terminal], 0.5 * (target[~terminal] - reward[~terminal]))


def test_exploration_noise_follows_its_schedule():
    config = dataclasses.replace(TINY, std_start=1.0, std_end=0.1, std_steps=1000)
    assert [config.std(s) for s in (0, 500, 1000, 5000)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    torch.manual_seed(0)
    agent = DrQV2Agent(config, (5,), gym.spaces.Box(-1.0, 1.0, (2,), np.float32))
    obs = np.zeros((4000, 5), np.float32)
    mean = agent.act(obs, sample=False)
    np.testing.assert_array_equal(mean, agent.act(obs, sample=False))
    late = agent.act(obs, sample=True, step=1000) - mean
    assert late.std() == pytest.approx(0.1, rel=0.05)
    early = agent.act(obs, sample=True, step=0)
    assert early.min() >= -1 and early.max() <= 1 and (early - mean).std() > 0.5  # wide, but inside the box


@pytest.mark.parametrize("pixels", [True, False])
def test_critic_and_policy_learn_a_contextual_bandit(pixels):
    """Dark frames (state -1) pay the action, bright frames (state +1) its negative: the critic fits
    the reward and the greedy action moves to the rewarded side of each observation."""
    torch.manual_seed(0)
    config = DrQV2Config(encoder_channels=8, encoder_layers=2, feature_dim=16, hidden_dim=64, batch_size=32,
                         lr=3e-3, std_steps=1, std_end=0.3)
    shape = (3, 16, 16) if pixels else (4,)
    agent = DrQV2Agent(config, shape, gym.spaces.Box(-1.0, 1.0, (1,), np.float32))
    rng = np.random.default_rng(0)

    def bandit_batch(size: int) -> dict[str, np.ndarray]:
        bright = rng.integers(0, 2, size).astype(bool)
        if pixels:
            obs = np.where(bright, 220, 30).astype(np.uint8)[:, None, None, None] * np.ones((size, *shape), np.uint8)
        else:
            obs = np.where(bright, 1.0, -1.0).astype(np.float32)[:, None] * np.ones((size, *shape), np.float32)
        action = rng.uniform(-1, 1, (size, 1)).astype(np.float32)
        reward = np.where(bright, -action[:, 0], action[:, 0]).astype(np.float32)
        return {"obs": obs, "action": action, "reward": reward, "discount": np.zeros(size, np.float32), "next_obs": obs}

    probe = bandit_batch(64)
    bright = (probe["obs"].reshape(64, -1)[:, 0] > 100) if pixels else probe["obs"][:, 0] > 0
    for step in range(300):
        agent.update(bandit_batch(32), step=step)
    with torch.no_grad():
        q1, q2 = agent.critic(agent.encoder(torch.as_tensor(probe["obs"])), torch.as_tensor(probe["action"]))
    for q in (q1, q2):
        assert np.abs(q.numpy() - probe["reward"]).mean() < 0.15
    greedy = agent.act(probe["obs"], sample=False)[:, 0]
    assert greedy[~bright].min() > 0.7 and greedy[bright].max() < -0.7


def test_state_tensors_round_trip_and_bad_input_is_named():
    torch.manual_seed(0)
    agent = DrQV2Agent(TINY, PIXELS, ACTIONS)
    agent.update(toy_batch(), step=3)
    twin = DrQV2Agent(TINY, PIXELS, ACTIONS)
    twin.load_state_tensors(agent.state_tensors())
    torch.manual_seed(5)
    first = agent.update(toy_batch(seed=1), step=4)
    torch.manual_seed(5)
    assert twin.update(toy_batch(seed=1), step=4) == first  # optimizer states came along
    with pytest.raises(CheckpointError, match="DrQ-v2 weights do not match"):
        DrQV2Agent(TINY, (5,), ACTIONS).load_state_tensors(agent.state_tensors())
    with pytest.raises(ValueError, match="float"):
        DrQV2Agent(TINY, (5,), ACTIONS).act(np.zeros(5, np.uint8), sample=False)
    with pytest.raises(ValueError, match="uint8"):
        agent.act(np.zeros(PIXELS, np.float32), sample=False)
    with pytest.raises(ValueError, match="obs_shape"):
        DrQV2Agent(TINY, (4, 16, 16), ACTIONS)
    with pytest.raises(ValueError, match="unknown DrQV2Config keys"):
        DrQV2Config.from_dict({"hidden": 3})
    assert DrQV2Config.from_dict(DRQV2_PRESETS["cpu"].to_dict()) == DRQV2_PRESETS["cpu"]
    assert DRQV2_PRESETS["paper"] == DrQV2Config()  # the published settings are the defaults


def make_state_env(seed: int) -> gym.Env:
    return StateObservation(gym.wrappers.TimeLimit(envs.make("dmc:cartpole-swingup", size=32), max_episode_steps=20))


def test_workspace_trains_drqv2_on_states_and_resumes_exactly(tmp_path):
    def settings(total: int) -> Training:
        return Training(total_steps=total, seed_steps=10, update_every=2, frame_stack=1, replay_capacity=200,
                        eval_every=40, eval_episodes=1, checkpoint_every=20, video_every=40, log_every=20, seed=2)

    split = train_agent(make_state_env, tmp_path / "split", "drqv2", TINY, settings(40))
    assert split["agent"] == "drqv2" and split["updates"] == 16
    resumed = train_agent(make_state_env, tmp_path / "split", "drqv2", TINY, settings(80), resume=True)
    whole = train_agent(make_state_env, tmp_path / "whole", "drqv2", TINY, settings(80))
    assert resumed["updates"] == whole["updates"] == 36
    assert resumed["eval_true_return"] == whole["eval_true_return"]
    a, b = load_agent(tmp_path / "split" / "checkpoint"), load_agent(tmp_path / "whole" / "checkpoint")
    assert isinstance(a, DrQV2Agent) and a.obs_shape == (5,)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    gif = tmp_path / "split" / "videos" / "eval_00000080.gif"
    assert gif.is_file()  # rendered frames, though the agent saw states
    meta = json.loads((tmp_path / "split" / "checkpoint" / "config.json").read_text())
    assert meta["agent"] == "drqv2" and meta["obs_shape"] == [5]
    with pytest.raises(TypeError, match="takes a DrQConfig"):
        train_agent(make_state_env, tmp_path / "split", "drq", TINY, settings(100), resume=True)
    with pytest.raises(CheckpointError, match=r"another agent config: hidden_dim 16 \(now 32\)"):
        train_agent(make_state_env, tmp_path / "split", "drqv2", dataclasses.replace(TINY, hidden_dim=32),
                    settings(100), resume=True)
    # A checkpoint from before an option existed resumes: the option takes its default.
    config_path = tmp_path / "split" / "checkpoint" / "config.json"
    meta = json.loads(config_path.read_text())
    del meta["config"]["disagreement_weight"], meta["config"]["reward_weight"]
    config_path.write_text(json.dumps(meta))
    assert train_agent(make_state_env, tmp_path / "split", "drqv2", TINY, settings(100), resume=True)["env_steps"] == 100


def test_updates_per_step_sets_the_update_to_data_ratio(tmp_path):
    training = Training(total_steps=30, seed_steps=10, updates_per_step=3, frame_stack=1, replay_capacity=100,
                        eval_every=30, eval_episodes=0, checkpoint_every=30, video_every=0, log_every=10)
    summary = train_agent(make_state_env, tmp_path / "run", "drqv2", TINY, training)
    assert summary["updates"] == 3 * 21  # agent steps 10..30 each update three times
    with pytest.raises(ValueError, match="updates_per_step must be >= 1"):
        dataclasses.replace(training, updates_per_step=0)


def test_agent_configs_and_loop_defaults_follow_agent_reward_and_observation():
    from experiments.train_agent import agent_config, loop_defaults

    assert agent_config("drqv2", "cpu", "viper").rnd_weight == 1.0  # VIPER's RND on pixels
    assert agent_config("drqv2", "cpu", "viper", "state").rnd_weight == 0.0  # RND needs frames
    assert agent_config("drq", "viper", "env").rnd_weight == 0.0
    assert agent_config("drqv2", "cpu", "viper", "state").standardize_reward  # VIPER's scale is the model's
    assert not agent_config("drqv2", "cpu", "env", "state").standardize_reward
    assert loop_defaults("drqv2", "state") == {"update_every": 1, "updates_per_step": 4, "frame_stack": 1}
    assert loop_defaults("drqv2", "pixels") == {"update_every": 1, "updates_per_step": 1, "frame_stack": 3}
    assert loop_defaults("drqv2", "pixels", "paper") == {"update_every": 2, "updates_per_step": 1,
                                                         "frame_stack": 3}  # as published
    assert loop_defaults("drq", "pixels") == {"update_every": 1, "updates_per_step": 1, "frame_stack": 3}
    with pytest.raises(ValueError, match="has no preset 'viper'"):
        agent_config("drqv2", "viper", "env")
    with pytest.raises(ValueError, match="unknown agent"):
        agent_config("ppo", "cpu", "env")
    with pytest.raises(ValueError, match="unknown reward 'ratio'"):
        agent_config("drqv2", "cpu", "ratio")


def test_agent_options_set_config_fields_by_their_types_and_name_bad_ones():
    from experiments.train_agent import agent_config

    config = agent_config("drqv2", "cpu", "env", "state", options={"std_steps": "2500", "lr": "3", "tau": "0.05"})
    assert (config.std_steps, config.lr, config.tau) == (2500, 3.0, 0.05) and isinstance(config.lr, float)
    assert config.hidden_dim == DRQV2_PRESETS["cpu"].hidden_dim  # the rest stays the preset's
    assert agent_config("drq", "cpu", "env", options={"encoder_channels": "[8, 8]"}).encoder_channels == (8, 8)
    with pytest.raises(ValueError, match=r"unknown DrQV2Config option\(s\) \['std'\]"):
        agent_config("drqv2", "cpu", "env", options={"std": "1"})
    with pytest.raises(ValueError, match="std_steps='2.5': expected a value of type int"):
        agent_config("drqv2", "cpu", "env", options={"std_steps": "2.5"})
    with pytest.raises(ValueError, match="lr='fast': expected a value of type float"):
        agent_config("drqv2", "cpu", "env", options={"lr": "fast"})
    with pytest.raises(ValueError, match="std_steps must be >= 1"):  # the config's own checks still run
        agent_config("drqv2", "cpu", "env", options={"std_steps": "0"})

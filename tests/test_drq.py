import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import envs
from agents import DRQ_PRESETS, DrQAgent, DrQConfig, Training, load_agent, random_shift, train_agent
from agents.common import batch_tensors, optimizer_step, soft_update
from agents.replay import ReplayBuffer
from worldmodel import training_run
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


def _twin_agents(config_a: DrQConfig, config_b: DrQConfig) -> tuple[DrQAgent, DrQAgent]:
    """Two agents with the same weights (and RND nets), differing only in their configs."""
    torch.manual_seed(0)
    a = DrQAgent(config_a, OBS_SHAPE, ACTIONS)
    torch.manual_seed(0)
    return a, DrQAgent(config_b, OBS_SHAPE, ACTIONS)


def test_rnd_and_intrinsic_rewards_join_the_critic_target():
    # Same weights and random draws: the targets differ by exactly the added reward.
    once, twice = _twin_agents(dataclasses.replace(TINY, rnd_weight=1.0), dataclasses.replace(TINY, rnd_weight=2.0))
    assert once.rnd is not None and "rnd" in once.optimizers
    torch.manual_seed(1)
    first = once.update(toy_batch())
    torch.manual_seed(1)
    second = twice.update(toy_batch())
    assert first["reward_rnd"] == second["reward_rnd"]
    assert second["target_q"] - first["target_q"] == pytest.approx(first["reward_rnd"], rel=1e-4)

    plain, extra = _twin_agents(TINY, TINY)
    torch.manual_seed(1)
    without = plain.update(toy_batch())
    torch.manual_seed(1)
    with_bonus = extra.update(toy_batch(), intrinsic_reward_fn=lambda batch: torch.full_like(batch["reward"], 2.0))
    assert with_bonus["reward_intrinsic"] == 2.0
    assert with_bonus["target_q"] - without["target_q"] == pytest.approx(2.0, rel=1e-4)
    with pytest.raises(ValueError, match="intrinsic_reward_fn returned shape"):
        plain.update(toy_batch(), intrinsic_reward_fn=lambda batch: torch.zeros(3))


def test_terminal_transitions_do_not_bootstrap():
    torch.manual_seed(0)
    agent = DrQAgent(dataclasses.replace(TINY, discount=0.9), OBS_SHAPE, ACTIONS)
    assert agent.batch_spec() == {"batch_size": TINY.batch_size, "n_step": 1, "gamma": 0.9}
    batch = toy_batch()
    reward = torch.as_tensor(batch["reward"])
    next_obs = torch.as_tensor(batch["next_obs"])
    discount = torch.tensor([0.0, 0.9] * 4)  # as the replay gives it: gamma, or 0 after a terminal step
    torch.manual_seed(1)
    target = agent.critic_target_q(reward, discount, next_obs)
    torch.manual_seed(1)
    target_half = agent.critic_target_q(reward, discount / 2, next_obs)
    terminal = discount == 0
    assert torch.equal(target[terminal], reward[terminal])
    assert (target[~terminal] - reward[~terminal]).abs().min() > 1e-3  # the rest bootstrap...
    torch.testing.assert_close(target_half[~terminal] - reward[~terminal], 0.5 * (target[~terminal] - reward[~terminal]))


def test_critic_and_policy_learn_a_contextual_bandit():
    """Dark frames pay the action, bright frames its negative: the critic fits the reward and
    the greedy action moves to the rewarded side of each frame, within a few hundred updates."""
    torch.manual_seed(0)
    config = DrQConfig(encoder_channels=(8, 8), feature_dim=16, hidden_dim=32, batch_size=32, lr=1e-3)
    shape = (3, 16, 16)
    agent = DrQAgent(config, shape, gym.spaces.Box(-1.0, 1.0, (1,), np.float32))
    rng = np.random.default_rng(0)

    def bandit_batch(size: int) -> dict[str, np.ndarray]:
        bright = rng.integers(0, 2, size).astype(bool)
        obs = np.where(bright, 220, 30).astype(np.uint8)[:, None, None, None] * np.ones((size, *shape), np.uint8)
        action = rng.uniform(-1, 1, (size, 1)).astype(np.float32)
        reward = np.where(bright, -action[:, 0], action[:, 0]).astype(np.float32)
        return {"obs": obs, "action": action, "reward": reward, "discount": np.zeros(size, np.float32), "next_obs": obs}

    probe = bandit_batch(64)
    bright = probe["obs"][:, 0, 0, 0] > 100
    assert np.abs(agent.act(probe["obs"], sample=False)).max() < 0.5  # no side preferred at the start
    for _ in range(250):
        agent.update(bandit_batch(32))
    with torch.no_grad():
        q1, q2 = agent.critic(agent.encoder(torch.as_tensor(probe["obs"])), torch.as_tensor(probe["action"]))
    for q in (q1, q2):
        assert np.abs(q.numpy() - probe["reward"]).mean() < 0.1
    greedy = agent.act(probe["obs"], sample=False)[:, 0]
    assert greedy[~bright].min() > 0.7 and greedy[bright].max() < -0.7


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


def run_settings(total_steps: int) -> Training:
    return Training(
        total_steps=total_steps, seed_steps=20, replay_capacity=500, eval_every=40, eval_episodes=1,
        checkpoint_every=20, video_every=40, log_every=20, seed=3,
    )


def test_train_resume_repeats_an_uninterrupted_run(tmp_path):
    config = DrQConfig(encoder_channels=(8, 8), feature_dim=16, hidden_dim=32, batch_size=8, rnd_weight=1.0)
    first = train_agent(make_env, tmp_path / "split", "drq", config, run_settings(60))
    assert first["env_steps"] == 60 and first["updates"] == 41 and first["episodes"] == 3
    assert np.isfinite(first["eval_true_return"]) and first["eval_return"] == -20.0
    with pytest.raises(FileExistsError):
        train_agent(make_env, tmp_path / "split", "drq", config, run_settings(100))
    with pytest.raises(CheckpointError, match="config"):
        train_agent(make_env, tmp_path / "split", "drq", TINY, run_settings(100), resume=True)

    resumed = train_agent(make_env, tmp_path / "split", "drq", config, run_settings(100), resume=True)
    assert resumed["env_steps"] == 100 and resumed["updates"] == 81 and resumed["episodes"] == 5
    split = json.loads((tmp_path / "split" / "returns.json").read_text())
    assert [r["env_step"] for r in split["train"]] == [20, 40, 60, 80, 100]
    assert [r["episode"] for r in split["train"]] == [1, 2, 3, 4, 5]
    assert all(r["return"] == -20.0 and r["true_return"] >= 0 for r in split["train"])
    assert [r["env_step"] for r in split["eval"]] == [40, 60, 80, 100]
    gifs = sorted(p.name for p in (tmp_path / "split" / "videos").iterdir())  # every video_every, and each run's end
    assert gifs == ["eval_00000040.gif", "eval_00000060.gif", "eval_00000080.gif", "eval_00000100.gif"]
    assert any((tmp_path / "split" / "tb").iterdir())

    whole = train_agent(make_env, tmp_path / "whole", "drq", config, run_settings(100))
    assert whole["eval_true_return"] == resumed["eval_true_return"]
    once = json.loads((tmp_path / "whole" / "returns.json").read_text())
    assert once["train"] == split["train"]
    a, b = load_agent(tmp_path / "split" / "checkpoint"), load_agent(tmp_path / "whole" / "checkpoint")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_run_stopped_by_its_time_budget_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch):
    """A clock that ticks one second per agent step: the budget stops the run after step 40 (an episode's end)."""
    seconds = iter(range(10**6))
    monkeypatch.setattr(training_run, "clock", lambda: float(next(seconds)))
    config = DrQConfig(encoder_channels=(8, 8), feature_dim=16, hidden_dim=32, batch_size=8, rnd_weight=1.0)
    budget = dataclasses.replace(run_settings(100), max_minutes=39.5 / 60)
    cut = train_agent(make_env, tmp_path / "cut", "drq", config, budget)
    assert cut["env_steps"] == 40 and cut["stopped_by_budget"]
    resumed = train_agent(make_env, tmp_path / "cut", "drq", config, run_settings(100), resume=True)
    whole = train_agent(make_env, tmp_path / "whole", "drq", config, run_settings(100))
    assert resumed["env_steps"] == whole["env_steps"] == 100 and resumed["updates"] == whole["updates"]
    logs = [json.loads((tmp_path / name / "returns.json").read_text()) for name in ("cut", "whole")]
    assert logs[0]["train"] == logs[1]["train"] and logs[0]["eval"] == logs[1]["eval"]
    a, b = load_agent(tmp_path / "cut" / "checkpoint"), load_agent(tmp_path / "whole" / "checkpoint")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


class StepCounterEnv(gym.Env):
    """Frames that name themselves: red = step in the episode, green = a mark of the reset seed."""

    observation_space = gym.spaces.Box(0, 255, (40, 40, 3), np.uint8)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.mark = 0, 1 + int(self.np_random.integers(254))
        return self._frame(), {}

    def step(self, action):
        self.t += 1
        return self._frame(), float(action[0]), False, self.t == 20, {}

    def _frame(self) -> np.ndarray:
        frame = np.zeros((40, 40, 3), np.uint8)
        frame[..., 0], frame[..., 1] = self.t, self.mark
        return frame


def test_resume_from_the_middle_of_an_episode_records_it_cut_and_starts_a_fresh_one(tmp_path):
    config = DrQConfig(encoder_channels=(8, 8), feature_dim=16, hidden_dim=32, batch_size=8)
    settings = dict(seed_steps=10, replay_capacity=500, eval_every=100, eval_episodes=0, video_every=0, seed=3)
    cut = train_agent(lambda seed: StepCounterEnv(), tmp_path, "drq", config, Training(30, checkpoint_every=15, **settings))
    assert cut["env_steps"] == 30 and cut["episodes"] == 1
    in_progress = json.loads((tmp_path / "checkpoint" / "trainer.json").read_text())["state"]["episode_in_progress"]
    assert in_progress["length"] == 10  # cut at step 10 of 20

    resumed = train_agent(lambda seed: StepCounterEnv(), tmp_path, "drq", config, Training(60, **settings), resume=True)
    assert resumed["env_steps"] == 60 and resumed["episodes"] == 3  # the cut episode counts, recorded as cut
    train = json.loads((tmp_path / "returns.json").read_text())["train"]
    assert [(r["env_step"], r["episode"], r["length"], r.get("cut", False)) for r in train] == [
        (20, 1, 20, False), (30, 2, 10, True), (50, 3, 20, False)]
    assert train[1]["return"] == in_progress["return"] and train[1]["true_return"] == in_progress["true_return"]

    replay = ReplayBuffer(500, (40, 40, 3), (1,), frame_stack=3)
    replay.load(tmp_path / "checkpoint" / "replay.npz")
    assert replay.total_frames == 21 + 11 + 21 + 11  # reset frame + steps of each episode, the cut one kept
    batch = replay.sample(500, np.random.default_rng(0))
    obs, next_obs = batch["obs"][:, :, 0, 0].reshape(500, 3, 3), batch["next_obs"][:, :, 0, 0].reshape(500, 3, 3)
    marks = set(obs[:, -1, 1].tolist())
    assert len(marks) == 4  # a new reset seed after the cut, not the cut episode's again
    for stack, following in zip(obs, next_obs):  # no stack or transition crosses the cut
        assert len(set(stack[:, 1])) == 1 and following[-1, 1] == stack[-1, 1]
        assert following[-1, 0] == stack[-1, 0] + 1


# DrQ's published options at toy sizes: the first conv strided, unpadded convs, actor and
# targets every 2nd update, K = M = 2 views, orthogonal init.
TINY_PAPER = dataclasses.replace(
    TINY, encoder_strides=(2, 1), encoder_padding=0, actor_update_period=2, target_update_period=2,
    target_augmentations=2, critic_augmentations=2, orthogonal_init=True,
)


def plain_update(agent: DrQAgent, batch: dict[str, np.ndarray]) -> None:
    """The random-shift SAC step with one view each and every part stepped every update, written
    out: the reference that K = M = 1 and periods of 1 must reproduce bit for bit."""
    tensors = batch_tensors(batch, agent.obs_shape, agent.action_low, agent.action_high)
    obs = random_shift(tensors["obs"], agent.config.image_pad)
    next_obs = random_shift(tensors["next_obs"], agent.config.image_pad)
    with torch.no_grad():
        next_action, next_log_prob = agent.actor(agent.encoder(next_obs), sample=True)
        target_q1, target_q2 = agent.critic_target(agent.encoder_target(next_obs), next_action)
        target_v = torch.min(target_q1, target_q2) - agent.alpha * next_log_prob
        target = tensors["reward"] + tensors["discount"] * target_v
    h = agent.encoder(obs)
    q1, q2 = agent.critic(h, tensors["action"])
    optimizer_step(agent.optimizers["critic"], F.mse_loss(q1, target) + F.mse_loss(q2, target))
    sampled, log_prob = agent.actor(h.detach(), sample=True)
    actor_q1, actor_q2 = agent.critic(h.detach(), sampled)
    optimizer_step(agent.optimizers["actor"], (agent.alpha.detach() * log_prob - torch.min(actor_q1, actor_q2)).mean())
    optimizer_step(agent.optimizers["alpha"], (agent.alpha * (-log_prob.detach() - agent.target_entropy)).mean())
    soft_update(agent.encoder, agent.encoder_target, agent.config.tau)
    soft_update(agent.critic, agent.critic_target, agent.config.tau)


def test_one_view_and_periods_of_one_are_the_plain_update():
    config = dataclasses.replace(TINY, target_augmentations=1, critic_augmentations=1, actor_update_period=1,
                                 target_update_period=1)
    agent, reference = _twin_agents(config, config)
    for index in range(3):
        torch.manual_seed(10 + index)
        agent.update(toy_batch(seed=index))
        torch.manual_seed(10 + index)
        plain_update(reference, toy_batch(seed=index))
    weights = reference.state_dict()
    assert all(torch.equal(v, weights[k]) for k, v in agent.state_dict().items() if k != "updates")
    assert int(agent.updates) == 3


def test_the_target_averages_the_next_observation_views():
    torch.manual_seed(0)
    agent = DrQAgent(TINY_PAPER, OBS_SHAPE, ACTIONS)
    batch = toy_batch()
    reward, discount = torch.as_tensor(batch["reward"]), torch.full((8,), 0.9)
    views = random_shift(torch.as_tensor(batch["next_obs"]).repeat(2, 1, 1, 1), pad=4)
    torch.manual_seed(1)
    averaged = agent.critic_target_q(reward, discount, views)
    torch.manual_seed(1)  # the same draws: one target per view, of each view's copy of the transitions
    each = agent.critic_target_q(reward.repeat(2), discount.repeat(2), views)
    assert averaged.shape == (8,)
    torch.testing.assert_close(averaged, (each[:8] + each[8:]) / 2)
    assert (each[:8] - each[8:]).abs().max() > 1e-4  # the views differ
    with pytest.raises(ValueError, match="whole number of views"):
        agent.critic_target_q(reward, discount, views[:12])


def test_the_critic_loss_sums_over_the_observation_views():
    config = dataclasses.replace(TINY_PAPER, target_augmentations=1)
    agent, copy = _twin_agents(config, config)
    batch = toy_batch()
    torch.manual_seed(1)
    metrics = agent.update(batch)
    torch.manual_seed(1)  # the update's draws in its order: M views of obs, K of next_obs, then the target's
    tensors = batch_tensors(batch, OBS_SHAPE, copy.action_low, copy.action_high)
    obs = random_shift(tensors["obs"].repeat(2, 1, 1, 1), pad=4)
    next_obs = random_shift(tensors["next_obs"], pad=4)
    with torch.no_grad():
        target = copy.critic_target_q(tensors["reward"], tensors["discount"], next_obs)
        q1, q2 = copy.critic(copy.encoder(obs), tensors["action"].repeat(2, 1))
    per_view = [F.mse_loss(q1[v], target) + F.mse_loss(q2[v], target) for v in (slice(0, 8), slice(8, 16))]
    assert metrics["critic_loss"] == pytest.approx(sum(per_view).item(), rel=1e-5)
    assert metrics["target_q"] == pytest.approx(target.mean().item(), rel=1e-5)


def test_update_periods_count_updates():
    torch.manual_seed(0)
    agent = DrQAgent(dataclasses.replace(TINY_PAPER, target_update_period=3), OBS_SHAPE, ACTIONS)
    stepped = {name: [] for name in ("critic", "actor", "log_alpha", "critic_target", "encoder_target")}
    logged_actor = []
    for index in range(6):
        before = {name: snapshot(getattr(agent, name)) for name in stepped if name != "log_alpha"}
        alpha = agent.log_alpha.item()
        metrics = agent.update(toy_batch(seed=index))
        for name, weights in before.items():
            stepped[name].append(changed(weights, getattr(agent, name)))
        stepped["log_alpha"].append(agent.log_alpha.item() != alpha)
        logged_actor.append("actor_loss" in metrics and "alpha_loss" in metrics)
    assert stepped["critic"] == [True] * 6
    assert stepped["actor"] == stepped["log_alpha"] == logged_actor == [True, False] * 3
    assert stepped["critic_target"] == stepped["encoder_target"] == [True, False, False] * 2
    assert int(agent.updates) == 6


def test_new_config_fields_are_validated():
    for bad, message in [
        (dict(encoder_strides=(2,)), "one stride >= 1 per conv"),
        (dict(encoder_strides=(2, 0)), "one stride >= 1 per conv"),
        (dict(encoder_padding=-1), "encoder_padding"),
        (dict(actor_update_period=0), "actor_update_period"),
        (dict(target_update_period=0), "target_update_period"),
        (dict(target_augmentations=0), "target_augmentations"),
        (dict(critic_augmentations=0), "critic_augmentations"),
        (dict(critic_augmentations=2, image_pad=0), "needs image_pad > 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(TINY, **bad)
    assert TINY.strides == (2, 2) and TINY_PAPER.strides == (2, 1)


def test_paper_preset_is_drqs_published_setting():
    paper = DRQ_PRESETS["paper"]
    assert (paper.encoder_channels, paper.encoder_strides, paper.encoder_padding) == ((32,) * 4, (2, 1, 1, 1), 0)
    assert (paper.feature_dim, paper.hidden_dim, paper.batch_size, paper.lr) == (50, 1024, 512, 1e-3)
    assert (paper.discount, paper.tau, paper.init_temperature, paper.image_pad) == (0.99, 0.01, 0.1, 4)
    assert (paper.actor_update_period, paper.target_update_period) == (2, 2)
    assert (paper.target_augmentations, paper.critic_augmentations) == (2, 2) and paper.orthogonal_init
    assert DrQConfig.from_dict(json.loads(json.dumps(paper.to_dict()))) == paper
    actions = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    assert DrQAgent(paper, (9, 84, 84), actions).encoder.out_dim == 32 * 35 * 35  # DrQ's 84x84 frames
    agent = DrQAgent(paper, (9, 64, 64), actions)  # ours: 64 -> 31 -> 29 -> 27 -> 25
    assert agent.encoder.out_dim == 32 * 25 * 25
    assert all(not conv.bias.any() for conv in agent.encoder.convs if isinstance(conv, torch.nn.Conv2d))
    weight = agent.critic.q1[2].weight
    torch.testing.assert_close(weight @ weight.T, torch.eye(1024), atol=1e-4, rtol=0)  # orthogonal


def test_checkpoints_carry_the_new_fields_and_the_update_count():
    torch.manual_seed(0)
    agent = DrQAgent(TINY_PAPER, OBS_SHAPE, ACTIONS)
    agent.update(toy_batch())  # update 0 steps the actor; the next one must not
    tensors = agent.state_tensors()
    assert int(tensors["model.updates"]) == 1
    config = DrQConfig.from_dict(json.loads(json.dumps(TINY_PAPER.to_dict())))
    assert config == TINY_PAPER
    twin = DrQAgent(config, OBS_SHAPE, ACTIONS)
    twin.load_state_tensors(tensors)
    torch.manual_seed(1)
    first = agent.update(toy_batch(seed=1))
    torch.manual_seed(1)
    assert twin.update(toy_batch(seed=1)) == first and "actor_loss" not in first
    # A checkpoint from before the update count (periods of 1) loads, counting from 0.
    older = DrQAgent(TINY, OBS_SHAPE, ACTIONS)
    older.load_state_tensors({k: v for k, v in DrQAgent(TINY, OBS_SHAPE, ACTIONS).state_tensors().items()
                              if k != "model.updates"})
    assert int(older.updates) == 0


def test_a_run_with_the_published_options_resumes_exactly(tmp_path):
    settings = dict(seed_steps=10, replay_capacity=500, eval_every=100, eval_episodes=0, video_every=0, seed=3,
                    checkpoint_every=20)
    env = lambda seed: StepCounterEnv()  # noqa: E731
    train_agent(env, tmp_path / "split", "drq", TINY_PAPER, Training(20, **settings))
    resumed = train_agent(env, tmp_path / "split", "drq", TINY_PAPER, Training(40, **settings), resume=True)
    whole = train_agent(env, tmp_path / "whole", "drq", TINY_PAPER, Training(40, **settings))
    assert resumed["updates"] == whole["updates"] == 31
    a, b = load_agent(tmp_path / "split" / "checkpoint"), load_agent(tmp_path / "whole" / "checkpoint")
    assert int(a.updates) == 31
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())

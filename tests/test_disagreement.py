import dataclasses

import numpy as np
import pytest
import torch

from agents import (
    DrQAgent,
    DrQConfig,
    DrQV2Agent,
    DrQV2Config,
    Training,
    load_agent,
    train_agent,
)
from agents.disagreement import Disagreement, DisagreementConfig
from agents.exploration import PercentileScale, RewardMix
from tests.test_drqv2 import ACTIONS, TINY, make_state_env, toy_batch

STATE = (4,)
FRAMES = (6, 16, 16)  # two stacked RGB frames


def transitions(centre: float, seed: int, count: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """States around ``centre`` and actions, with a deterministic next state: one region of the state space."""
    generator = torch.Generator().manual_seed(seed)
    obs = centre + 0.3 * torch.randn(count, *STATE, generator=generator)
    action = torch.rand(count, 2, generator=generator) * 2 - 1
    next_obs = obs + 0.1 * torch.cat([action, action], dim=1)
    return obs, action, next_obs


def scenes(square_at: int, seed: int, count: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dark noise with a white square at (square_at, square_at) in every frame: one kind of scene per corner."""
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 64, (count, *FRAMES), dtype=torch.uint8, generator=generator)
    frames[:, :, square_at : square_at + 6, square_at : square_at + 6] = 255
    action = torch.rand(count, 2, generator=generator) * 2 - 1
    return frames, action, frames.clone()


@pytest.mark.parametrize(("kind", "subset_fraction"), [("state", 1.0), ("state", 0.5), ("pixels", 1.0)])
def test_bonus_falls_on_trained_transitions_and_stays_high_on_novel_ones(kind, subset_fraction):
    torch.manual_seed(0)
    config = DisagreementConfig(subset_fraction=subset_fraction)
    if kind == "state":
        ensemble = Disagreement(STATE, 2, config)
        seen, unseen = transitions(2.0, seed=0), transitions(-2.0, seed=1)
    else:
        ensemble = Disagreement(FRAMES, 2, config)
        seen, unseen = scenes(0, seed=0), scenes(10, seed=1)
    first, _ = ensemble.update(*seen)
    seen_start, unseen_start = ensemble.bonus(*seen[:2]).mean().item(), ensemble.bonus(*unseen[:2]).mean().item()
    assert first.shape == (seen[0].shape[0],) and 0.2 < seen_start < 5  # He initialisation: near 1 at first
    for _ in range(200):
        bonus, metrics = ensemble.update(*seen)
    assert ensemble.bonus(*seen[:2]).mean() < 0.1 * seen_start
    assert ensemble.bonus(*unseen[:2]).mean() > 0.5 * seen_start  # about as novel as anything was at first
    assert ensemble.bonus(*unseen[:2]).mean() > 20 * ensemble.bonus(*seen[:2]).mean()
    assert unseen_start > seen_start  # far from the whitening statistics, members extrapolate apart
    assert bonus.mean() < 0.1 * seen_start and np.isfinite(metrics["disagreement_loss"])
    assert torch.equal(ensemble.bonus(*seen[:2]), ensemble.bonus(*seen[:2]))  # bonus() is a pure query


def test_members_disagree_at_init_and_the_bonus_is_their_variance():
    torch.manual_seed(0)
    ensemble = Disagreement(STATE, 2, DisagreementConfig(members=3))
    weights = ensemble.ensemble[0].weight
    assert weights.shape[0] == 3 and not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    obs, action, _ = transitions(0.0, seed=0)
    bonus = ensemble.bonus(obs, action)
    assert (bonus > 0).all()
    with torch.no_grad():
        predictions = ensemble._predict(ensemble._embed(obs, "obs"), action)
    assert predictions.shape == (3, 64, 4)
    torch.testing.assert_close(bonus, predictions.var(0, unbiased=False).mean(-1))
    torch.manual_seed(1)
    other = Disagreement(STATE, 2, DisagreementConfig(members=3))
    assert not torch.allclose(other.bonus(obs, action), bonus)  # another seed, another ensemble


def test_percentile_scale_follows_the_5_to_95_range_and_never_falls_below_one():
    scale = PercentileScale()
    assert scale.scale == 1  # no batch seen yet
    wide = torch.linspace(0, 10, 1001)  # P05 = 0.5, P95 = 9.5
    assert scale(wide).item() == pytest.approx(9.0, rel=1e-5)  # the first batch gives its own range (debiased EMA)
    wider = torch.linspace(-10, 10, 1001)  # range 18
    assert scale(wider).item() == pytest.approx((0.99 * 9 + 18) / 1.99, rel=1e-5)  # EMA, debiased
    narrow = torch.linspace(0, 0.1, 1001)
    for _ in range(1000):
        value = scale(narrow)
        assert value >= 1
    assert value.item() == 1.0  # a range below 1 is not amplified
    assert PercentileScale()(torch.full((8,), 3.0)).item() == 1.0


def test_reward_mix_divides_each_term_by_its_scale_only_when_normalising():
    reward, bonus = torch.linspace(-40, 40, 101), torch.linspace(0, 0.5, 101)
    terms = {"env": reward, "disagreement": bonus}
    plain, metrics = RewardMix({"env": 1.0, "disagreement": 2.0}, normalise=False)(terms)
    torch.testing.assert_close(plain, reward + 2 * bonus)
    assert set(metrics) == {"reward_env", "reward_disagreement"}
    mixed, metrics = RewardMix({"env": 0.5, "disagreement": 2.0}, normalise=True)(terms)
    assert metrics["reward_env_scale"] == pytest.approx(72.0, rel=1e-5) and metrics["reward_disagreement_scale"] == 1
    torch.testing.assert_close(mixed, 0.5 * reward / 72.0 + 2 * bonus)
    with pytest.raises(ValueError, match="do not match the weights"):
        RewardMix({"env": 1.0}, normalise=False)(terms)
    with pytest.raises(ValueError, match="reward term 'disagreement' has shape"):
        RewardMix({"env": 1.0, "disagreement": 1.0}, normalise=False)({"env": reward, "disagreement": bonus[:5]})


DISAGREE = dataclasses.replace(TINY, disagreement_weight=1.0, disagreement_members=3)


def test_drqv2_state_agent_trains_the_ensemble_and_its_checkpoint_carries_it():
    torch.manual_seed(0)
    agent = DrQV2Agent(DISAGREE, (5,), ACTIONS)
    assert agent.rnd is None and "disagreement" in agent.optimizers
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    metrics = agent.update(toy_batch((5,)), step=3)
    assert all(np.isfinite(v) for v in metrics.values())
    assert {"reward_env", "reward_disagreement", "reward_env_scale", "disagreement_loss"} <= set(metrics)
    after = agent.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"actor", "critic", "critic_target", "disagreement", "reward_mix"}
    twin = DrQV2Agent(DISAGREE, (5,), ACTIONS)
    twin.load_state_tensors(agent.state_tensors())
    torch.manual_seed(5)
    first = agent.update(toy_batch((5,), seed=1), step=4)
    torch.manual_seed(5)
    assert twin.update(toy_batch((5,), seed=1), step=4) == first  # ensemble, its Adam and the scales came along


def test_workspace_resumes_a_drqv2_state_run_with_disagreement_exactly(tmp_path):
    def settings(total: int) -> Training:
        return Training(total_steps=total, seed_steps=10, update_every=2, frame_stack=1, replay_capacity=200,
                        eval_every=20, eval_episodes=1, checkpoint_every=20, video_every=0, log_every=10, seed=2)

    train_agent(make_state_env, tmp_path / "split", "drqv2", DISAGREE, settings(20))
    resumed = train_agent(make_state_env, tmp_path / "split", "drqv2", DISAGREE, settings(40), resume=True)
    whole = train_agent(make_state_env, tmp_path / "whole", "drqv2", DISAGREE, settings(40))
    assert resumed["updates"] == whole["updates"] == 16
    assert resumed["eval_true_return"] == whole["eval_true_return"]
    a, b = load_agent(tmp_path / "split" / "checkpoint"), load_agent(tmp_path / "whole" / "checkpoint")
    assert a.disagreement is not None
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_drq_pixel_agent_mixes_rnd_and_disagreement_each_by_its_scale():
    torch.manual_seed(0)
    config = DrQConfig(encoder_channels=(8, 8), feature_dim=16, hidden_dim=32, batch_size=8, rnd_weight=1.0,
                       disagreement_weight=0.5, disagreement_members=2)
    agent = DrQAgent(config, (9, 40, 40), ACTIONS)
    rng = np.random.default_rng(0)
    batch = {
        "obs": rng.integers(0, 256, (8, 9, 40, 40), dtype=np.uint8),
        "action": rng.uniform(-2, 2, (8, 2)).astype(np.float32),
        "reward": rng.normal(size=8).astype(np.float32),
        "discount": np.ones(8, np.float32),
        "next_obs": rng.integers(0, 256, (8, 9, 40, 40), dtype=np.uint8),
    }
    metrics = agent.update(batch)
    assert {"reward_env_scale", "reward_rnd_scale", "reward_disagreement_scale"} <= set(metrics)
    assert set(agent.optimizers) == {"critic", "actor", "alpha", "rnd", "disagreement"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"disagreement_weight": -1.0}, "disagreement_weight must be >= 0"),
        ({"reward_weight": -0.5}, "reward_weight must be >= 0"),
        ({"rnd_weight": -1.0}, "rnd_weight must be >= 0"),
        ({"disagreement_members": 1}, "at least 2 members"),
    ],
)
def test_bad_exploration_configs_are_named(changes, message):
    for config in (DrQV2Config, DrQConfig):
        with pytest.raises(ValueError, match=message):
            config(**changes)


def test_bad_ensemble_configs_and_shapes_are_named():
    with pytest.raises(ValueError, match="at least 2 members"):
        DisagreementConfig(members=1)
    with pytest.raises(ValueError, match="subset_fraction"):
        DisagreementConfig(subset_fraction=0.0)
    with pytest.raises(ValueError, match="obs_shape"):
        Disagreement((4, 16, 16), 2)
    ensemble = Disagreement(STATE, 2)
    obs, action, next_obs = transitions(0.0, seed=0, count=8)
    with pytest.raises(ValueError, match=r"obs must be float \(B, 4\)"):
        ensemble.bonus(obs[:, :3], action)
    with pytest.raises(ValueError, match=r"action must be float \(8, 2\)"):
        ensemble.update(obs, action[:, :1], next_obs)
    with pytest.raises(ValueError, match=r"next_obs must be float \(B, 4\)"):
        ensemble.update(obs, action, next_obs[:, :2])
    with pytest.raises(ValueError, match="next_obs has a batch of 4, obs of 8"):
        ensemble.update(obs, action, next_obs[:4])
    frames = Disagreement(FRAMES, 2)
    with pytest.raises(ValueError, match=r"obs must be uint8 \(B, 6, 16, 16\)"):
        frames.bonus(torch.zeros(8, *FRAMES), action)


def test_agent_options_switch_disagreement_on():
    from experiments.train_agent import agent_config

    config = agent_config("drqv2", "cpu", "env", "state", options={"disagreement_weight": "1",
                                                                    "disagreement_members": "8"})
    assert config.disagreement_weight == 1.0 and config.disagreement_members == 8 and config.reward_weight == 1.0
    assert agent_config("drqv2", "cpu", "viper", "state").disagreement_weight == 0.0  # off unless asked for

"""A trained agent run as the expert: `wm collect --policies agent:RUN` records it as its training loop ran it."""

import json

import numpy as np
import pytest

from agents.drqv2 import DrQV2Config
from agents.replay import ObservationStack
from agents.workspace import Training, load_agent
from envs.collect import PolicySpec, collect
from experiments.agent_policy import run_policy_factory
from experiments.cli import main
from experiments.train_agent import env_factory, run_agent
from worldmodel.episodes import read_episode

AGENT = DrQV2Config(feature_dim=8, hidden_dim=16, batch_size=8, std_steps=100)


@pytest.fixture(scope="module")
def agent_run(tmp_path_factory):
    """A few steps of DrQ-v2 on cartpole-balance's own reward, from states, deciding every 8 physics steps."""
    run = tmp_path_factory.mktemp("expert") / "balance-expert"
    training = Training(total_steps=12, seed_steps=4, frame_stack=1, replay_capacity=100, eval_every=100,
                        eval_episodes=0, checkpoint_every=100, video_every=0)
    run_agent("dmc:cartpole-balance", run, "drqv2", AGENT, training, "env", action_repeat=8, max_episode_steps=16,
              observation="state")
    return run


def _replayed_actions(run, seed: int, steps: int) -> np.ndarray:
    """The run's agent stepped through its own training env stack (state observations, action repeat 8)."""
    env = env_factory("dmc:cartpole-balance", "env", action_repeat=8, observation="state")(0)
    agent = load_agent(run / "checkpoint")
    stack = ObservationStack(1)
    obs, _ = env.reset(seed=seed)
    actions = [agent.act(stack.reset(obs), sample=False)]
    while len(actions) * 4 < steps:
        obs, *_ = env.step(actions[-1])
        actions.append(agent.act(stack.push(obs), sample=False))
    return np.repeat(np.stack(actions), 4, axis=0)[:steps]  # each decision held for 4 env steps


def test_collect_records_the_trained_agent_as_its_training_env_ran_it(agent_run, tmp_path):
    policies = [PolicySpec.parse(f"agent:{agent_run}"), PolicySpec.parse(f"noisy-agent:0.5:{agent_run}")]
    manifest = collect("dmc:cartpole-balance", policies, 1, tmp_path, test_fraction=0.0, workers=2, max_steps=16,
                       policy_factory=run_policy_factory)  # worker processes: the factory travels by name
    by_policy = {info["policy"]: (path, info) for path, info in manifest.episodes.items()}
    assert set(by_policy) == {"agent-balance-expert", "noisy0.5-agent-balance-expert"}
    path, info = by_policy["agent-balance-expert"]
    recorded = read_episode(tmp_path / path).actions[:-1]  # the last action is padding
    np.testing.assert_allclose(recorded, _replayed_actions(agent_run, info["seed"], 16), rtol=0, atol=1e-6)
    noisy_path, _ = by_policy["noisy0.5-agent-balance-expert"]
    noisy = read_episode(tmp_path / noisy_path).actions[:-1]
    assert noisy.shape == recorded.shape and np.abs(noisy).max() <= 1.0
    assert not np.allclose(noisy, _replayed_actions(agent_run, manifest.episodes[noisy_path]["seed"], 16))


def test_agent_policies_refuse_another_task_a_missing_run_and_no_factory(agent_run, tmp_path):
    with pytest.raises(ValueError, match="trained its agent on dmc:cartpole-balance, not on dmc:cartpole-swingup"):
        collect("dmc:cartpole-swingup", [PolicySpec.parse(f"agent:{agent_run}")], 1, tmp_path / "a", max_steps=4,
                policy_factory=run_policy_factory)
    with pytest.raises(FileNotFoundError, match="run.json is missing"):
        collect("dmc:cartpole-balance", [PolicySpec.parse(f"agent:{tmp_path / 'nowhere'}")], 1, tmp_path / "b",
                max_steps=4, policy_factory=run_policy_factory)
    with pytest.raises(ValueError, match="needs a policy factory"):
        collect("dmc:cartpole-balance", [PolicySpec.parse(f"agent:{agent_run}")], 1, tmp_path / "c", max_steps=4)


def test_wm_collect_takes_agent_policies(agent_run, tmp_path, capsys):
    main(["collect", "--env", "dmc:cartpole-balance", "--policies", f"agent:{agent_run},random", "--episodes", "1",
          "--test-fraction", "0", "--max-steps", "8", "--workers", "1", "--out", str(tmp_path)])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(info["policy"] for info in manifest["episodes"].values()) == ["agent-balance-expert", "random"]
    assert "agent-balance-expert" in capsys.readouterr().out

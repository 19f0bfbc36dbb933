import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from envs.collect import PolicySpec, collect, run_episode
from envs.experts import random_policy
from worldmodel.episodes import DatasetManifest, EpisodeDataset, read_episode


def test_policy_specs_parse_and_reject():
    assert PolicySpec.parse("expert") == PolicySpec("expert")
    assert PolicySpec.parse("noisy:0.3").label == "noisy0.3"
    assert PolicySpec.parse("agent:runs/walker-expert") == PolicySpec("agent", source="runs/walker-expert")
    assert PolicySpec.parse("agent:runs/walker-expert").label == "agent-walker-expert"
    assert PolicySpec.parse("noisy-agent:0.3:runs/w") == PolicySpec("noisy-agent", 0.3, "runs/w")
    assert PolicySpec.parse("noisy-agent:0.3:runs/w").label == "noisy0.3-agent-w"
    assert PolicySpec.parse("still") == PolicySpec("still")
    assert PolicySpec.parse("held:25") == PolicySpec("held", hold=25)
    assert PolicySpec.parse("held:25").label == "held25"
    assert PolicySpec.parse("spread:0.8") == PolicySpec("spread", spread=0.8)
    assert PolicySpec.parse("spread:0.8").label == "spread0.8"
    for bad in ["noisy", "noisy:-1", "noisy:x", "greedy", "random:2", "agent", "agent:", "noisy-agent:0.3",
                "still:1", "held", "held:0", "held:x", "held:-3", "spread", "spread:0", "spread:1.5", "spread:x",
                "noisy-agent:0:runs/w", "noisy-agent:x:runs/w"]:
        with pytest.raises(ValueError, match="bad policy"):
            PolicySpec.parse(bad)


def test_collect_writes_episodes_manifest_and_resumes(tmp_path):
    policies = [PolicySpec("expert"), PolicySpec("random")]
    manifest = collect("dmc:cartpole-balance", policies, 2, tmp_path, test_fraction=0.5, max_steps=6)
    assert manifest.tasks == ["cartpole-balance"] and manifest.frame_skip == 2
    assert manifest.action_space == {"type": "box", "shape": [1], "low": -1.0, "high": 1.0}
    assert len(manifest.episodes) == 4
    assert sorted({info["policy"] for info in manifest.episodes.values()}) == ["expert", "random"]
    assert DatasetManifest.load(tmp_path) == manifest
    episode = read_episode(tmp_path / next(iter(manifest.episodes)))
    assert episode.video.shape == (7, 64, 64, 3) and episode.actions.shape == (7, 1)
    assert episode.actions.dtype == np.float32 and not episode.actions[-1].any()
    assert len(EpisodeDataset(tmp_path, "train")) == len(EpisodeDataset(tmp_path, "test")) == 14

    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.npz")}
    collect("dmc:cartpole-balance", policies, 2, tmp_path, test_fraction=0.5, max_steps=6)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.npz")} == before


def test_worker_processes_give_the_same_episodes(tmp_path):
    inline = collect("dmc:cartpole-balance", [PolicySpec("random")], 2, tmp_path / "a", max_steps=3)
    pooled = collect("dmc:cartpole-balance", [PolicySpec("random")], 2, tmp_path / "b", max_steps=3, workers=2)
    assert inline.episodes == pooled.episodes
    for name in inline.episodes:
        np.testing.assert_array_equal(read_episode(tmp_path / "a" / name).video, read_episode(tmp_path / "b" / name).video)


def _dies_once(spec, env, env_spec, seed):
    """A policy factory whose worker process dies abruptly the first time (the marker file is ``spec.source``)."""
    marker = Path(spec.source)
    if not marker.exists():
        marker.touch()
        os._exit(1)
    return random_policy(env.action_space, seed)


def _always_dies(spec, env, env_spec, seed):
    os._exit(1)


def test_a_worker_that_dies_loses_no_episode_and_hangs_nothing(tmp_path):
    dies_once = PolicySpec("agent", source=str(tmp_path / "died"))
    manifest = collect("dmc:cartpole-balance", [dies_once], 3, tmp_path / "data", test_fraction=0, max_steps=2,
                       workers=2, policy_factory=_dies_once)
    assert (tmp_path / "died").exists() and len(manifest.episodes) == 3
    assert all((tmp_path / "data" / name).is_file() for name in manifest.episodes)

    with pytest.raises(RuntimeError, match="workers died 3 times; 2 episode"):
        collect("dmc:cartpole-balance", [PolicySpec("agent", source="never")], 2, tmp_path / "lost", max_steps=2,
                workers=2, policy_factory=_always_dies)


def test_a_dataset_refuses_another_action_space(tmp_path):
    collect("dmc:cartpole-balance", [PolicySpec("random")], 1, tmp_path, test_fraction=0, max_steps=2)
    with pytest.raises(ValueError, match="action space"):
        collect("dmc:reacher-easy", [PolicySpec("random")], 1, tmp_path, test_fraction=0, max_steps=2)


def test_episodes_at_another_action_repeat_are_those_of_an_env_made_so(tmp_path):
    import envs
    from envs.experts import make_expert

    manifest = collect("dmc:cartpole-balance", [PolicySpec("expert")], 1, tmp_path, test_fraction=0, max_steps=5,
                       workers=2, env_options={"action_repeat": 8})
    assert manifest.frame_skip == 8
    env = gym.wrappers.TimeLimit(envs.make("dmc:cartpole-balance", action_repeat=8), 5)  # as train-imagination's
    (name, info), = manifest.episodes.items()
    expected = run_episode(env, make_expert("cartpole-balance", env, info["seed"]), info["seed"])
    np.testing.assert_array_equal(read_episode(tmp_path / name).video, expected["video"])
    with pytest.raises(ValueError, match="8 env steps per frame, not 2"):
        collect("dmc:cartpole-balance", [PolicySpec("random")], 1, tmp_path, test_fraction=0, max_steps=2)


def test_a_task_label_files_play_as_a_source_of_its_own(tmp_path):
    collect("dmc:cartpole-balance", [PolicySpec("expert")], 1, tmp_path, test_fraction=0, max_steps=2)
    manifest = collect("dmc:cartpole-balance", [PolicySpec("random")], 1, tmp_path, test_fraction=0, max_steps=2,
                       task_label="cartpole-balance@play")
    assert manifest.tasks == ["cartpole-balance", "cartpole-balance@play"]
    (name, info), = [(n, i) for n, i in manifest.episodes.items() if i["policy"] == "random"]
    assert name.startswith("train/cartpole-balance@play/random/") and info["task"] == "cartpole-balance@play"
    assert read_episode(tmp_path / name).task_id == 1
    with pytest.raises(ValueError, match="task label"):
        collect("dmc:cartpole-balance", [PolicySpec("random")], 1, tmp_path, max_steps=2, task_label="a/b")


class _Countdown(gym.Env):
    """Ends by termination after three steps, unless a time limit cuts it first."""

    observation_space = gym.spaces.Box(0, 255, (4, 4, 3), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros((4, 4, 3), np.uint8), {}

    def step(self, action):
        self.t += 1
        return np.full((4, 4, 3), self.t, np.uint8), 1.0, self.t == 3, False, {}


def test_episodes_record_whether_the_task_ended_them():
    ended = run_episode(_Countdown(), lambda obs: 0, seed=0)
    assert ended["terminated"] and len(ended["video"]) == 4
    cut = run_episode(gym.wrappers.TimeLimit(_Countdown(), 2), lambda obs: 0, seed=0)
    assert not cut["terminated"] and len(cut["video"]) == 3


def test_a_spread_expert_records_where_the_task_has_a_round_target(tmp_path):
    manifest = collect("dmc:point_mass-easy", [PolicySpec.parse("spread:0.5")], 1, tmp_path / "a", max_steps=3)
    assert [info["policy"] for info in manifest.episodes.values()] == ["spread0.5"]
    with pytest.raises(ValueError, match="round target"):
        collect("dmc:cartpole-balance", [PolicySpec.parse("spread:0.5")], 1, tmp_path / "b", max_steps=3)

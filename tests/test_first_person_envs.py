"""What the first-person envs share (``envs.first_person.FirstPersonEnv``), checked on each of them:
reproducible episodes, turns, frame sizes, named errors, episode length, gymnasium's checker, ``make`` and
collected episodes that replay. Each env's own world, movement and expert are tested in its own file."""

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs import make, make_expert
from envs.collect import PolicySpec, collect
from envs.first_person import FORWARD, TURN_LEFT, TURN_RIGHT, FirstPersonEnv
from envs.maze import DMLabMazeEnv, MazeExplorer
from envs.voxel_terrain import TerrainWalker, VoxelTerrainEnv
from worldmodel.episodes import read_episode


@dataclass(frozen=True)
class EnvCase:
    """One first-person env and what the shared tests expect of it."""

    env_class: type[FirstPersonEnv]
    spec: str  # for envs.make
    turn_degrees: float  # the default turn
    fps: int
    sizes: tuple[int, int]  # frame sizes to build it at
    expert_class: type
    world: Callable[[FirstPersonEnv], np.ndarray]  # an array that tells one episode's world from another


CASES = [
    EnvCase(DMLabMazeEnv, "dmlab:maze", 20.0, 15, (64, 48), MazeExplorer, lambda env: env.maze.walls),
    EnvCase(VoxelTerrainEnv, "voxel:terrain", 15.0, 10, (64, 128), TerrainWalker, lambda env: env.world.blocks),
]


@pytest.fixture(params=CASES, ids=["maze", "voxel"])
def case(request: pytest.FixtureRequest) -> EnvCase:
    return request.param


def rollout(env: FirstPersonEnv, seed: int, actions: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    obs, info = env.reset(seed=seed)
    frames, poses = [obs], [info["pose"]]
    for action in actions:
        obs, _, _, _, info = env.step(action)
        frames.append(obs)
        poses.append(info["pose"])
    return frames, poses


def test_same_seed_same_world_and_frames_other_seed_other_world(case):
    env = case.env_class(size=32)
    actions = [FORWARD] * 6 + [TURN_LEFT] * 4 + [FORWARD] * 6 + [TURN_RIGHT] * 2
    frames, poses = rollout(env, 7, actions)
    world = case.world(env).copy()
    again_frames, again_poses = rollout(env, 7, actions)
    np.testing.assert_array_equal(case.world(env), world)
    np.testing.assert_array_equal(np.stack(frames), np.stack(again_frames))
    np.testing.assert_array_equal(np.stack(poses), np.stack(again_poses))
    env.reset(seed=8)
    assert not np.array_equal(case.world(env), world)


@pytest.mark.parametrize("action, sign", [(TURN_LEFT, 1), (TURN_RIGHT, -1)])
def test_a_turn_changes_only_the_heading_by_the_turn_angle(case, action, sign):
    env = case.env_class(size=16)
    first, pose = env.reset(seed=1)[0], env.pose()
    for _ in range(round(360 / case.turn_degrees)):  # a full circle
        before = env.pose()
        after = env.step(action)[4]["pose"]
        np.testing.assert_array_equal(after[:3], before[:3])
        turned = (after[3] - before[3]) % (2 * math.pi)
        assert turned == pytest.approx((sign * math.radians(case.turn_degrees)) % (2 * math.pi), abs=1e-6)
    # The heading is kept exactly, so a full circle gives back the same view.
    np.testing.assert_array_equal(env.pose(), pose)
    np.testing.assert_array_equal(env.render(), first)


def test_frames_are_uint8_of_the_requested_size(case):
    for size in case.sizes:
        env = make(case.spec, size=size)
        for frame in (env.reset(seed=0)[0], env.step(FORWARD)[0]):
            assert frame.shape == (size, size, 3) and frame.dtype == np.uint8
            assert env.observation_space.contains(frame)


def test_bad_arguments_and_calls_are_named(case):
    for kwargs, named in (
        ({"size": 8}, "size"),
        ({"max_steps": 0}, "max_steps"),
        ({"turn_degrees": 0}, "turn_degrees"),
        ({"render_mode": "human"}, "render_mode"),
    ):
        with pytest.raises(ValueError, match=named):
            case.env_class(**kwargs)
    env = case.env_class(size=16, max_steps=2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(FORWARD)
    with pytest.raises(RuntimeError, match="reset"):
        env.pose()
    env.reset(seed=0)
    for bad in (3, -1, 0.0, "forward", np.array([0, 1])):
        with pytest.raises(ValueError, match="unknown action"):
            env.step(bad)
    assert env.step(np.int64(FORWARD))[3] is False
    assert env.step(TURN_LEFT)[3] is True
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(FORWARD)


def test_a_default_episode_has_300_frames(case):
    env = case.env_class(size=16)
    env.reset(seed=2)
    frames, truncated = 1, False
    while not truncated:
        _, _, terminated, truncated, _ = env.step(TURN_LEFT)
        assert not terminated
        frames += 1
    assert frames == 300


def test_gymnasium_checker_passes(case):
    check_env(case.env_class(size=16))


def test_make_builds_the_env_and_its_expert(case):
    env = make(case.spec, size=32, turn_degrees=30.0)
    assert isinstance(env, case.env_class) and env.turn_degrees == 30.0 and env.size == 32
    env.reset(seed=0)
    assert isinstance(make_expert(case.spec.partition(":")[2], env, seed=3), case.expert_class)


def test_collect_records_the_env_poses(case, tmp_path):
    manifest = collect(case.spec, [PolicySpec("expert")], 2, tmp_path, test_fraction=0.5, max_steps=6)
    assert manifest.env == case.spec.partition(":")[0] and manifest.action_space == {"type": "discrete", "n": 3}
    assert manifest.fps == case.fps
    env = case.env_class()
    for name, info in manifest.episodes.items():
        episode = read_episode(tmp_path / name)
        assert episode.poses.shape == (7, 4) and episode.poses.dtype == np.float32
        frames, poses = rollout(env, info["seed"], [int(a) for a in episode.actions[:-1]])
        np.testing.assert_array_equal(episode.poses, np.stack(poses))
        np.testing.assert_array_equal(episode.video, np.stack(frames))

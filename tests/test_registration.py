import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_util import make_vec_env

from envs import DMCEnv, make, registered_id
from envs.dmc import suite  # through envs, which picks the headless renderer first
from envs.atari import atari_games

DMC_ID = "videoworld/dmc-cartpole-swingup-v0"
MAZE_ID = "videoworld/dmlab-maze-v0"


def _frames(env: gym.Env, seed: int, actions: list) -> list[np.ndarray]:
    frames = [env.reset(seed=seed)[0]]
    frames += [env.step(action)[0] for action in actions]
    return frames


def test_every_env_of_envs_make_has_its_id():
    ours = {env_id for env_id in gym.registry if env_id.startswith("videoworld/")}
    expected = {registered_id(f"dmc:{domain}-{task}") for domain, tasks in suite.TASKS_BY_DOMAIN.items() for task in tasks}
    expected |= {registered_id(f"atari:{game}") for game in atari_games()}
    expected |= {"videoworld/dmlab-maze-v0", "videoworld/dmlab-maze-small-v0", "videoworld/voxel-terrain-v0",
                 "videoworld/voxel-terrain-small-v0"}
    assert ours == expected
    assert registered_id("dmc:ball_in_cup-catch") == "videoworld/dmc-ball_in_cup-catch-v0"
    assert registered_id("atari:Pong") == "videoworld/atari-Pong-v0"
    with pytest.raises(ValueError, match="'cartpole-swingup'"):
        registered_id("cartpole-swingup")


@pytest.mark.parametrize(
    "spec, kwargs, actions",
    [
        ("dmc:cartpole-swingup", {"size": 16, "action_repeat": 3}, [np.full(1, 0.5, np.float32)] * 3),
        ("dmlab:maze", {"size": 32, "maze_size": 5}, [0, 1, 0]),
        ("dmlab:maze-small", {"size": 16}, [0, 1, 0]),
        ("voxel:terrain", {"size": 16, "world_size": 40}, [0, 2, 0]),
        ("voxel:terrain-small", {"size": 16}, [0, 2, 0]),
        ("atari:Pong", {"size": 16}, [2, 3, 2]),
    ],
)
def test_gym_make_passes_keywords_and_gives_the_frames_of_envs_make(spec, kwargs, actions):
    registered = gym.make(registered_id(spec), **kwargs)
    direct = make(spec, **kwargs)
    for ours, theirs in zip(_frames(registered, 4, actions), _frames(direct, 4, actions)):
        np.testing.assert_array_equal(ours, theirs)
    assert registered.unwrapped.spec.id == registered_id(spec)
    registered.close()
    direct.close()


def test_dmc_keywords_reach_the_constructor():
    env = gym.make(DMC_ID, observation="state", action_repeat=5)
    assert isinstance(env.unwrapped, DMCEnv) and env.unwrapped.action_repeat == 5
    assert env.reset(seed=0)[0].shape == (env.unwrapped.state_size,)
    env.close()


@pytest.mark.parametrize("env_id, kwargs", [(DMC_ID, {"size": 16}), (MAZE_ID, {"size": 32})])
def test_make_vec_and_sb3_make_vec_env_build_and_step(env_id, kwargs):
    vector = gym.make_vec(env_id, num_envs=2, vectorization_mode="sync", **kwargs)
    obs, _ = vector.reset(seed=[1, 2])
    assert obs.shape == (2, kwargs["size"], kwargs["size"], 3) and obs.dtype == np.uint8
    obs, reward, terminated, truncated, _ = vector.step(vector.action_space.sample())
    assert obs.shape == (2, kwargs["size"], kwargs["size"], 3) and reward.shape == (2,)
    vector.close()

    sb3 = make_vec_env(env_id, n_envs=2, seed=0, env_kwargs=kwargs)
    obs = sb3.reset()
    assert obs.shape == (2, kwargs["size"], kwargs["size"], 3)
    obs, reward, done, infos = sb3.step(np.stack([sb3.action_space.sample() for _ in range(2)]))
    assert obs.shape == (2, kwargs["size"], kwargs["size"], 3) and reward.shape == (2,) and len(infos) == 2
    sb3.close()


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped")  # the registered env, wrappers included
@pytest.mark.parametrize("env_id, kwargs", [(DMC_ID, {"size": 16}), (MAZE_ID, {"size": 32, "maze_size": 5})])
def test_registered_envs_pass_the_gymnasium_checker(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    check_env(env)
    env.close()


def test_unknown_ids_and_keywords_name_the_problem():
    with pytest.raises(gym.error.NameNotFound, match="dmc-cartpole-swingup`"):
        gym.make("videoworld/dmc-cartpole-swingupp-v0")
    with pytest.raises(gym.error.NameNotFound, match="atari-Pong`"):
        gym.make("videoworld/atari-Pongg-v0")
    with pytest.raises(TypeError, match="colour"):
        gym.make(MAZE_ID, colour="red")


def test_module_prefixed_id_builds_without_importing_envs_first():
    code = (
        "import sys, gymnasium as gym\n"
        "assert 'envs' not in sys.modules\n"
        "env = gym.make('envs:videoworld/voxel-terrain-v0', size=16, world_size=40)\n"
        "print(env.reset(seed=0)[0].shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("(16, 16, 3)")


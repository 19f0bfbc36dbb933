import pytest

from envs.wrappers import ActionRepeat, env_steps_per_decision
from experiments.train_agent import default_action_repeat, env_factory


def _repeat(env) -> int:
    while not isinstance(env, ActionRepeat):
        if not hasattr(env, "env"):
            return 1
        env = env.env
    return env.repeat


def test_action_repeat_counts_physics_steps_on_top_of_the_envs_own_repeat():
    assert env_steps_per_decision(8, 2) == 4 and env_steps_per_decision(2, 2) == 1
    with pytest.raises(ValueError, match="action repeat 3 .* not a multiple of the env's own repeat of 2"):
        env_steps_per_decision(3, 2)
    for physics, wrapper in ((8, 4), (4, 2), (2, 1), (None, 4)):  # None: cartpole's DMC-100k repeat, 8
        env = env_factory("dmc:cartpole-swingup", "env", observation="state", action_repeat=physics)(0)
        assert _repeat(env) == wrapper
    with pytest.raises(ValueError, match="not a multiple"):
        env_factory("dmc:cartpole-swingup", "env", observation="state", action_repeat=5)(0)


def test_default_action_repeat_is_the_published_one_else_planets_common_one_else_the_envs_own():
    assert default_action_repeat("dmc:cartpole-swingup", 2) == 8
    assert default_action_repeat("dmc:reacher-easy", 2) == 4
    assert default_action_repeat("dmc:walker-walk", 2) == 2
    assert default_action_repeat("dmc:pendulum-swingup", 2) == 4
    assert default_action_repeat("atari:Pong", 4) == 4

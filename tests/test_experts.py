import gymnasium as gym
import numpy as np
import pytest

from envs import EXPERT_TASKS, DMCEnv, held_random_policy, make, make_expert, noisy_policy, random_policy, still_policy
from envs.experts import ReacherExpert


def short_return(env, policy, seed: int, steps: int) -> float:
    observation, _ = env.reset(seed=seed)
    total = 0.0
    for _ in range(steps):
        observation, reward, *_ = env.step(policy(observation))
        total += reward
    return total


@pytest.mark.parametrize(
    "task, steps, expert_at_least",
    [
        # Per-step DMC reward is at most 2 at action repeat 2.
        ("cartpole-balance", 100, 190.0),
        ("reacher-easy", 100, 150.0),
        ("point_mass-easy", 100, 100.0),
        ("cartpole-swingup", 150, 140.0),  # about 60 steps to swing up
    ],
)
def test_expert_clearly_beats_random(task, steps, expert_at_least):
    env = make(f"dmc:{task}", size=16)
    expert = short_return(env, make_expert(task, env), seed=0, steps=steps)
    random = short_return(env, random_policy(env.action_space, seed=0), seed=0, steps=steps)
    assert expert >= expert_at_least
    assert expert >= random + 50.0
    env.close()


@pytest.mark.parametrize("task", EXPERT_TASKS)
def test_every_expert_gives_actions_in_the_action_space(task):
    env = make(f"dmc:{task}", size=8)
    observation, _ = env.reset(seed=0)
    action = make_expert(task, env)(observation)
    assert action.dtype == np.float32 and env.action_space.contains(action)
    env.close()


def test_noisy_policy_stays_in_bounds_and_is_reproducible():
    def at_the_bounds(observation):
        return np.array([1.0, -1.0, 0.0], np.float32)

    observation = np.zeros((8, 8, 3), np.uint8)
    policy = noisy_policy(at_the_bounds, noise_std=2.0, seed=0)
    actions = np.stack([policy(observation) for _ in range(200)])
    assert actions.dtype == np.float32
    assert actions.min() >= -1.0 and actions.max() <= 1.0
    assert actions.std(axis=0).min() > 0.1
    replay = noisy_policy(at_the_bounds, noise_std=2.0, seed=0)
    np.testing.assert_array_equal(actions, np.stack([replay(observation) for _ in range(200)]))
    noiseless = noisy_policy(at_the_bounds, noise_std=0.0, seed=0)
    np.testing.assert_array_equal(noiseless(observation), at_the_bounds(observation))


def test_random_policy_is_reproducible_and_leaves_the_space_unseeded():
    env = DMCEnv("reacher", "easy", size=8)
    space_state = env.action_space.np_random.bit_generator.state
    first, second = random_policy(env.action_space, 3), random_policy(env.action_space, 3)
    observation = np.zeros((8, 8, 3), np.uint8)
    for _ in range(5):
        np.testing.assert_array_equal(first(observation), second(observation))
    assert env.action_space.np_random.bit_generator.state == space_state
    env.close()


def test_still_policy_does_nothing_within_the_bounds():
    observation = np.zeros((8, 8, 3), np.uint8)
    box = gym.spaces.Box(np.array([-1.0, 0.5], np.float32), np.array([1.0, 2.0], np.float32))
    action = still_policy(box)(observation)
    np.testing.assert_array_equal(action, [0.0, 0.5])
    assert box.contains(action)
    assert still_policy(gym.spaces.Discrete(4, start=1))(observation) == 1
    with pytest.raises(ValueError, match="no still action"):
        still_policy(gym.spaces.MultiBinary(3))


def test_held_random_policy_changes_action_only_every_hold_steps():
    space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    observation = np.zeros((8, 8, 3), np.uint8)
    policy, replay = held_random_policy(space, 5, seed=1), held_random_policy(space, 5, seed=1)
    actions = np.stack([policy(observation) for _ in range(20)])
    np.testing.assert_array_equal(actions, np.stack([replay(observation) for _ in range(20)]))
    blocks = actions.reshape(4, 5, 2)
    assert (blocks == blocks[:, :1]).all()
    assert len({tuple(block[0]) for block in blocks}) == 4
    assert all(space.contains(action) for action in actions)
    with pytest.raises(ValueError, match="hold"):
        held_random_policy(space, 0, seed=1)


def test_unknown_task_raises_listing_expert_tasks():
    env = DMCEnv("cartpole", "balance", size=8)
    with pytest.raises(ValueError, match="cartpole-swingup") as error:
        make_expert("walker-walk", env)
    assert "walker-walk" in str(error.value)
    with pytest.raises(ValueError, match="cartpole-balance"):
        make_expert("reacher-easy", env)
    env.close()


def test_reacher_expert_aimed_beside_the_target_rests_off_it():
    env = DMCEnv("reacher", "easy", size=8)
    distances = {}
    for offset in (0.0, 0.09):
        observation, _ = env.reset(seed=3)
        policy = ReacherExpert(env, aim_offset=(offset, 0.0))
        rewards = [env.step(policy(observation))[1] for _ in range(150)]
        distances[offset] = env.physics.finger_to_target_dist()
        assert (sum(rewards[-20:]) > 0) == (offset == 0.0)
    assert distances[0.0] < 0.03 and 0.06 < distances[0.09] < 0.12
    env.close()


def test_spread_expert_rests_at_its_seeds_place_within_the_target():
    """point_mass's expert with a goal spread comes to rest off the centre, where the seed puts it, but inside the
    target (true reward paid); each seed its own place, the same seed the same place."""
    env = DMCEnv("point_mass", "easy", size=8)
    radius = float(env.physics.named.model.geom_size["target", 0])
    rests = []
    for seed in (0, 1, 0):
        observation, _ = env.reset(seed=5)
        policy = make_expert("point_mass-easy", env, seed=seed, goal_spread=0.9)
        rewards = [env.step(policy(observation))[1] for _ in range(150)]
        rests.append(-env.physics.mass_to_target()[:2])  # the mass relative to the target's centre
        assert min(rewards[-20:]) > 0.9 * 2  # inside the target at every step (action repeat 2)
    assert np.allclose(rests[0], rests[2], atol=1e-3) and np.linalg.norm(rests[0] - rests[1]) > 1e-3
    assert all(0.0 < np.linalg.norm(rest) < 0.9 * radius + 2e-3 for rest in rests)
    env.close()
    with pytest.raises(ValueError, match="round target"):
        make_expert("cartpole-balance", DMCEnv("cartpole", "balance", size=8), goal_spread=0.5)

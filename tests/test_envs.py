import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs import DMCEnv, make, make_atari
from envs.atari import SCOREBOARD_ROWS


def rollout_frames(env, seed: int, steps: int) -> list[np.ndarray]:
    frames = [env.reset(seed=seed)[0]]
    for t in range(steps):
        action = np.full(env.action_space.shape, np.sin(t), np.float32)
        frames.append(env.step(action)[0])
    return frames


def test_dmc_passes_gymnasium_checker():
    env = DMCEnv("cartpole", "swingup", size=16)
    check_env(env, skip_render_check=True)
    env.close()


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped")  # the wrapper is what we check
def test_atari_passes_gymnasium_checker():
    env = make_atari("Pong")
    check_env(env, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("spec", ["dmc:ball_in_cup-catch", "atari:Breakout"])
def test_make_gives_64px_uint8_frames(spec):
    env = make(spec)
    obs, _ = env.reset(seed=0)
    step_obs = env.step(env.action_space.sample())[0]
    for frame in (obs, step_obs):
        assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
        assert env.observation_space.contains(frame)
    env.close()


def test_dmc_same_seed_same_frames_other_seed_other_start():
    env = make("dmc:reacher-easy", size=32)
    first = rollout_frames(env, seed=3, steps=5)
    again = rollout_frames(env, seed=3, steps=5)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    other_start = env.reset(seed=4)[0]
    assert not np.array_equal(first[0], other_start)
    env.close()


def test_atari_same_seed_same_frames():
    env = make_atari("Breakout", size=32)
    first = [env.reset(seed=1)[0]] + [env.step(t % 4)[0] for t in range(20)]
    again = [env.reset(seed=1)[0]] + [env.step(t % 4)[0] for t in range(20)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    env.close()


def test_dmc_renders_once_per_agent_step(monkeypatch):
    env = DMCEnv("cartpole", "balance", size=16, action_repeat=3)
    physics = env.physics
    calls = []
    real_render = physics.render

    def counting_render(*args, **kwargs):
        calls.append(1)
        return real_render(*args, **kwargs)

    monkeypatch.setattr(physics, "render", counting_render)
    env.reset(seed=0)
    for _ in range(4):
        last_obs = env.step(env.action_space.sample())[0]
    assert len(calls) == 1 + 4
    assert env.render() is last_obs and len(calls) == 5
    env.close()


def test_dmc_on_states_renders_only_when_asked_and_matches_the_pixel_env(monkeypatch):
    pixels = DMCEnv("reacher", "easy", size=16)
    states = DMCEnv("reacher", "easy", size=16, observation="state")
    check_env(states, skip_render_check=True)
    calls = []
    real_render = states.physics.render
    monkeypatch.setattr(states.physics, "render", lambda *a, **k: calls.append(1) or real_render(*a, **k))
    obs, _ = states.reset(seed=5)
    pixels.reset(seed=5)
    for t in range(3):
        action = np.full(2, np.sin(t), np.float32)
        obs = states.step(action)[0]
        frame = pixels.step(action)[0]
    assert obs.shape == (states.state_size,) and states.observation_space.contains(obs)
    np.testing.assert_array_equal(obs, pixels.state())
    assert calls == []
    np.testing.assert_array_equal(states.render(), frame)
    states.render()
    assert len(calls) == 1
    with pytest.raises(ValueError, match="observation must be"):
        DMCEnv("reacher", "easy", observation="rgb")


def test_dmc_frames_with_the_smaller_shadow_map_are_dmcs_own_but_at_shadow_edges():
    from dm_control import suite

    env = DMCEnv("walker", "walk")
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(20):
        env.step(env.action_space.sample())
    reference = suite.load("walker", "walk")  # DMC's own render settings
    with reference.physics.reset_context():
        reference.physics.set_state(env.physics.get_state())
    diff = np.abs(env.render().astype(int) - reference.physics.render(64, 64, camera_id=0)).max(axis=-1)
    assert env.physics.model.vis.quality.shadowsize == 512 and reference.physics.model.vis.quality.shadowsize == 2048
    assert 0 < (diff > 8).mean() < 0.005 and diff.mean() < 0.1
    assert DMCEnv("walker", "walk", size=480).physics.model.vis.quality.shadowsize == 2048  # DMC's, for large frames


def test_dmc_action_repeat_sums_rewards_of_mapped_controls():
    from dm_control import suite  # after envs, which chooses headless rendering

    env = DMCEnv("point_mass", "easy", size=16, action_repeat=2)
    reference = suite.load("point_mass", "easy", task_kwargs={"random": 7})
    env.reset(seed=7)
    reference.reset()
    for t in range(5):
        action = np.array([0.8, -0.3 * t], np.float32)
        reward = env.step(action)[1]
        # point_mass controls are in [-1, 1], so the mapping is the identity.
        expected = sum(reference.step(action.astype(np.float64)).reward for _ in range(2))
        assert reward == pytest.approx(expected)
    env.close()


def test_dmc_actions_map_onto_asymmetric_actuator_bounds():
    env = DMCEnv("quadruped", "walk", size=16)
    assert env.camera == 2
    low, high = env.physics.model.actuator_ctrlrange.T
    env.reset(seed=0)
    env.step(np.ones(env.action_space.shape, np.float32))
    np.testing.assert_allclose(env.physics.data.ctrl, high)
    env.step(-np.ones(env.action_space.shape, np.float32))
    np.testing.assert_allclose(env.physics.data.ctrl, low)
    env.close()


@pytest.mark.parametrize("action_repeat, episode_steps", [(2, 500), (3, 334)])
def test_dmc_truncates_at_time_limit_and_then_needs_reset(monkeypatch, action_repeat, episode_steps):
    env = DMCEnv("cartpole", "balance", size=16, action_repeat=action_repeat)
    # The time limit counts real physics steps; only the pixels are skipped here
    # (rendering is most of the cost, and its once-per-step use is tested above).
    monkeypatch.setattr(env.physics, "render", lambda *args, **kwargs: np.zeros((16, 16, 3), np.uint8))
    env.reset(seed=0)
    action = np.zeros(1, np.float32)
    for _ in range(episode_steps - 1):
        _, _, terminated, truncated, _ = env.step(action)
        assert not (terminated or truncated)
    _, _, terminated, truncated, _ = env.step(action)
    assert truncated and not terminated
    with pytest.raises(RuntimeError, match="reset"):
        env.step(action)
    env.close()


def test_dmc_terminates_only_when_the_task_ends_the_episode():
    env = DMCEnv("lqr", "lqr_2_1", size=16)
    env.reset(seed=0)
    _, _, terminated, truncated, _ = env.step(np.zeros(env.action_space.shape, np.float32))
    assert not (terminated or truncated)
    # The LQR task ends (discount 0) once the state is at the origin.
    env.physics.data.qpos[:] = 0.0
    env.physics.data.qvel[:] = 0.0
    env.physics.forward()
    _, _, terminated, truncated, _ = env.step(np.zeros(env.action_space.shape, np.float32))
    assert terminated and not truncated
    env.close()


def test_atari_scoreboard_is_blacked_out_before_resizing():
    masked_env = make_atari("Pong", size=64)
    plain_env = make_atari("Pong", size=64, mask_scoreboard=False)
    masked_env.reset(seed=0)
    native = masked_env.unwrapped.ale.getScreenRGB()
    (start, stop), = SCOREBOARD_ROWS["Pong"]
    assert start == 0 and native[start:stop].any(), "Pong's score rows should show something to mask"
    masked, plain = masked_env.observation(native), plain_env.observation(native)
    covered = stop * 64 // 210  # output rows made only of masked native rows
    assert not masked[:covered].any()
    assert plain[:covered].any()
    first_clean = -(-stop * 64 // 210)  # output rows made only of unmasked native rows
    np.testing.assert_array_equal(masked[first_clean:], plain[first_clean:])
    masked_env.close()
    plain_env.close()


def test_atari_game_without_known_scoreboard_warns_and_stays_unmasked():
    with pytest.warns(UserWarning, match="Alien"):
        env = make_atari("Alien", size=16)
    assert env.observation_space.shape == (16, 16, 3)
    env.close()


@pytest.mark.parametrize(
    "spec, named, lists",
    [
        ("gym:CartPole-v1", "gym:CartPole-v1", "atari:<Game>"),
        ("dmc:cartpole", "dmc:cartpole", "dmc:<domain>-<task>"),
        ("dmc:no_such_domain-easy", "no_such_domain", "point_mass"),
        ("dmc:cartpole-no_such_task", "no_such_task", "swingup"),
        ("atari:NoSuchGame", "NoSuchGame", "Pong"),
    ],
)
def test_bad_specs_raise_naming_the_problem(spec, named, lists):
    with pytest.raises(ValueError) as error:
        make(spec)
    assert named in str(error.value) and lists in str(error.value)

import numpy as np
import pytest

from agents.replay import ObservationStack, ReplayBuffer

SIZE = 8


def frame(value: int) -> np.ndarray:
    """A frame whose every pixel holds ``value``, so stacks can be read back as ids."""
    return np.full((SIZE, SIZE, 3), value, np.uint8)


def fill(buffer: ReplayBuffer, episodes: list[list[int]], terminal_last: list[bool]) -> None:
    """Episodes given as frame ids; the action and reward of each step are the id of the frame it reached."""
    for ids, terminated in zip(episodes, terminal_last):
        buffer.add_first(frame(ids[0]))
        for i, value in enumerate(ids[1:], start=1):
            buffer.add(np.array([value], np.float32), float(value), frame(value), terminated and i == len(ids) - 1)


def ids(stack: np.ndarray, frame_stack: int) -> list[int]:
    """The frame ids of one ``(3*S, H, W)`` stack, oldest first."""
    return [int(stack[3 * k, 0, 0]) for k in range(frame_stack)]


def test_stacks_repeat_first_frame_and_never_cross_episodes():
    episodes = [[1, 2, 3], [11, 12, 13, 14, 15], [21, 22]]
    buffer = ReplayBuffer(capacity=100, obs_shape=(SIZE, SIZE, 3), action_shape=(1,), frame_stack=3)
    fill(buffer, episodes, terminal_last=[True, False, False])
    batch = buffer.sample(400, np.random.default_rng(0))
    assert batch["obs"].shape == batch["next_obs"].shape == (400, 9, SIZE, SIZE)
    assert batch["obs"].dtype == np.uint8

    expected = {}
    for episode, terminated in zip(episodes, [True, False, False]):
        for p in range(len(episode) - 1):
            obs = [episode[max(0, p - k)] for k in (2, 1, 0)]
            nxt = [episode[max(0, p + 1 - k)] for k in (2, 1, 0)]
            discount = 0.0 if terminated and p + 1 == len(episode) - 1 else 1.0
            expected[episode[p]] = (obs, nxt, episode[p + 1], discount)
    seen = set()
    for i in range(400):
        obs = ids(batch["obs"][i], 3)
        obs_ids, next_ids, step_id, discount = expected[obs[-1]]  # KeyError: a transition from a last frame
        assert obs == obs_ids and ids(batch["next_obs"][i], 3) == next_ids
        assert batch["action"][i, 0] == batch["reward"][i] == step_id
        assert batch["discount"][i] == discount
        seen.add(obs[-1])
    assert seen == set(expected)  # every transition is drawn, none is missing

    stack = ObservationStack(3)
    assert ids(stack.reset(frame(11)), 3) == [11, 11, 11]
    assert ids(stack.push(frame(12)), 3) == [11, 11, 12]
    assert ids(stack.push(frame(13)), 3) == [11, 12, 13] == expected[13][0]


def test_each_frame_is_stored_once():
    capacity = 50
    buffer = ReplayBuffer(capacity, (SIZE, SIZE, 3), (1,), frame_stack=4)
    frame_bytes = SIZE * SIZE * 3
    # One uint8 frame per slot plus a few bytes of step data: not obs and next_obs, not stacks of 4.
    assert capacity * frame_bytes < buffer.nbytes < capacity * (frame_bytes + 64)
    fill(buffer, [list(range(1, 31))], terminal_last=[False])
    assert len(buffer) == 30 and buffer.total_frames == 30


def test_overwrites_oldest_and_keeps_stacks_complete():
    buffer = ReplayBuffer(capacity=6, obs_shape=(SIZE, SIZE, 3), action_shape=(1,), frame_stack=3)
    fill(buffer, [list(range(1, 13))], terminal_last=[False])  # 12 frames, only 7..12 remain
    assert len(buffer) == 6 and buffer.total_frames == 12
    batch = buffer.sample(200, np.random.default_rng(1))
    for i in range(200):
        obs, nxt = ids(batch["obs"][i], 3), ids(batch["next_obs"][i], 3)
        assert min(obs) >= 7  # never an overwritten frame
        assert obs == list(range(obs[0], obs[0] + 3)) and nxt == [v + 1 for v in obs]
    assert {ids(o, 3)[-1] for o in batch["obs"]} == {9, 10, 11}


def test_save_load_round_trip(tmp_path):
    buffer = ReplayBuffer(capacity=20, obs_shape=(SIZE, SIZE, 3), action_shape=(1,), frame_stack=2)
    fill(buffer, [[1, 2, 3, 4], [5, 6, 7]], terminal_last=[True, False])
    path = buffer.save(tmp_path / "replay.npz")
    restored = ReplayBuffer(capacity=20, obs_shape=(SIZE, SIZE, 3), action_shape=(1,), frame_stack=2)
    restored.load(path)
    a, b = buffer.sample(32, np.random.default_rng(3)), restored.sample(32, np.random.default_rng(3))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    # The open episode continues after loading.
    restored.add(np.array([8.0], np.float32), 8.0, frame(8), False)
    assert restored.total_frames == 8

    with pytest.raises(ValueError, match="capacity 20"):
        ReplayBuffer(capacity=30, obs_shape=(SIZE, SIZE, 3), action_shape=(1,), frame_stack=2).load(path)
    with pytest.raises(ValueError, match="obs has shape"):
        ReplayBuffer(capacity=20, obs_shape=(4, 4, 3), action_shape=(1,), frame_stack=2).load(path)


def test_bad_input_is_named():
    buffer = ReplayBuffer(capacity=10, obs_shape=(SIZE, SIZE, 3), action_shape=(1,), frame_stack=3)
    with pytest.raises(ValueError, match="no complete transition"):
        buffer.sample(4, np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="add_first"):
        buffer.add(np.zeros(1, np.float32), 0.0, frame(1), False)
    with pytest.raises(ValueError, match=r"uint8 \(8, 8, 3\)"):
        buffer.add_first(np.zeros((SIZE, SIZE, 3), np.float32))
    with pytest.raises(ValueError, match=r"uint8 \(8, 8, 3\)"):
        buffer.add_first(np.zeros((3, SIZE, SIZE), np.uint8))
    buffer.add_first(frame(1))
    with pytest.raises(ValueError, match="action has shape"):
        buffer.add(np.zeros(2, np.float32), 0.0, frame(2), False)
    with pytest.raises(ValueError, match="observations must be"):
        ReplayBuffer(capacity=10, obs_shape=(SIZE, SIZE), action_shape=(1,))
    with pytest.raises(ValueError, match="observations must be"):
        ObservationStack(2).reset(np.zeros((SIZE, SIZE), np.uint8))
    states = ObservationStack(2)
    states.reset(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="state must be a float vector"):
        states.push(np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="state must be a float vector"):
        states.push(np.zeros(5, np.float32))


@pytest.mark.parametrize("capacity", [100, 9])  # 9: the oldest episode is partly overwritten
def test_n_step_returns_match_a_brute_force_reference(capacity):
    """State vectors name themselves (episode, index); rewards are distinct powers of ten, so any
    wrongly included, dropped or undiscounted step changes the sum."""
    gamma, n_step, stack = 0.9, 3, 2
    lengths, terminated = [5, 4, 2], [True, False, True]  # steps per episode; the second is cut by a time limit
    buffer = ReplayBuffer(capacity=capacity, obs_shape=(2,), action_shape=(1,), frame_stack=stack)

    def reward(episode: int, index: int) -> float:  # of the step that reached observation ``index``
        return float(10 ** (index - 1)) * (episode + 1)

    for episode, (length, ends) in enumerate(zip(lengths, terminated)):
        buffer.add_first(np.array([episode, 0], np.float32))
        for index in range(1, length + 1):
            state = np.array([episode, index], np.float32)
            buffer.add(np.array([index], np.float32), reward(episode, index), state, ends and index == length)

    batch = buffer.sample(400, np.random.default_rng(0), n_step=n_step, gamma=gamma)
    seen = set()
    for obs, action, got_reward, discount, next_obs in zip(*(batch[k] for k in
                                                             ("obs", "action", "reward", "discount", "next_obs"))):
        episode, index = int(obs[-2]), int(obs[-1])
        length = lengths[episode]
        steps = min(n_step, length - index)
        expected = sum(gamma**k * reward(episode, index + 1 + k) for k in range(steps))
        assert got_reward == pytest.approx(expected, rel=1e-6)
        ends = terminated[episode] and index + steps == length
        assert discount == pytest.approx(0.0 if ends else gamma**steps)
        assert action[0] == index + 1
        assert next_obs.tolist() == [episode, max(index + steps - 1, 0), episode, index + steps]
        assert obs.tolist() == [episode, max(index - 1, 0), episode, index]
        seen.add((episode, index))
    stored = range(sum(lengths) + len(lengths) - len(buffer), sum(lengths) + len(lengths))
    flat = [(e, i) for e, length in enumerate(lengths) for i in range(length + 1)]
    expected_starts = {flat[g] for g in stored if flat[g][1] < lengths[flat[g][0]]
                       and (flat[g][1] == 0 or g - 1 >= stored[0])}  # successor and whole stack still stored
    assert seen == expected_starts


def test_state_vectors_round_trip(tmp_path):
    buffer = ReplayBuffer(capacity=10, obs_shape=(3,), action_shape=(1,), frame_stack=1)
    buffer.add_first(np.array([0.5, -1.0, 2.0], np.float32))
    buffer.add(np.zeros(1, np.float32), 1.0, np.array([1.5, 0.25, -3.0], np.float64), False)
    assert buffer.nbytes < 10 * 3 * 4 + 10 * 64  # float32 storage, no stacked copies
    path = buffer.save(tmp_path / "replay.npz")
    restored = ReplayBuffer(capacity=10, obs_shape=(3,), action_shape=(1,), frame_stack=1)
    restored.load(path)
    batch = restored.sample(2, np.random.default_rng(0))
    assert batch["obs"].dtype == np.float32 and batch["obs"].tolist() == [[0.5, -1.0, 2.0]] * 2
    assert batch["next_obs"].tolist() == [[1.5, 0.25, -3.0]] * 2

from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.actor_critic import ActorCritic, ActorCriticConfig, FrameStacks, lambda_returns

RED, BLUE = np.array([255, 0, 0], np.uint8), np.array([0, 0, 255], np.uint8)


class ColourCue(gym.Env):
    """Each frame is red or blue at random; the rewarded action depends on the colour just seen."""

    def __init__(self, continuous: bool = False, length: int = 8) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32) if continuous else gym.spaces.Discrete(2)
        self.continuous, self.length = continuous, length

    def _frame(self) -> np.ndarray:
        self.red = bool(self.np_random.integers(2))
        return np.broadcast_to(RED if self.red else BLUE, (16, 16, 3)).copy()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._frame(), {}

    def step(self, action):
        if self.continuous:
            reward = -abs(float(action[0]) - (0.5 if self.red else -0.5))
        else:
            reward = float(int(action) == (0 if self.red else 1))
        self.t += 1
        return self._frame(), reward, False, self.t >= self.length, {}


def _vector(continuous: bool = False, n: int = 8) -> gym.vector.SyncVectorEnv:
    return gym.vector.SyncVectorEnv([lambda: ColourCue(continuous) for _ in range(n)])


def test_lambda_returns_hand_computed():
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[10.0], [20.0], [30.0], [40.0]])
    none = torch.zeros(3, 1, dtype=torch.bool)
    one_step = lambda_returns(rewards, values, none, none, discount=0.5, lam=0.0)
    torch.testing.assert_close(one_step, torch.tensor([[11.0], [17.0], [23.0]]))
    monte_carlo = lambda_returns(rewards, values, none, none, discount=0.5, lam=1.0)
    torch.testing.assert_close(monte_carlo, torch.tensor([[1 + 0.5 * (2 + 0.5 * (3 + 0.5 * 40))], [2 + 0.5 * (3 + 0.5 * 40)], [23.0]]))
    terminated = torch.tensor([[False], [True], [False]])
    truncated = torch.tensor([[True], [False], [False]])
    ended = lambda_returns(rewards, values, terminated, none, discount=0.5, lam=1.0)
    assert ended[1, 0] == 2.0 and ended[0, 0] == 1 + 0.5 * 2  # nothing after a termination
    cut = lambda_returns(rewards, values, none, truncated, discount=0.5, lam=1.0)
    assert cut[0, 0] == 1 + 0.5 * 20  # a truncation bootstraps from its last frame's value


def test_frame_stacks_start_afresh_with_each_episode():
    stacks = FrameStacks(3)
    frames = lambda v: np.full((2, 4, 4, 3), v, np.uint8)
    first = stacks.reset(frames(1))
    assert first.shape == (2, 9, 4, 4) and (first == 1).all()
    second = stacks.push(frames(2), np.array([False, True]))
    assert second[0, :, 0, 0].tolist() == [1, 1, 1, 1, 1, 1, 2, 2, 2]
    assert (second[1] == 2).all()
    with pytest.raises(ValueError, match="uint8 frames"):
        stacks.push(np.zeros((2, 4, 4, 3), np.float64), np.zeros(2, bool))
    codes = FrameStacks(2)
    assert codes.reset(np.zeros((2, 4, 4, 5), np.float32)).shape == (2, 10, 4, 4)
    pushed = codes.push(np.ones((2, 4, 4, 5), np.float32), np.array([False, True]))
    assert pushed[0, :, 0, 0].tolist() == [0] * 5 + [1] * 5 and (pushed[1] == 1).all()


class CodeCue(ColourCue):
    """ColourCue seen as a grid of code vectors: all +1 for red, all -1 for blue."""

    def __init__(self) -> None:
        super().__init__()
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2, 2, 5), np.float32)

    def _frame(self) -> np.ndarray:
        self.red = bool(self.np_random.integers(2))
        return np.full((2, 2, 5), 1.0 if self.red else -1.0, np.float32)


def test_learns_to_act_on_code_vectors():
    torch.manual_seed(0)
    env = gym.vector.SyncVectorEnv([CodeCue for _ in range(8)])
    config = ActorCriticConfig(horizon=8, frame_stack=2, lr=1e-3, feature_dim=32, hidden_dim=32, discount=0.9,
                               epochs=1, minibatches=1)  # REINFORCE learns this in a few dozen rollouts
    agent = ActorCritic(env.single_observation_space, env.single_action_space, config)
    assert isinstance(agent.net.encoder, torch.nn.Flatten)  # no conv encoder on a 2x2 grid
    first = agent.update(agent.rollout(env, seed=0))
    for _ in range(150):
        metrics = agent.update(agent.rollout(env))
    assert first["reward"] < 0.7 and metrics["reward"] > 0.9


def test_rollout_masks_reset_steps_and_keeps_shapes():
    agent = ActorCritic(gym.spaces.Box(0, 255, (16, 16, 3), np.uint8), gym.spaces.Discrete(2), ActorCriticConfig(horizon=10, frame_stack=2))
    batch = agent.rollout(_vector(n=3), seed=0)
    assert batch["obs"].shape == (10, 3, 6, 16, 16) and batch["obs"].dtype == torch.uint8
    assert batch["action"].shape == batch["reward"].shape == (10, 3)
    # episodes of 8 steps: step 8 truncates, step 9 is the reset step, masked out
    assert batch["truncated"][7].all() and not batch["valid"][8].any() and batch["valid"][[0, 7, 9]].all()
    assert (batch["reward"][8] == 0).all()


@pytest.mark.parametrize("continuous", [False, True])
def test_learns_to_act_on_what_it_sees(continuous):
    torch.manual_seed(0)
    env = _vector(continuous)
    config = ActorCriticConfig(horizon=8, frame_stack=1, lr=1e-3, feature_dim=32, hidden_dim=32, discount=0.9,
                               epochs=1, minibatches=1)
    agent = ActorCritic(env.single_observation_space, env.single_action_space, config)
    first = agent.update(agent.rollout(env, seed=0))
    for _ in range(150):
        metrics = agent.update(agent.rollout(env))
    if continuous:  # a random action in [-1, 1] misses its target by 0.625 on average
        assert first["reward"] < -0.4 and metrics["reward"] > -0.2
    else:  # chance is 0.5
        assert first["reward"] < 0.7 and metrics["reward"] > 0.9
    red = np.broadcast_to(RED, (1, 16, 16, 3)).transpose(0, 3, 1, 2).copy()
    greedy = agent.act(red, sample=False)
    assert (greedy[0] == 0) if not continuous else abs(greedy[0, 0] - 0.5) < 0.2


def test_state_round_trip_and_bad_spaces():
    space = gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
    agent = ActorCritic(space, gym.spaces.Discrete(2), ActorCriticConfig(feature_dim=16, hidden_dim=16))
    agent.update(agent.rollout(_vector(n=2), seed=0))
    other = ActorCritic(space, gym.spaces.Discrete(2), ActorCriticConfig(feature_dim=16, hidden_dim=16))
    other.load_state_tensors(agent.state_tensors())
    stacks = np.random.default_rng(0).integers(0, 256, (4, 9, 16, 16), dtype=np.uint8)
    np.testing.assert_array_equal(agent.act(stacks, sample=False), other.act(stacks, sample=False))
    for key in ("return_scale", "return_mean", "return_var"):
        assert getattr(other, key) == getattr(agent, key) != 0
    weights_only = {key: value for key, value in agent.state_tensors().items() if key != "return_mean"}
    with pytest.raises(ValueError, match="return_mean"):
        other.load_state_tensors(weights_only)
    with pytest.raises(ValueError, match="pixel observations"):
        ActorCritic(gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2))
    with pytest.raises(ValueError, match="horizon"):
        ActorCriticConfig(horizon=0)


CUE_SPACE = gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
CUE_CONFIG = ActorCriticConfig(horizon=8, frame_stack=1, lr=1e-3, feature_dim=32, hidden_dim=32, discount=0.9)


def _learn_cue(config: ActorCriticConfig, rollouts: int) -> tuple[ActorCritic, list[dict[str, float]]]:
    """A fresh learner (seed 0) after ``rollouts`` updates on the discrete colour cue; each update's metrics."""
    torch.manual_seed(0)
    env = _vector()
    learner = ActorCritic(CUE_SPACE, gym.spaces.Discrete(2), config)
    return learner, [learner.update(learner.rollout(env, seed=0 if i == 0 else None)) for i in range(rollouts)]


def test_more_epochs_learn_from_fewer_rollouts():
    _, once = _learn_cue(replace(CUE_CONFIG, epochs=1, minibatches=1), rollouts=31)
    assert once[0]["clip_fraction"] == 0.0  # one step on the rollout's own policy: every ratio is 1, plain REINFORCE
    _, repeated = _learn_cue(replace(CUE_CONFIG, epochs=4, minibatches=1), rollouts=31)
    assert repeated[-1]["reward"] > 0.9 > once[-1]["reward"]
    torch.manual_seed(0)
    eager = ActorCritic(CUE_SPACE, gym.spaces.Discrete(2), replace(CUE_CONFIG, epochs=30, minibatches=1, lr=1e-2))
    assert eager.update(eager.rollout(_vector(), seed=0))["clip_fraction"] > 0  # 30 big steps leave the clip range
    with pytest.raises(ValueError, match="epochs"):
        ActorCriticConfig(epochs=0)
    with pytest.raises(ValueError, match="minibatches"):
        ActorCriticConfig(minibatches=0)


def test_minibatches_split_each_epoch_into_gradient_steps():
    one_rollout, _ = _learn_cue(replace(CUE_CONFIG, epochs=3, minibatches=4), rollouts=1)
    assert {int(state["step"]) for state in one_rollout.optimizer.state.values()} == {12}  # 3 epochs x 4 steps
    _, split = _learn_cue(replace(CUE_CONFIG, epochs=3, minibatches=4), rollouts=12)
    _, whole = _learn_cue(replace(CUE_CONFIG, epochs=3, minibatches=1), rollouts=12)
    assert split[-1]["reward"] > 0.9 > whole[-1]["reward"]  # the same rollouts, four times the gradient steps


class LargeReturnCue(ColourCue):
    """One-step episodes paying 1520 after a red frame and 1480 after a blue one, whatever the action."""

    def step(self, action):
        reward = 1500.0 + (20.0 if self.red else -20.0)
        return self._frame(), reward, True, False, {}


def test_critic_resolves_small_differences_between_large_returns():
    """Returns of about 1500 differing by 40: the critic's estimates (in return units) come within 4 of each."""
    torch.manual_seed(0)
    env = gym.vector.SyncVectorEnv([LargeReturnCue for _ in range(8)])
    agent = ActorCritic(CUE_SPACE, gym.spaces.Discrete(2), replace(CUE_CONFIG, epochs=4, minibatches=1))
    for i in range(60):
        agent.update(agent.rollout(env, seed=0 if i == 0 else None))
    red, blue = (np.broadcast_to(colour, (1, 16, 16, 3)).transpose(0, 3, 1, 2).copy() for colour in (RED, BLUE))
    with torch.no_grad():
        values = [agent._unstandardise(agent.net(torch.as_tensor(cue))[1]).item() for cue in (red, blue)]
    np.testing.assert_allclose(values, [1520.0, 1480.0], atol=4.0)

"""An on-policy actor-critic for gymnasium vector envs: lambda-returns, entropy bonus, return normalisation.

The learner that IRIS (Micheli et al., 2023) and DreamerV3 (Hafner et al., 2023) run in
imagination, written against gymnasium's ``VectorEnv`` alone: it trains unchanged on a real
vector env or on :class:`envs.world_model.WorldModelVectorEnv`. Each :meth:`ActorCritic.rollout`
steps the env ``horizon`` times with the current policy (the env carries on from where the
last rollout left it, so an imagined env with ``horizon`` truncation restarts from real
contexts); :meth:`ActorCritic.update` then fits the critic to lambda-returns and the actor by
REINFORCE on the advantages, scaled by DreamerV3's return range (an EMA of the 5th-95th
percentile spread, at least 1), with an entropy bonus. The critic regresses returns standardised by
their running mean and std, as PPO implementations normalise values: returns of about 1500 that differ by
20 are then targets 1 apart, where DreamerV3's symlog puts them 0.01 apart (DreamerV3 regresses symlog with
two-hot bins; with a squared error on symlog this learner stopped at about 600 on real cartpole-balance,
docs/results/world-model.md). Where rollouts are dear (an imagined step costs a
transformer pass per code) ``epochs`` passes over each, in ``minibatches`` shuffled gradient steps per pass,
as PPO does: the actor's objective is then PPO's clipped probability ratio (Schulman et al., 2017), which
keeps the reused rollout's policy close; with one pass of one minibatch the ratio is 1 and it is plain
REINFORCE.

Observations are pixel frames, or a tokenizer's code vectors (float ``(h, w, D)`` grids, as
:class:`envs.world_model.WorldModelVectorEnv` gives with ``observations="codes"``: flattened into
the trunk, with no conv encoder), stacked ``frame_stack`` deep per sub-env (the stack starts
afresh at each episode's first frame). Gymnasium's next-step autoreset makes the step after
an episode's end a reset step whose action does nothing: it is masked out of the losses.
Discrete actions are a categorical policy; continuous ones a Gaussian whose mean is squashed
into the action box and whose std is bounded (DreamerV3's bounds, 0.1 to 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from agents.common import ConvEncoder, load_state_tensors, mlp, state_tensors, to_box, trunk

ROLLOUT_KEYS = ("obs", "action", "reward", "terminated", "truncated", "valid")  # per step of a rollout
RETURN_STATISTICS = ("return_scale", "return_mean", "return_var")  # the agent's state beside its weights
RETURN_VAR_FLOOR = 1e-4  # a rollout of equal returns must not make the critic's targets infinite


@dataclass
class ActorCriticConfig:
    """Defaults follow IRIS's imagination learner (discount 0.995, lambda 0.95, entropy 0.001, horizon 20) but for
    the update: 10 passes of 4 minibatches over each rollout, not IRIS's one REINFORCE step, which on real
    cartpole-balance learnt nothing in 300 updates (docs/results/world-model.md). Discount 0.99 learnt balance
    sooner there but lost it again on 2 seeds of 3."""

    horizon: int = field(default=20, metadata={"help": "imagined steps per rollout"})
    discount: float = field(default=0.995, metadata={"help": "discount of the lambda-returns"})
    lam: float = field(default=0.95, metadata={"help": "lambda of the lambda-returns"})
    entropy_weight: float = field(default=1e-3, metadata={"help": "weight of the policy's entropy bonus"})
    lr: float = field(default=3e-4, metadata={"help": "actor-critic learning rate"})
    grad_clip: float = field(default=10.0, metadata={"help": "actor-critic gradient-norm clip"})
    frame_stack: int = field(default=3, metadata={"help": "frames the policy sees at once"})
    feature_dim: int = field(default=256, metadata={"help": "actor-critic feature size"})
    hidden_dim: int = field(default=256, metadata={"help": "actor-critic MLP width"})
    return_scale_decay: float = field(
        default=0.99, metadata={"help": "EMA decay of the return range that scales advantages"}
    )
    epochs: int = field(
        default=10, metadata={"help": (
            "passes over each rollout (above 1: PPO's clipped ratio keeps the policy near the one that collected"
            " it; 1 pass of 1 minibatch: plain REINFORCE)"
        )},
    )
    clip: float = field(
        default=0.2, metadata={"help": "PPO's clip range of the probability ratio (with epochs above 1)"}
    )
    minibatches: int = field(
        default=4, metadata={"help": "shuffled gradient steps per epoch, each on its share of the rollout's steps"}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.horizon, int) or self.horizon < 1:
            raise ValueError(f"horizon must be a positive int, got {self.horizon!r}")
        if not (0 < self.discount <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"need 0 < discount <= 1 and 0 <= lam <= 1, got {self.discount}, {self.lam}")
        if not isinstance(self.frame_stack, int) or self.frame_stack < 1:
            raise ValueError(f"frame_stack must be a positive int, got {self.frame_stack!r}")
        for name in ("epochs", "minibatches"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if not 0 < self.clip < 1:
            raise ValueError(f"clip must be in (0, 1), got {self.clip!r}")


class FrameStacks:
    """The last ``size`` observations ``(N, H, W, C)`` of each sub-env, channels first ``(N, C * size, H, W)``,
    oldest first: uint8 frames (``C = 3``) or float32 code vectors.

    A sub-env's stack is filled with its first observation whenever an episode starts.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.stacks: np.ndarray | None = None

    def reset(self, frames: np.ndarray) -> np.ndarray:
        frames = self._channels_first(frames)
        self.stacks = np.concatenate([frames] * self.size, axis=1)
        return self.stacks.copy()

    def push(self, frames: np.ndarray, starting: np.ndarray) -> np.ndarray:
        if self.stacks is None:
            raise RuntimeError("push() before reset()")
        frames = self._channels_first(frames)
        self.stacks = np.concatenate([self.stacks[:, frames.shape[1]:], frames], axis=1)
        self.stacks[starting] = np.concatenate([frames[starting]] * self.size, axis=1)
        return self.stacks.copy()

    @staticmethod
    def _channels_first(frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        pixels = frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3
        if not pixels and not (frames.dtype == np.float32 and frames.ndim == 4):
            raise ValueError(f"expected uint8 frames (N, H, W, 3) or float32 code vectors (N, h, w, D), got "
                             f"{frames.dtype} {frames.shape}")
        return frames.transpose(0, 3, 1, 2)


class StackingPolicy:
    """The actor-critic acting in one episode of a single env (a ``Policy`` for ``envs.collect.run_episode``):
    each observation joins the frame stack, started afresh at the episode's first, and the policy acts on the
    stack, sampling or taking its mode."""

    def __init__(self, agent: ActorCritic, sample: bool) -> None:
        self.agent, self.sample = agent, sample
        self.stacks = FrameStacks(agent.config.frame_stack)
        self.started = False

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        stacks = self.stacks.push(obs[None], np.zeros(1, bool)) if self.started else self.stacks.reset(obs[None])
        self.started = True
        return self.agent.act(stacks, sample=self.sample)[0]


class PolicyValueNet(nn.Module):
    """A shared encoder (convs on pixel stacks; code-vector stacks are flattened as they are), then a policy
    head and a value head (which predicts the return standardised by the agent's running statistics)."""

    def __init__(
        self, obs_shape: tuple[int, int, int], action_space: gym.Space, config: ActorCriticConfig, pixels: bool = True
    ) -> None:
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        out = int(action_space.n) if self.discrete else 2 * int(np.prod(action_space.shape))
        if pixels:
            self.encoder = ConvEncoder(obs_shape, (32, 64, 64, 64), (2, 2, 2, 1), padding=1)
            features = self.encoder.out_dim
        else:
            self.encoder, features = nn.Flatten(), int(np.prod(obs_shape))
        self.trunk = trunk(features, config.feature_dim)
        self.policy = mlp(config.feature_dim, config.hidden_dim, out)
        self.value = mlp(config.feature_dim, config.hidden_dim, 1)

    def forward(self, obs: Tensor) -> tuple[Distribution, Tensor]:
        h = self.trunk(self.encoder(obs))
        out = self.policy(h)
        if self.discrete:
            dist: Distribution = Categorical(logits=out)
        else:
            mean, std = out.chunk(2, dim=-1)
            dist = Independent(Normal(torch.tanh(mean), 0.1 + 0.9 * torch.sigmoid(std)), 1)
        return dist, self.value(h).squeeze(-1)


def lambda_returns(
    rewards: Tensor, values: Tensor, terminated: Tensor, truncated: Tensor, discount: float, lam: float
) -> Tensor:
    """TD(lambda) returns ``(T, N)`` from ``rewards, terminated, truncated (T, N)`` and ``values (T + 1, N)``.

    ``R_t = r_t + discount * (1 - terminated_t) * ((1 - lam') V_{t+1} + lam' R_{t+1})`` with
    ``lam' = lam * (1 - truncated_t)``: a truncated episode bootstraps from its last frame's value
    and does not look into the next episode; ``R_T = V_T``.
    """
    returns = torch.empty_like(rewards)
    following = values[-1]
    for t in reversed(range(rewards.shape[0])):
        keep = lam * (1 - truncated[t].float())
        following = rewards[t] + discount * (1 - terminated[t].float()) * ((1 - keep) * values[t + 1] + keep * following)
        returns[t] = following
    return returns


class ActorCritic:
    """Acts in and learns from a gymnasium ``VectorEnv`` of pixel frames or code vectors (see the module
    docstring)."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        config: ActorCriticConfig | None = None,
        device: str = "cpu",
    ) -> None:
        self.config = config or ActorCriticConfig()
        box = isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 3
        pixels = box and observation_space.dtype == np.uint8 and observation_space.shape[-1] == 3
        if not (pixels or (box and observation_space.dtype == np.float32)):
            raise ValueError(f"expected pixel observations (H, W, 3) uint8 or code vectors (h, w, D) float32, got "
                             f"{observation_space}")
        if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise ValueError(f"expected a Discrete or Box action space, got {action_space}")
        height, width, channels = observation_space.shape
        self.pixels = pixels  # else code vectors
        self.action_space = action_space
        self.device = torch.device(device)
        if isinstance(action_space, gym.spaces.Box):
            self.action_bounds = [torch.as_tensor(b, device=self.device) for b in (action_space.low, action_space.high)]
        self.net = PolicyValueNet(
            (channels * self.config.frame_stack, height, width), action_space, self.config, pixels
        ).to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.config.lr, eps=1e-5)
        self.return_scale = torch.ones((), device=self.device)
        self.return_mean = torch.zeros((), device=self.device)  # the critic's standardisation; variance 0: not yet
        self.return_var = torch.zeros((), device=self.device)
        self.stacks = FrameStacks(self.config.frame_stack)
        self.env_state: dict[str, np.ndarray] | None = None

    def act(self, stacks: np.ndarray, sample: bool = True) -> np.ndarray:
        """Actions for stacks ``(N, C * frame_stack, H, W)`` (of :class:`FrameStacks`): sampled, or the policy's
        mode."""
        with torch.no_grad():
            dist, _ = self.net(torch.as_tensor(stacks, device=self.device))
        if sample:
            action = dist.sample()
        else:
            action = dist.base_dist.mean if isinstance(dist, Independent) else dist.probs.argmax(-1)
        return self._to_env(action)

    def _to_env(self, action: Tensor) -> np.ndarray:
        if isinstance(self.action_space, gym.spaces.Discrete):
            return action.cpu().numpy().astype(np.int64)
        return to_box(action.clamp(-1, 1), *self.action_bounds)

    def rollout(self, env: VectorEnv, seed: int | None = None) -> dict[str, Tensor]:
        """Step ``env`` ``horizon`` times with the current policy; the first call (or a ``seed``) resets it.

        Returns ``(horizon, N, ...)`` tensors: ``obs`` (the stacks acted on), ``action``, ``reward``,
        ``terminated``, ``truncated``, ``valid`` (False on reset steps), and ``last_obs (N, ...)``.
        """
        if env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP) != AutoresetMode.NEXT_STEP:
            raise ValueError("ActorCritic needs a vector env with next-step autoreset (gymnasium's default)")
        if self.env_state is None or seed is not None:
            frames, _ = env.reset(seed=seed)
            self.env_state = {"obs": self.stacks.reset(frames), "starting": np.zeros(env.num_envs, bool)}
        obs, starting = self.env_state["obs"], self.env_state["starting"]
        steps: dict[str, list[Tensor]] = {key: [] for key in ROLLOUT_KEYS}
        for _ in range(self.config.horizon):
            with torch.no_grad():
                dist, _ = self.net(torch.as_tensor(obs, device=self.device))
                action = dist.sample()
            frames, reward, terminated, truncated, _ = env.step(self._to_env(action))
            for key, value in zip(ROLLOUT_KEYS, (obs, action, reward, terminated, truncated, ~starting)):
                steps[key].append(torch.as_tensor(value, device=self.device))
            obs = self.stacks.push(frames, starting)  # a reset step's frame starts its sub-env's stack afresh
            starting = np.asarray(terminated | truncated)  # so the next step is a reset step there
        self.env_state = {"obs": obs, "starting": starting}
        batch = {key: torch.stack(value) for key, value in steps.items()}
        batch["reward"] = batch["reward"].float()
        batch["last_obs"] = torch.as_tensor(obs, device=self.device)
        return batch

    def update(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """``epochs`` passes over a :meth:`rollout`, each in ``minibatches`` shuffled gradient steps, of actor and
        critic; returns the last step's losses and statistics, with ``clip_fraction``, the share of its steps whose
        probability ratio was clipped."""
        config = self.config
        horizon, n = batch["reward"].shape
        obs, action = batch["obs"].flatten(0, 1), batch["action"].flatten(0, 1)
        with torch.no_grad():  # the collecting policy's figures, fixed over the epochs
            dist, values = self.net(obs)
            collected_log_prob = dist.log_prob(action)
            last_value = self._unstandardise(self.net(batch["last_obs"])[1])
            all_values = torch.cat([self._unstandardise(values.view(horizon, n)), last_value[None]])
            returns = lambda_returns(
                batch["reward"], all_values, batch["terminated"], batch["truncated"], config.discount, config.lam
            )
            valid = batch["valid"]
            steps = valid.flatten().nonzero().squeeze(1)
            if not len(steps):  # every sub-env was resetting: nothing to learn from
                return {}
            self._track_returns(returns[valid])
            miss = returns - all_values[:-1]  # the critic's error, in return units
            advantage = (miss / self.return_scale.clamp(min=1.0)).flatten()
            target = ((returns - self.return_mean) / self.return_var.sqrt()).flatten()
        for _ in range(config.epochs):
            order = steps[torch.randperm(len(steps), device=self.device)] if config.minibatches > 1 else steps
            for part in order.tensor_split(min(config.minibatches, len(order))):
                dist, values = self.net(obs[part])
                ratio = (dist.log_prob(action[part]) - collected_log_prob[part]).exp()
                clipped = ratio.clamp(1 - config.clip, 1 + config.clip)
                entropy = dist.entropy().mean()
                surrogate = torch.min(ratio * advantage[part], clipped * advantage[part]).mean()
                actor_loss = -(surrogate + config.entropy_weight * entropy)
                critic_loss = (0.5 * (values - target[part]) ** 2).mean()
                self.optimizer.zero_grad(set_to_none=True)
                (actor_loss + critic_loss).backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), config.grad_clip)
                self.optimizer.step()
        return {
            "actor_loss": actor_loss.item(),
            "critic_loss": critic_loss.item(),
            "entropy": entropy.item(),
            "return": returns[valid].mean().item(),
            "reward": batch["reward"][valid].mean().item(),
            "return_scale": self.return_scale.item(),
            "value_error": miss[valid].abs().mean().item(),
            "grad_norm": grad_norm.item(),
            "clip_fraction": (ratio != clipped).float().mean().item(),
        }

    def _track_returns(self, returns: Tensor) -> None:
        """Move the return range (advantages' scale) and the return mean and variance (the critic's
        standardisation) towards this rollout's, EMAs started at the first rollout's."""
        decay = self.config.return_scale_decay
        spread = torch.quantile(returns, 0.95) - torch.quantile(returns, 0.05)
        self.return_scale = decay * self.return_scale + (1 - decay) * spread
        mean, var = returns.mean(), returns.var(unbiased=False).clamp(min=RETURN_VAR_FLOOR)
        if self.return_var == 0:
            self.return_mean, self.return_var = mean, var
        else:
            self.return_mean = decay * self.return_mean + (1 - decay) * mean
            self.return_var = decay * self.return_var + (1 - decay) * var

    def _unstandardise(self, value: Tensor) -> Tensor:
        """The critic's output in return units (0 before the first update)."""
        return value * self.return_var.sqrt() + self.return_mean

    def state_tensors(self) -> dict[str, Tensor]:
        """Weights, optimizer state, return scale and return statistics as one flat dict (a safetensors
        checkpoint)."""
        statistics = {key: getattr(self, key).cpu().clone() for key in RETURN_STATISTICS}
        return {**state_tensors(self.net, {"ac": self.optimizer}), **statistics}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Inverse of :meth:`state_tensors`; the optimizer state is optional (weights only for acting)."""
        tensors = dict(tensors)
        missing = [key for key in RETURN_STATISTICS if key not in tensors]
        if missing:
            raise ValueError(f"actor-critic checkpoint lacks {missing}: it predates the standardised critic; "
                             "train it again")
        for key in RETURN_STATISTICS:
            setattr(self, key, tensors.pop(key).to(self.device))
        load_state_tensors(self.net, {"ac": self.optimizer}, tensors, "actor-critic")

    def describe(self) -> dict[str, Any]:
        """The config, for a checkpoint's JSON."""
        return asdict(self.config)

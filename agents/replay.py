"""Replay buffer that stores every observation once: uint8 frames or float state vectors.

Stacks of the last ``S`` observations are assembled at sampling time from the single
stored ones, so ``obs`` and ``next_obs`` share memory instead of being kept twice (and
a stack of ``S`` frames costs one frame, not ``S``). A slot holds one observation plus
the step that produced it (action, reward, terminated); the transition from
observation ``g`` uses the step stored with ``g + 1``. Before an episode's first
observation the stack repeats it, so stacks never mix episodes. When full, the oldest
observations are overwritten. Batches can carry n-step returns (DrQ-v2 uses 3).
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np

from worldmodel.episodes import write_npz_atomic

_REJECTION_ROUNDS = 8


def stored_layout(obs_shape: tuple[int, ...]) -> tuple[tuple[int, ...], type]:
    """How an observation is stored and stacked: ``(H, W, 3)`` frames channels first as uint8,
    ``(D,)`` state vectors as float32; a stack concatenates along the first axis."""
    obs_shape = tuple(int(d) for d in obs_shape)
    if len(obs_shape) == 3 and obs_shape[2] == 3:
        return (3, obs_shape[0], obs_shape[1]), np.uint8
    if len(obs_shape) == 1:
        return obs_shape, np.float32
    raise ValueError(f"observations must be (H, W, 3) frames or (D,) state vectors, got shape {obs_shape}")


def _stored(obs: np.ndarray, obs_shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """One observation in its stored layout, or an error naming what is wrong with it."""
    obs = np.asarray(obs)
    if dtype == np.uint8:
        if obs.dtype != np.uint8 or obs.shape != obs_shape:
            raise ValueError(f"frame must be uint8 {obs_shape}, got {obs.dtype} {obs.shape}")
        return obs.transpose(2, 0, 1)
    if obs.shape != obs_shape or not np.issubdtype(obs.dtype, np.floating):
        raise ValueError(f"state must be a float vector of shape {obs_shape}, got {obs.dtype} {obs.shape}")
    return obs.astype(np.float32, copy=False)


class ReplayBuffer:
    """Circular store of episodes, filled step by step with :meth:`add_first` and :meth:`add`.

    ``obs_shape`` is the env's observation shape: ``(H, W, 3)`` uint8 frames or ``(D,)`` states.
    """

    def __init__(
        self, capacity: int, obs_shape: tuple[int, ...], action_shape: tuple[int, ...], frame_stack: int = 3
    ) -> None:
        if capacity < 2:
            raise ValueError(f"capacity must hold at least two observations, got {capacity}")
        if frame_stack < 1:
            raise ValueError(f"frame_stack must be >= 1, got {frame_stack}")
        self.capacity = capacity
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.stored_shape, self.obs_dtype = stored_layout(self.obs_shape)
        self.action_shape = tuple(action_shape)
        self.frame_stack = frame_stack
        self._obs = np.zeros((capacity, *self.stored_shape), self.obs_dtype)
        self._actions = np.zeros((capacity, *self.action_shape), np.float32)
        self._rewards = np.zeros(capacity, np.float32)
        self._terminated = np.zeros(capacity, bool)
        self._position = np.zeros(capacity, np.int64)  # index of the observation within its episode
        self._has_next = np.zeros(capacity, bool)  # its successor in the episode is stored
        self._total = 0  # observations ever written; observation g lives in slot g % capacity
        self._episode_open = False

    def __len__(self) -> int:
        """Observations currently stored."""
        return min(self._total, self.capacity)

    @property
    def total_frames(self) -> int:
        """Observations ever written, including overwritten ones."""
        return self._total

    @property
    def nbytes(self) -> int:
        """Memory held by the stored arrays."""
        arrays = (self._obs, self._actions, self._rewards, self._terminated, self._position, self._has_next)
        return sum(a.nbytes for a in arrays)

    def add_first(self, obs: np.ndarray) -> None:
        """Start an episode with its reset observation (ending any episode still open)."""
        self._write(_stored(obs, self.obs_shape, self.obs_dtype), np.zeros(self.action_shape, np.float32), 0.0, False, 0)
        self._episode_open = True

    def add(self, action: np.ndarray, reward: float, obs: np.ndarray, terminated: bool) -> None:
        """Append one env step: ``action`` taken after the previous observation led to ``obs`` and ``reward``.

        ``terminated`` means the task ended (no bootstrapping); a time-limit truncation is
        not a termination; the next :meth:`add_first` simply starts a new episode.
        """
        if not self._episode_open:
            raise RuntimeError("add() before add_first(): start each episode with its reset observation")
        action = np.asarray(action, np.float32)
        if action.shape != self.action_shape:
            raise ValueError(f"action has shape {action.shape}, the buffer stores actions of shape {self.action_shape}")
        stored = _stored(obs, self.obs_shape, self.obs_dtype)
        previous = (self._total - 1) % self.capacity
        position = int(self._position[previous]) + 1
        self._write(stored, action, float(reward), bool(terminated), position)
        self._has_next[previous] = True
        self._episode_open = not terminated

    def sample(
        self, batch_size: int, rng: np.random.Generator, n_step: int = 1, gamma: float = 1.0
    ) -> dict[str, np.ndarray]:
        """A batch of transitions, uniformly over those stored, with ``n_step`` returns.

        Returns ``obs`` and ``next_obs`` (stacks, oldest first: uint8 ``(B, 3*S, H, W)`` or
        float32 ``(B, S*D)``), ``action`` ``(B, *action_shape)`` (the first step's),
        ``reward`` ``(B,)``: the sum of ``gamma**k * r_{k+1}`` over the ``m <= n_step``
        steps stored before the episode ends, and ``discount`` ``(B,)``: ``gamma**m``, the
        factor on the value of ``next_obs`` (the observation ``m`` steps on), 0 where the
        episode terminated within those steps. The defaults give one-step transitions
        with ``discount`` 1 or 0.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if n_step < 1 or not 0.0 <= gamma <= 1.0:
            raise ValueError(f"need n_step >= 1 and 0 <= gamma <= 1, got {n_step} and {gamma}")
        first = self._sample_frames(batch_size, rng)
        reward = np.zeros(batch_size, np.float32)
        factor = np.ones(batch_size, np.float32)
        last = first.copy()  # the observation the bootstrap reads
        going = np.ones(batch_size, bool)
        for k in range(n_step):
            current = first + k
            if k:  # a further step exists: stored and in the same episode (a terminal one has no successor)
                going &= (current + 1 < self._total) & self._has_next[current % self.capacity]
            following = (current + 1) % self.capacity
            reward += np.where(going, factor * self._rewards[following], 0.0).astype(np.float32)
            factor = np.where(going, factor * gamma, factor).astype(np.float32)
            last = np.where(going, current + 1, last)
        discount = np.where(self._terminated[last % self.capacity], 0.0, factor).astype(np.float32)
        return {
            "obs": self._stacks(first),
            "action": self._actions[(first + 1) % self.capacity],
            "reward": reward,
            "discount": discount,
            "next_obs": self._stacks(last),
        }

    def save(self, path: str | Path) -> Path:
        """Write the stored part of the buffer to one ``.npz``, atomically."""
        n = len(self)
        arrays = {
            "obs": self._obs[:n],
            "actions": self._actions[:n],
            "rewards": self._rewards[:n],
            "terminated": self._terminated[:n],
            "position": self._position[:n],
            "has_next": self._has_next[:n],
            "counters": np.array([self._total, self.capacity, self.frame_stack, int(self._episode_open)], np.int64),
        }
        return write_npz_atomic(Path(path), arrays)

    def load(self, path: str | Path) -> None:
        """Replace the contents with a buffer written by :meth:`save`; it must have the same shapes."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no replay buffer at {path}")
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        missing = {"obs", "actions", "rewards", "terminated", "position", "has_next", "counters"} - set(arrays)
        if missing:
            raise ValueError(f"{path} is not a replay buffer: missing {sorted(missing)}")
        total, capacity, frame_stack, episode_open = (int(v) for v in arrays["counters"])
        if (capacity, frame_stack) != (self.capacity, self.frame_stack):
            raise ValueError(
                f"{path} holds a buffer of capacity {capacity} with frame_stack {frame_stack}, "
                f"this one has capacity {self.capacity} and frame_stack {self.frame_stack}"
            )
        n = min(total, capacity)
        expected = {"obs": (n, *self.stored_shape), "actions": (n, *self.action_shape)}
        for name, shape in expected.items():
            if arrays[name].shape != shape:
                raise ValueError(f"{path}: {name} has shape {arrays[name].shape}, this buffer expects {shape}")
        # Slots past ``n`` are never read before they are written again.
        self._obs[:n] = arrays["obs"]
        self._actions[:n] = arrays["actions"]
        self._rewards[:n] = arrays["rewards"]
        self._terminated[:n] = arrays["terminated"]
        self._position[:n] = arrays["position"]
        self._has_next[:n] = arrays["has_next"]
        self._total = total
        self._episode_open = bool(episode_open)

    def _stacks(self, last: np.ndarray) -> np.ndarray:
        """Stacks ending at observations ``last``, each clamped to its episode's first observation."""
        back = np.minimum(np.arange(self.frame_stack - 1, -1, -1)[None, :], self._position[last % self.capacity][:, None])
        window = self._obs[(last[:, None] - back) % self.capacity]  # (B, S, *stored_shape)
        return window.reshape(len(last), self.frame_stack * self.stored_shape[0], *self.stored_shape[1:])

    def _write(self, obs: np.ndarray, action: np.ndarray, reward: float, terminated: bool, position: int) -> None:
        slot = self._total % self.capacity
        self._obs[slot] = obs
        self._actions[slot] = action
        self._rewards[slot] = reward
        self._terminated[slot] = terminated
        self._position[slot] = position
        self._has_next[slot] = False
        self._total += 1

    def _valid(self, frames: np.ndarray) -> np.ndarray:
        """Which frame indices start a complete transition: successor and whole stack still stored."""
        slots = frames % self.capacity
        oldest = self._total - len(self)
        first_needed = frames - np.minimum(self.frame_stack - 1, self._position[slots])
        return self._has_next[slots] & (first_needed >= oldest)

    def _sample_frames(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """Indices of transitions' first frames, by rejection (few frames are invalid), else exactly."""
        oldest = self._total - len(self)
        chosen: list[np.ndarray] = []
        count = 0
        for _ in range(_REJECTION_ROUNDS):
            if count >= batch_size or len(self) == 0:
                break
            candidates = rng.integers(oldest, self._total, size=2 * batch_size)
            keep = candidates[self._valid(candidates)][: batch_size - count]
            chosen.append(keep)
            count += len(keep)
        if count < batch_size:
            valid = np.flatnonzero(self._valid(np.arange(oldest, self._total))) + oldest
            if len(valid) == 0:
                raise ValueError("the replay buffer holds no complete transition yet: add steps before sampling")
            chosen.append(rng.choice(valid, size=batch_size - count))
        return np.concatenate(chosen)


class ObservationStack:
    """The acting-side view of the buffer's stacks: the last ``size`` observations, concatenated.

    ``(3*size, H, W)`` uint8 for frames, ``(size*D,)`` float32 for states; oldest first,
    the reset observation repeated before the episode starts, exactly as
    :meth:`ReplayBuffer.sample` builds ``obs``.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"frame stack size must be >= 1, got {size}")
        self.size = size
        self._items: deque[np.ndarray] = deque(maxlen=size)
        self._layout: tuple[tuple[int, ...], type] | None = None

    def reset(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        self._layout = (obs.shape, stored_layout(obs.shape)[1])
        self._items.clear()
        self._items.extend([_stored(obs, *self._layout)] * self.size)
        return self.observation()

    def push(self, obs: np.ndarray) -> np.ndarray:
        if self._layout is None:
            raise RuntimeError("push() before reset(): start each episode with its reset observation")
        self._items.append(_stored(obs, *self._layout))
        return self.observation()

    def observation(self) -> np.ndarray:
        return np.concatenate(self._items, axis=0)

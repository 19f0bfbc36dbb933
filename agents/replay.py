"""Replay buffer for pixel observations that stores every frame once, as uint8.

Frame stacks are assembled at sampling time from the single stored frames, so
``obs`` and ``next_obs`` share memory instead of being kept twice (and a stack of
``S`` frames costs one frame, not ``S``). A slot holds one frame plus the step that
produced it (action, reward, terminated); the transition from frame ``g`` uses the
step stored with frame ``g + 1``. Before an episode's first frame the stack repeats
that first frame, so stacks never mix episodes. When full, the oldest frames are
overwritten.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np

from worldmodel.episodes import write_npz_atomic

_REJECTION_ROUNDS = 8


class ReplayBuffer:
    """Circular store of episodes, filled step by step with :meth:`add_first` and :meth:`add`."""

    def __init__(
        self, capacity: int, frame_shape: tuple[int, int, int], action_shape: tuple[int, ...], frame_stack: int = 3
    ) -> None:
        if capacity < 2:
            raise ValueError(f"capacity must hold at least two frames, got {capacity}")
        if frame_stack < 1:
            raise ValueError(f"frame_stack must be >= 1, got {frame_stack}")
        if len(frame_shape) != 3 or frame_shape[2] != 3:
            raise ValueError(f"frame_shape must be (H, W, 3), got {tuple(frame_shape)}")
        height, width, _ = frame_shape
        self.capacity = capacity
        self.frame_shape = (height, width, 3)
        self.action_shape = tuple(action_shape)
        self.frame_stack = frame_stack
        # Channels first, so a stack is a reshape of consecutive frames.
        self._frames = np.zeros((capacity, 3, height, width), np.uint8)
        self._actions = np.zeros((capacity, *self.action_shape), np.float32)
        self._rewards = np.zeros(capacity, np.float32)
        self._terminated = np.zeros(capacity, bool)
        self._position = np.zeros(capacity, np.int64)  # index of the frame within its episode
        self._has_next = np.zeros(capacity, bool)  # the frame's successor in the episode is stored
        self._total = 0  # frames ever written; frame g lives in slot g % capacity
        self._episode_open = False

    def __len__(self) -> int:
        """Frames currently stored."""
        return min(self._total, self.capacity)

    @property
    def total_frames(self) -> int:
        """Frames ever written, including overwritten ones."""
        return self._total

    @property
    def nbytes(self) -> int:
        """Memory held by the stored arrays."""
        arrays = (self._frames, self._actions, self._rewards, self._terminated, self._position, self._has_next)
        return sum(a.nbytes for a in arrays)

    def add_first(self, frame: np.ndarray) -> None:
        """Start an episode with its reset frame (ending any episode still open)."""
        self._write(self._check_frame(frame), np.zeros(self.action_shape, np.float32), 0.0, False, 0)
        self._episode_open = True

    def add(self, action: np.ndarray, reward: float, frame: np.ndarray, terminated: bool) -> None:
        """Append one env step: ``action`` taken after the previous frame led to ``frame`` and ``reward``.

        ``terminated`` means the task ended (no bootstrapping); a time-limit truncation is
        not a termination; the next :meth:`add_first` simply starts a new episode.
        """
        if not self._episode_open:
            raise RuntimeError("add() before add_first(): start each episode with its reset frame")
        action = np.asarray(action, np.float32)
        if action.shape != self.action_shape:
            raise ValueError(f"action has shape {action.shape}, the buffer stores actions of shape {self.action_shape}")
        frame = self._check_frame(frame)
        previous = (self._total - 1) % self.capacity
        position = int(self._position[previous]) + 1
        self._write(frame, action, float(reward), bool(terminated), position)
        self._has_next[previous] = True
        self._episode_open = not terminated

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """A batch of transitions, uniformly over those stored.

        Returns ``obs`` and ``next_obs`` uint8 ``(B, 3*S, H, W)`` (oldest frame first),
        ``action`` ``(B, *action_shape)``, ``reward`` ``(B,)`` and ``discount`` ``(B,)``:
        0 where the episode terminated, 1 otherwise (the agent applies its own gamma).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        frames = self._sample_frames(batch_size, rng)
        slots = frames % self.capacity
        next_slots = (frames + 1) % self.capacity
        # Frames g-S+1 .. g+1, each clamped to the episode's first frame.
        offsets = np.arange(self.frame_stack, -1, -1)
        back = np.minimum(offsets[None, :], self._position[slots][:, None] + 1)
        window = self._frames[(frames[:, None] + 1 - back) % self.capacity]  # (B, S+1, 3, H, W)
        height, width = self.frame_shape[:2]
        channels = 3 * self.frame_stack
        return {
            "obs": window[:, :-1].reshape(batch_size, channels, height, width),
            "action": self._actions[next_slots],
            "reward": self._rewards[next_slots],
            "discount": (~self._terminated[next_slots]).astype(np.float32),
            "next_obs": window[:, 1:].reshape(batch_size, channels, height, width),
        }

    def save(self, path: str | Path) -> Path:
        """Write the stored part of the buffer to one ``.npz``, atomically."""
        n = len(self)
        arrays = {
            "frames": self._frames[:n],
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
        missing = {"frames", "actions", "rewards", "terminated", "position", "has_next", "counters"} - set(arrays)
        if missing:
            raise ValueError(f"{path} is not a replay buffer: missing {sorted(missing)}")
        total, capacity, frame_stack, episode_open = (int(v) for v in arrays["counters"])
        if (capacity, frame_stack) != (self.capacity, self.frame_stack):
            raise ValueError(
                f"{path} holds a buffer of capacity {capacity} with frame_stack {frame_stack}, "
                f"this one has capacity {self.capacity} and frame_stack {self.frame_stack}"
            )
        n = min(total, capacity)
        expected = {"frames": (n, 3, *self.frame_shape[:2]), "actions": (n, *self.action_shape)}
        for name, shape in expected.items():
            if arrays[name].shape != shape:
                raise ValueError(f"{path}: {name} has shape {arrays[name].shape}, this buffer expects {shape}")
        # Slots past ``n`` are never read before they are written again.
        self._frames[:n] = arrays["frames"]
        self._actions[:n] = arrays["actions"]
        self._rewards[:n] = arrays["rewards"]
        self._terminated[:n] = arrays["terminated"]
        self._position[:n] = arrays["position"]
        self._has_next[:n] = arrays["has_next"]
        self._total = total
        self._episode_open = bool(episode_open)

    def _check_frame(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.shape != self.frame_shape:
            raise ValueError(f"frame must be uint8 {self.frame_shape}, got {frame.dtype} {frame.shape}")
        return frame.transpose(2, 0, 1)

    def _write(self, frame: np.ndarray, action: np.ndarray, reward: float, terminated: bool, position: int) -> None:
        slot = self._total % self.capacity
        self._frames[slot] = frame
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


class FrameStack:
    """The acting-side view of the buffer's stacks: the last ``size`` frames as ``(3*size, H, W)`` uint8.

    Oldest frame first, the reset frame repeated before the episode starts, exactly as
    :meth:`ReplayBuffer.sample` builds ``obs``.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"frame stack size must be >= 1, got {size}")
        self.size = size
        self._frames: deque[np.ndarray] = deque(maxlen=size)

    def reset(self, frame: np.ndarray) -> np.ndarray:
        self._frames.clear()
        self._frames.extend([self._channels_first(frame)] * self.size)
        return self.observation()

    def push(self, frame: np.ndarray) -> np.ndarray:
        if not self._frames:
            raise RuntimeError("push() before reset(): start each episode with its reset frame")
        self._frames.append(self._channels_first(frame))
        return self.observation()

    def observation(self) -> np.ndarray:
        return np.concatenate(self._frames, axis=0)

    @staticmethod
    def _channels_first(frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frames must be uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
        return frame.transpose(2, 0, 1)

"""Episodes at the rate of a tokenizer's code steps, for tokenizers whose codes stand for several frames.

A causal video tokenizer (:mod:`worldmodel.video_tokenizer`) turns ``1 + k n`` frames into ``1 + n`` code
steps: the first frame alone, then groups of ``k``. The transformer steps through code steps, so what
happens between two of them is ``k`` env actions taken as one: code step ``i`` is followed by the group
of frame actions ``k i .. k i + k - 1`` (action ``t`` is taken after frame ``t``), and their rewards
summed. A group of ``k`` discrete actions of ``N`` values is one discrete action of ``N ** k`` values
(the first action most significant); ``k`` box actions are concatenated. With ``k = 1`` all of it is
the identity.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def aligned_frames(frames: int, k: int) -> int:
    """The most frames of the form ``1 + k n`` in a clip of ``frames``: what a causal video tokenizer encodes."""
    if frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {frames}")
    return 1 + k * ((frames - 1) // k)


def code_rate_action_space(space: dict[str, Any] | None, k: int) -> dict[str, Any] | None:
    """The action space between code steps of ``k`` frames: ``k`` frame actions as one."""
    if space is None or k == 1:
        return space
    if space["type"] == "discrete":
        return {"type": "discrete", "n": int(space["n"]) ** k}
    return {**space, "shape": [k * int(np.prod(space["shape"]))]}


def group_actions(actions: np.ndarray, k: int, space: dict[str, Any] | None) -> np.ndarray:
    """Frame actions ``(..., T[, A])`` -> code-step actions ``(..., ceil(T / k)[, k A])``, as the module says.

    A last, incomplete group is filled with zeros: those actions follow the last frame the clip holds.
    Action-free actions ``(..., T, 0)`` give ``(..., ceil(T / k), 0)``.
    """
    actions = np.asarray(actions)
    if k == 1:
        return actions
    discrete = space is not None and space["type"] == "discrete"
    time_axis = actions.ndim - 1 if discrete else actions.ndim - 2
    frames = actions.shape[time_axis]
    groups = -(-frames // k)
    padding = [(0, 0)] * actions.ndim
    padding[time_axis] = (0, groups * k - frames)
    padded = np.pad(actions, padding)
    if not discrete:
        return padded.reshape(*actions.shape[:time_axis], groups, k * actions.shape[-1])
    n = int(space["n"])
    grouped = padded.reshape(*actions.shape[:time_axis], groups, k).astype(np.int64)
    combined = np.zeros(grouped.shape[:-1], np.int64)
    for j in range(k):
        combined = combined * n + grouped[..., j]
    return combined


def group_rewards(rewards: np.ndarray, k: int) -> np.ndarray:
    """Frame rewards ``(T,)`` -> code-step rewards ``(ceil(T / k),)``: each group's sum."""
    rewards = np.asarray(rewards)
    groups = -(-len(rewards) // k)
    return np.pad(rewards, (0, groups * k - len(rewards))).reshape(groups, k).sum(axis=1).astype(rewards.dtype)

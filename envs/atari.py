"""Atari games (ALE v5) as small square uint8 frames for video models and agents.

The score digits are blacked out by default: a video-model reward should not
learn to score frames by reading the scoreboard.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import ale_py
import gymnasium as gym
import numpy as np
from PIL import Image

gym.register_envs(ale_py)

NATIVE_HEIGHT = 210

# Rows [start, stop) of the native 210x160 frame that show score, lives or clock.
SCOREBOARD_ROWS: dict[str, tuple[tuple[int, int], ...]] = {
    "Pong": ((0, 24),),
    "Breakout": ((0, 17),),
    "Boxing": ((0, 25),),
    "Freeway": ((0, 14),),
    "MsPacman": ((172, 210),),
    "SpaceInvaders": ((0, 20),),
}


def atari_games() -> list[str]:
    """Names of the ALE games available to ``make_atari``."""
    return sorted(name[4:-3] for name in gym.registry if name.startswith("ALE/") and name.endswith("-v5"))


def scoreboard_mask(game: str, size: int = 64) -> np.ndarray:
    """Bool ``(size, size)`` mask of the pixels that show ``game``'s score after resizing.

    For :class:`envs.viper.ViperReward`'s ``score_mask`` when the agent's frames keep the score.
    """
    if game not in SCOREBOARD_ROWS:
        raise ValueError(f"no scoreboard rows known for {game!r}; known: {sorted(SCOREBOARD_ROWS)}")
    mask = np.zeros((size, size), bool)
    for start, stop in SCOREBOARD_ROWS[game]:
        mask[math.floor(start * size / NATIVE_HEIGHT) : math.ceil(stop * size / NATIVE_HEIGHT)] = True
    return mask


class AtariFrames(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Blacks out the given rows of each native frame, then area-resizes it to ``size``."""

    def __init__(self, env: gym.Env, size: int, masked_rows: tuple[tuple[int, int], ...]) -> None:
        # Recorded arguments let gymnasium rebuild the env from its spec.
        gym.utils.RecordConstructorArgs.__init__(self, size=size, masked_rows=masked_rows)
        gym.ObservationWrapper.__init__(self, env)
        self.size = size
        self.masked_rows = masked_rows
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        if self.masked_rows:
            observation = observation.copy()
            for start, stop in self.masked_rows:
                observation[start:stop] = 0
        image = Image.fromarray(observation).resize((self.size, self.size), Image.Resampling.BOX)
        return np.asarray(image, dtype=np.uint8)


def make_atari(
    game: str,
    size: int = 64,
    frame_skip: int = 4,
    sticky_prob: float = 0.25,
    mask_scoreboard: bool = True,
    max_episode_steps: int | None = None,
) -> gym.Env:
    """ALE ``game`` (e.g. "Pong") with ``(size, size, 3)`` uint8 observations.

    ``mask_scoreboard`` blacks out the rows listed in ``SCOREBOARD_ROWS``; a game
    without an entry there is left unmasked, with a warning.
    """
    games = atari_games()
    if game not in games:
        raise ValueError(f"unknown Atari game {game!r}; valid games: {', '.join(games)}")
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    kwargs: dict[str, Any] = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    env = gym.make(
        f"ALE/{game}-v5",
        frameskip=frame_skip,
        repeat_action_probability=sticky_prob,
        obs_type="rgb",
        **kwargs,
    )
    masked_rows: tuple[tuple[int, int], ...] = ()
    if mask_scoreboard:
        if game in SCOREBOARD_ROWS:
            masked_rows = SCOREBOARD_ROWS[game]
        else:
            warnings.warn(f"no scoreboard rows known for {game!r}; its frames are left unmasked", stacklevel=2)
    return AtariFrames(env, size, masked_rows)

"""Episodes tokenised once: the frame codes a video transformer trains on, cached on disk.

A cache mirrors a dataset: ``{cache}/{split}/<same relative path>.npz`` holds
``codes (T,h,w)`` plus the episode's ``actions`` (none if it is action-free, as in the
dataset), ``task_id``, ``terminated`` and ``rewards``, so
``EpisodeDataset(cache, frames_key="codes")`` samples clips from it exactly as from
the pixels. ``{cache}/cache.json`` records the fingerprint of the tokenizer's weights;
a cache is only ever extended by the tokenizer that made it. Episode files are
written atomically, so an interrupted build resumes where it stopped.

A tokenizer whose code steps stand for ``k > 1`` frames makes a cache at the codes' rate
(:mod:`worldmodel.code_rate`): each episode's first ``1 + k n`` frames become ``1 + n`` code
steps, ``k`` actions one action, their rewards one sum, and the cache's manifest says so
(``frame_skip`` times ``k``, the grouped action space).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from worldmodel.checkpoint import fingerprint, read_json, write_json_atomic
from worldmodel.code_rate import aligned_frames, code_rate_action_space, group_actions, group_rewards
from worldmodel.episodes import (
    DatasetManifest, action_arrays, episode_paths, is_action_free, read_episode, write_npz_atomic,
)
from worldmodel.tokenizer import Tokenizer

CACHE_FILE = "cache.json"
CODES_KEY = "codes"


class TokenCacheError(ValueError):
    """A token cache was made by another tokenizer, or is not a token cache."""


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """Identifies a tokenizer by its config and weights: equal fingerprints make equal codes."""
    config = json.dumps(tokenizer.config_dict(), sort_keys=True)
    return hashlib.sha256((config + fingerprint(tokenizer.state_dict())).encode()).hexdigest()


def default_cache_dir(data_root: str | Path, tokenizer_id: str) -> Path:
    """``{data_root}/token_cache/{fingerprint[:16]}``: one cache per tokenizer, next to the data."""
    return Path(data_root) / "token_cache" / tokenizer_id[:16]


def _codes_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.int32)


def build_token_cache(
    data_root: str | Path,
    tokenizer: Tokenizer,
    cache_dir: str | Path,
    splits: tuple[str, ...] = ("train", "test"),
    batch_size: int = 256,
) -> dict[str, Any]:
    """Encode every episode of ``splits`` not yet in ``cache_dir``; returns counts ``{"encoded", "reused"}``.

    Raises :class:`TokenCacheError` if ``cache_dir`` was made by a different tokenizer.
    """
    data_root, cache_dir = Path(data_root), Path(cache_dir)
    expected = {
        "fingerprint": tokenizer_fingerprint(tokenizer),
        "tokenizer_kind": tokenizer.kind,
        "tokenizer_config": tokenizer.config_dict(),
        "code_shape": list(tokenizer.code_shape),
        "vocab_size": tokenizer.vocab_size,
    }
    if (cache_dir / CACHE_FILE).exists():
        found = read_json(cache_dir / CACHE_FILE)
        if found.get("fingerprint") != expected["fingerprint"]:
            raise TokenCacheError(
                f"token cache {cache_dir} was made by tokenizer {str(found.get('fingerprint'))[:16]}, not by this "
                f"one ({expected['fingerprint'][:16]}); delete it or use another cache directory"
            )
    else:
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache_dir / CACHE_FILE, expected)
    manifest = DatasetManifest.load(data_root)
    k = tokenizer.frames_per_code_step
    if manifest is not None:
        replace(manifest, frame_skip=manifest.frame_skip * k, fps=manifest.fps / k,
                action_space=code_rate_action_space(manifest.action_space, k)).save(cache_dir)
    space = None if manifest is None else manifest.action_space
    counts = {"encoded": 0, "reused": 0}
    for split in splits:
        for path in tqdm(episode_paths(data_root, split), desc=f"tokenising {split}", unit="episode"):
            target = cache_dir / path.relative_to(data_root)
            if target.exists():
                counts["reused"] += 1
                continue
            episode = read_episode(path)
            frames = aligned_frames(len(episode), k)
            try:
                codes = tokenizer.encode(episode.video[:frames], batch_size=batch_size).cpu().numpy()
            except ValueError as err:
                raise ValueError(f"{path}: cannot tokenise this episode ({err})") from err
            if k > 1 and space is None and not is_action_free(episode.actions):
                raise ValueError(f"{path}: grouping actions by {k} needs the dataset's action space, and "
                                 f"{data_root} has no manifest.json")
            arrays = {
                CODES_KEY: codes.astype(_codes_dtype(tokenizer.vocab_size)),
                **action_arrays(group_actions(episode.actions[:frames], k, space)),
                "task_id": np.asarray(episode.task_id, dtype=np.int64),
                "terminated": np.asarray(episode.terminated and frames == len(episode)),
            }
            if episode.rewards is not None:
                arrays["rewards"] = group_rewards(episode.rewards[:frames], k)
            write_npz_atomic(target, arrays)
            counts["encoded"] += 1
    return counts

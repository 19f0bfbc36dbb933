"""Episode files and datasets: the on-disk contract between collection and training.

An episode is an ``.npz`` file with ``video (T,H,W,3) uint8`` and ``actions (T,)``
int or ``(T,A)`` float32 (action ``t`` is taken after frame ``t``), optional
``rewards (T,)`` (``rewards[t]`` follows action ``t``), ``task_id ()``, ``terminated ()``
bool (the last frame ends the episode by termination, not by a time limit: what a world
model's continue head learns) and ``poses (T,4)`` float32 (the agent's x, y, z and
heading per frame, where the env knows them: what consistency benchmarks need to find
the frames that show the same place). A dataset is ``{root}/{split}/**/*.npz`` plus an
optional ``{root}/manifest.json``; TECO's published ``{split}/{shard}/{i}.npz`` files
read as they are. Episodes are written uncompressed and atomically, so reads can
memory-map them: datasets larger than RAM work, and only touched frames are read.

**Action-free episodes** (footage: VIPER's reward needs no actions) have no ``actions``
array on disk and read as ``actions`` of shape ``(T, 0)`` float32 (:func:`no_actions`), so
clips, batches and token caches carry them like any others; ``write_episode`` takes
``actions=None`` (or such an empty array) for them. A dataset of them says so with
``action_space: null`` in its manifest, and models trained on it are action-free.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Iterator

import numpy as np

MANIFEST_FILE = "manifest.json"


class EpisodeFormatError(ValueError):
    """An episode file is missing, corrupt, truncated or inconsistent."""


@dataclass
class Episode:
    """One episode's arrays; ``video`` and friends may be read-only memory maps.

    ``actions`` of an action-free episode are ``(T, 0)`` float32 (see :func:`no_actions`).
    """

    video: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray | None = None
    task_id: int = 0
    path: Path | None = None
    poses: np.ndarray | None = None
    terminated: bool = False

    def __len__(self) -> int:
        return len(self.video)


@dataclass
class DatasetManifest:
    """Dataset-level facts: which env, which tasks, what actions, at what rate.

    ``action_space`` is ``{"type": "discrete", "n": N}`` or ``{"type": "box", "shape": [A], "low": ...,
    "high": ...}``, or ``None`` for an action-free dataset (footage: its episodes store no actions).
    ``frame_skip`` is env steps between consecutive frames.
    """

    env: str
    tasks: list[str]
    action_space: dict[str, Any] | None
    frame_skip: int = 1
    fps: float = 15.0
    episodes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def save(self, root: str | Path) -> None:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{MANIFEST_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        os.replace(tmp, root / MANIFEST_FILE)

    @classmethod
    def load(cls, root: str | Path) -> "DatasetManifest | None":
        path = Path(root) / MANIFEST_FILE
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as err:
            raise EpisodeFormatError(f"{path}: corrupt manifest ({err})") from err


def no_actions(length: int) -> np.ndarray:
    """The actions of an action-free episode of ``length`` frames: ``(T, 0)`` float32, stored as no array at all."""
    return np.zeros((length, 0), np.float32)


def is_action_free(actions: np.ndarray) -> bool:
    """Whether an episode's (or a clip's, ``(..., T, 0)``) actions are those of :func:`no_actions`."""
    return np.ndim(actions) >= 2 and np.shape(actions)[-1] == 0


def action_arrays(actions: np.ndarray) -> dict[str, np.ndarray]:
    """The ``actions`` entry of an episode file's arrays: none for action-free actions."""
    return {} if is_action_free(actions) else {"actions": actions}


def validate_episode(
    video: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray | None,
    source: str | Path,
    poses: np.ndarray | None = None,
) -> None:
    """Raise :class:`EpisodeFormatError` naming ``source`` if the arrays break the contract."""
    if video.dtype != np.uint8:
        raise EpisodeFormatError(f"{source}: video dtype is {video.dtype}, expected uint8")
    if video.ndim != 4 or video.shape[-1] != 3:
        raise EpisodeFormatError(f"{source}: video shape is {video.shape}, expected (T, H, W, 3)")
    if len(video) == 0:
        raise EpisodeFormatError(f"{source}: episode has no frames")
    if len(actions) != len(video):
        raise EpisodeFormatError(
            f"{source}: {len(video)} frames but {len(actions)} actions (expected one action per frame)"
        )
    if np.issubdtype(actions.dtype, np.integer):
        if actions.ndim != 1:
            raise EpisodeFormatError(f"{source}: discrete actions shape is {actions.shape}, expected (T,)")
    elif actions.dtype == np.float32:
        if actions.ndim != 2:
            raise EpisodeFormatError(f"{source}: continuous actions shape is {actions.shape}, expected (T, A)")
    else:
        raise EpisodeFormatError(f"{source}: actions dtype is {actions.dtype}, expected an integer type or float32")
    if rewards is not None and rewards.shape != (len(video),):
        raise EpisodeFormatError(f"{source}: rewards shape is {rewards.shape}, expected ({len(video)},)")
    if poses is not None and (poses.shape != (len(video), 4) or poses.dtype != np.float32):
        raise EpisodeFormatError(f"{source}: poses are {poses.dtype} {poses.shape}, expected float32 ({len(video)}, 4)")


def write_episode(
    path: str | Path,
    video: np.ndarray,
    actions: np.ndarray | None,
    rewards: np.ndarray | None = None,
    task_id: int = 0,
    poses: np.ndarray | None = None,
    terminated: bool = False,
) -> Path:
    """Validate and write one episode atomically (temporary file, then rename); ``actions=None``
    writes an action-free episode."""
    path = Path(path)
    actions = no_actions(len(video)) if actions is None else actions
    validate_episode(video, actions, rewards, path, poses)
    arrays = {
        "video": video,
        **action_arrays(actions),
        "task_id": np.asarray(task_id, dtype=np.int64),
        "terminated": np.asarray(terminated, dtype=bool),
    }
    if rewards is not None:
        arrays["rewards"] = np.asarray(rewards, dtype=np.float32)
    if poses is not None:
        arrays["poses"] = poses
    return write_npz_atomic(path, arrays)


def write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write an uncompressed (memory-mappable) ``.npz`` through a temporary file and a rename; a failed
    write leaves neither file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _memmap_npz(path: Path) -> dict[str, np.ndarray]:
    """Map each array of an npz file: memory maps for stored members, loaded arrays otherwise."""
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if info.compress_type != zipfile.ZIP_STORED:
                with archive.open(info) as member:
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
                continue
            raw.seek(info.header_offset)
            local_header = raw.read(30)
            if local_header[:4] != b"PK\x03\x04":
                raise EpisodeFormatError(f"{path}: corrupt zip entry {info.filename}")
            name_len = int.from_bytes(local_header[26:28], "little")
            extra_len = int.from_bytes(local_header[28:30], "little")
            raw.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(raw)
            if version not in ((1, 0), (2, 0)):
                raise EpisodeFormatError(f"{path}: unsupported .npy format version {version} in {name}")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(raw)
            if dtype.hasobject:
                raise EpisodeFormatError(f"{path}: {name} holds Python objects; refusing to unpickle")
            offset = raw.tell()
            if offset + int(np.prod(shape)) * dtype.itemsize > os.path.getsize(path):
                raise EpisodeFormatError(f"{path}: file is truncated inside {name}")
            if int(np.prod(shape)) == 0:
                arrays[name] = np.zeros(shape, dtype)
            else:
                order = "F" if fortran else "C"
                arrays[name] = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)
    return arrays


def read_episode(path: str | Path, frames_key: str = "video") -> Episode:
    """Open one episode file (memory-mapped where possible), naming the file in any error.

    ``frames_key`` names the per-frame array: ``video`` (uint8 pixels, fully validated)
    or another, e.g. the ``codes`` of a token cache, which need only one row per action.
    A file without ``actions`` is action-free: its actions read as :func:`no_actions`.
    """
    path = Path(path)
    if not path.is_file():
        raise EpisodeFormatError(f"{path}: no such episode file")
    try:
        arrays = _memmap_npz(path)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        if isinstance(err, EpisodeFormatError):
            raise
        raise EpisodeFormatError(f"{path}: corrupt or truncated episode file ({err})") from err
    if frames_key not in arrays:
        raise EpisodeFormatError(f"{path}: missing array '{frames_key}' (has {sorted(arrays)})")
    frames, rewards, poses = arrays[frames_key], arrays.get("rewards"), arrays.get("poses")
    actions = arrays["actions"] if "actions" in arrays else no_actions(len(frames))
    if frames_key == "video":
        validate_episode(frames, actions, rewards, path, poses)
    elif len(frames) != len(actions):
        raise EpisodeFormatError(f"{path}: {len(frames)} rows of {frames_key} but {len(actions)} actions")
    task_id = int(arrays["task_id"]) if "task_id" in arrays else 0
    terminated = bool(arrays["terminated"]) if "terminated" in arrays else False
    return Episode(frames, actions, rewards, task_id, path, poses, terminated)


def episode_paths(root: str | Path, split: str) -> list[Path]:
    """All episode files of a split, in a stable order."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"no split '{split}' under {root} (expected a folder {split_dir})")
    return sorted(split_dir.rglob("*.npz"))


class EpisodeDataset:
    """Clips of ``clip_length`` frames, ``frame_skip`` apart, from one split of a dataset.

    Episodes are opened lazily (memory-mapped, a bounded number kept open), so the
    dataset can exceed RAM. Item ``i`` is the ``i``-th valid clip start over all
    episodes; :meth:`sample` draws random clips. Items are dicts of numpy arrays:
    ``video (T,H,W,3) uint8``, ``actions`` (``(T, 0)`` for action-free episodes), ``task_id``,
    ``terminals (T,)`` bool (the frame ends its episode by termination) and, where the episodes
    have them, ``rewards (T,)`` float32, each the sum of the rewards between a clip frame and
    the next. With
    ``frames_key="codes"`` the dataset reads a token cache (``worldmodel.token_cache``) and
    items hold ``codes (T,h,w)``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        clip_length: int = 1,
        frame_skip: int = 1,
        max_open_episodes: int = 64,
        frames_key: str = "video",
    ) -> None:
        if clip_length < 1 or frame_skip < 1:
            raise ValueError(f"clip_length and frame_skip must be >= 1, got {clip_length}, {frame_skip}")
        self.root = Path(root)
        self.split = split
        self.clip_length = clip_length
        self.frame_skip = frame_skip
        self.frames_key = frames_key
        self.manifest = DatasetManifest.load(root)
        self.paths = episode_paths(root, split)
        if not self.paths:
            raise FileNotFoundError(f"no episode files (*.npz) under {self.root / split}")
        self._open = lru_cache(maxsize=max_open_episodes)(partial(read_episode, frames_key=frames_key))
        self.lengths = np.array([self._length(p) for p in self.paths])
        span = (clip_length - 1) * frame_skip + 1
        self.clips_per_episode = np.maximum(self.lengths - span + 1, 0)
        if self.clips_per_episode.sum() == 0:
            raise ValueError(
                f"no episode under {self.root / split} has the {span} frames a clip of "
                f"{clip_length} frames with frame skip {frame_skip} needs"
            )
        self._clip_offsets = np.concatenate([[0], np.cumsum(self.clips_per_episode)])

    def _length(self, path: Path) -> int:
        return len(self._open(path))

    def episode(self, index: int) -> Episode:
        return self._open(self.paths[index])

    def __len__(self) -> int:
        return int(self._clip_offsets[-1])

    def clip(self, episode_index: int, start: int) -> dict[str, np.ndarray]:
        episode = self.episode(episode_index)
        skip = self.frame_skip
        indices = start + skip * np.arange(self.clip_length)
        frames = slice(start, indices[-1] + 1, skip)
        item = {
            self.frames_key: np.asarray(episode.video[frames]),
            "actions": np.asarray(episode.actions[frames]),
            "task_id": np.asarray(episode.task_id, dtype=np.int64),
            "terminals": episode.terminated & (indices == len(episode) - 1),
        }
        if episode.rewards is not None:
            rewards = np.asarray(episode.rewards[start : indices[-1] + skip], np.float32)
            item["rewards"] = np.add.reduceat(rewards, np.arange(0, len(rewards), skip))[: self.clip_length]
        return item

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"clip index {index} out of range for {len(self)} clips")
        episode_index = int(np.searchsorted(self._clip_offsets, index, side="right") - 1)
        return self.clip(episode_index, index - int(self._clip_offsets[episode_index]))

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """A batch of uniformly random clips, stacked (``rewards`` only if every clip has them)."""
        items = [self[int(i)] for i in rng.integers(0, len(self), size=batch_size)]
        keys = set.intersection(*(set(item) for item in items))
        return {key: np.stack([item[key] for item in items]) for key in items[0] if key in keys}

    def sample_contexts(
        self, batch_size: int, rng: np.random.Generator, episode_start: bool = False
    ) -> dict[str, np.ndarray]:
        """Context clips to start imagined episodes from, whose last frame is uniform over every frame
        (with ``episode_start``, an episode's first frame, episodes drawn uniformly: where real episodes start).

        Unlike :meth:`sample`, a context may end at an episode's first frames: it then holds fewer
        than ``clip_length`` real frames, left-padded with copies of its first one, and ``lengths
        (B,)`` counts the real ones. (Where an episode's interesting states are its first few, as a
        balanced pole is under random play, clips of ``clip_length`` whole frames never show them.)
        Keys: ``video`` (or the ``frames_key``), ``actions``, ``task_id``, ``lengths``.
        """
        episode_ends = np.cumsum(self.lengths)
        if episode_start:
            ends = (episode_ends - self.lengths)[rng.integers(0, len(self.lengths), size=batch_size)]
        else:
            ends = rng.integers(0, self.lengths.sum(), size=batch_size)
        video, actions, task_ids, lengths = [], [], [], []
        for end in ends:
            episode_index = int(np.searchsorted(episode_ends, end, side="right"))
            last = int(end - (episode_ends[episode_index] - self.lengths[episode_index]))
            indices = last - self.frame_skip * np.arange(self.clip_length)[::-1]
            real = indices >= 0
            episode = self.episode(episode_index)
            picked = np.where(real, indices, indices[real][0])
            video.append(np.asarray(episode.video[picked]))
            actions.append(np.asarray(episode.actions[picked]))
            task_ids.append(episode.task_id)
            lengths.append(int(real.sum()))
        return {
            self.frames_key: np.stack(video), "actions": np.stack(actions),
            "task_id": np.asarray(task_ids, np.int64), "lengths": np.asarray(lengths, np.int64),
        }

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for index in range(len(self)):
            yield self[index]

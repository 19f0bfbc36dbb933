"""Footage into an action-free episode dataset (``wm import-videos``): what a VIPER reward learns from.

VIPER's reward needs expert videos and no actions, so a folder of recordings is enough. Each
input becomes one or more episodes of ``size x size`` frames (centre-cropped to a square, then
area-resized), at the rate asked for (every ``frame_skip``-th frame, or resampled to ``fps`` by
the input's own clock), written without actions (see :mod:`worldmodel.episodes`) into
``{out}/train`` or ``{out}/test``, next to a manifest that records where each episode came from.

Inputs, found recursively under one folder (or one file): video files (MP4, WebM, MOV, MKV,
AVI, ...: the ffmpeg that imageio-ffmpeg ships decodes them; GIFs Pillow, with their own frame
delays); folders of image frames (one folder is one episode, frames in natural order: frame2
before frame10); episode files (``.npz`` with a ``video``, e.g. TECO's ``{split}/{shard}/{i}.npz``:
only the video is kept; a dataset whose actions matter trains as it is, without importing).

An input's split is a hash of its name and the seed, so it stays put as inputs are added.
Rerunning resumes: episodes are written atomically and skipped when present, the manifest is
rewritten (atomically) after each finished input, and ``import.json`` holds the settings, which
a rerun into the same folder must repeat. An input too short for ``min_frames`` is skipped with
a warning that names it; an unreadable one stops the import with an error that names it and
leaves none of its episodes behind.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageSequence
from tqdm import tqdm

from experiments.presets import TOKENIZER_PRESETS
from worldmodel.checkpoint import read_json, write_json_atomic
from worldmodel.episodes import (
    MANIFEST_FILE,
    DatasetManifest,
    read_episode,
    write_episode,
)

VIDEO_SUFFIXES = (
    ".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".ogv", ".flv", ".wmv", ".ts", ".mts", ".3gp",
)
GIF_SUFFIX = ".gif"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
EPISODE_SUFFIX = ".npz"
SETTINGS_FILE = "import.json"
ENV = "videos"  # the manifest's env: footage, not an env the toolkit can step

Frames = Iterator[tuple[np.ndarray, float | None]]  # (H, W, 3) uint8 frames, each with its display time in seconds


class VideoImportError(ValueError):
    """An input cannot be imported (unreadable, inconsistent, unknown), or the output holds another import."""


@dataclass(frozen=True)
class ImportSettings:
    """How footage becomes episodes; a rerun into the same dataset must repeat them."""

    size: int = field(
        default=TOKENIZER_PRESETS["dmc"].image_size,
        metadata={"help": "frame side in pixels after a centre crop to a square (the dmc tokenizer's)"},
    )
    frame_skip: int = field(default=1, metadata={"help": "keep every n-th frame of each input"})
    fps: float | None = field(
        default=None,
        metadata={"help": "resample every input to this frame rate by its own timing (instead of --frame-skip)"},
    )
    source_fps: float | None = field(
        default=None,
        metadata={"help": "frame rate of inputs that record none (frame folders, .npz files), needed by --fps"},
    )
    min_frames: int = field(
        default=16,
        metadata={"help": "skip (with a warning naming it) an input, or drop a long one's last piece, shorter than "
                  "this many frames after resampling; the dmc preset trains on 16-frame clips"},
    )
    max_frames: int | None = field(
        default=None, metadata={"help": "cut longer inputs into consecutive episodes of at most this many frames"}
    )
    test_fraction: float = field(
        default=0.1,
        metadata={"help": "share of inputs held out in the test split (at least one input of two or more)"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the split (a hash of seed and input name)"})
    task: str | None = field(
        default=None, metadata={"help": "task name in the manifest; None takes the input folder's (or file's) name"}
    )
    policy: str = field(
        default="expert",
        metadata={"help": "policy label of the episodes (expert, random, ...), which wm eval-reward and eval-video "
                  "group by"},
    )
    env_steps_per_frame: int = field(
        default=1,
        metadata={"help": "env steps between two output frames, the manifest's frame_skip: a VIPER reward scores an "
                  "env's frames this far apart (2 for our DMC envs' own rate)"},
    )

    def __post_init__(self) -> None:
        if self.fps is not None and self.frame_skip != 1:
            raise ValueError("give --frame-skip or --fps, not both")
        positive = {"size": self.size, "frame_skip": self.frame_skip, "min_frames": self.min_frames,
                    "env_steps_per_frame": self.env_steps_per_frame, "fps": self.fps, "source_fps": self.source_fps}
        bad = [f"{name} = {value}" for name, value in positive.items() if value is not None and not value > 0]
        if bad:
            raise ValueError(f"must be positive: {', '.join(bad)}")
        if self.max_frames is not None and self.max_frames < self.min_frames:
            raise ValueError(f"max_frames ({self.max_frames}) must be at least min_frames ({self.min_frames})")
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")


@dataclass(frozen=True)
class Source:
    """One input: ``kind`` is video, gif, frames (a folder of images) or episode (an ``.npz``)."""

    path: Path
    name: str  # relative to the input root: names its episodes and goes into the manifest
    kind: str


def natural_key(name: str) -> list[int | str]:
    """Sort key that orders the digits in names as numbers: frame2 before frame10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    return {GIF_SUFFIX: "gif", EPISODE_SUFFIX: "episode"}.get(suffix)


def find_sources(root: Path, exclude: Path | None = None) -> list[Source]:
    """Every input under ``root`` (or ``root`` itself, a file), in natural order, leaving out ``exclude`` (the
    output folder) and hidden files; files of unknown type are skipped with a warning that names them."""
    known = ", ".join((*VIDEO_SUFFIXES, GIF_SUFFIX, EPISODE_SUFFIX, "a folder of " + "/".join(IMAGE_SUFFIXES)))
    if root.is_file():
        if _kind(root) is None:
            raise VideoImportError(f"{root}: unknown file type {root.suffix!r}; expected one of {known}")
        return [Source(root, root.name, _kind(root))]
    if not root.is_dir():
        raise VideoImportError(f"{root}: no such file or folder")
    if exclude is not None and (root.resolve() == exclude or exclude in root.resolve().parents):
        raise VideoImportError(f"{root}: the inputs cannot live inside the output folder {exclude}")
    sources, unknown = [], []
    for folder, subfolders, files in os.walk(root):
        folder = Path(folder)
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and (folder / d).resolve() != exclude]
        name = folder.relative_to(root).as_posix() if folder != root else root.name
        files = [f for f in files if not f.startswith(".")]
        if any(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in files):
            sources.append(Source(folder, name, "frames"))
        for file in files:
            path = folder / file
            if _kind(path) is not None:
                sources.append(Source(path, path.relative_to(root).as_posix(), _kind(path)))
            elif path.suffix.lower() not in IMAGE_SUFFIXES:
                unknown.append(path.relative_to(root).as_posix())
    if unknown:
        shown = ", ".join(sorted(unknown, key=natural_key)[:5]) + (", ..." if len(unknown) > 5 else "")
        warnings.warn(f"{root}: skipped {len(unknown)} file(s) of unknown type: {shown}", stacklevel=2)
    if not sources:
        raise VideoImportError(f"{root}: no inputs in it (expected {known})")
    return sorted(sources, key=lambda source: natural_key(source.name))


def _constant_rate(frames: Iterator[np.ndarray], fps: float | None) -> Frames:
    for frame in frames:
        yield frame, (1 / fps if fps else None)


def _video_frames(path: Path, source_fps: float | None) -> tuple[float | None, Frames]:
    """Any container and codec ffmpeg reads, streamed (constant memory), at the stream's frame rate."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    fps = meta["fps"] or source_fps

    def frames() -> Iterator[np.ndarray]:
        try:
            for data in reader:
                yield np.frombuffer(data, np.uint8).reshape(height, width, 3)
        finally:
            reader.close()

    return fps, _constant_rate(frames(), fps)


def _gif_frames(path: Path, source_fps: float | None) -> tuple[float | None, Frames]:
    """GIF frames with their own delays (which may differ frame to frame); the rate is the first frame's."""
    image = Image.open(path)

    def seconds(milliseconds: float | None) -> float | None:
        return milliseconds / 1000 if milliseconds else (1 / source_fps if source_fps else None)

    def frames() -> Frames:
        with image:
            for frame in ImageSequence.Iterator(image):
                yield np.asarray(frame.convert("RGB")), seconds(frame.info.get("duration"))

    first = seconds(image.info.get("duration"))
    return (1 / first if first else None), frames()


def _folder_frames(folder: Path, source_fps: float | None) -> tuple[float | None, Frames]:
    """The images of one folder in natural order, all of one size (they are one episode)."""
    files = sorted(
        (f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")),
        key=lambda f: natural_key(f.name),
    )

    def frames() -> Iterator[np.ndarray]:
        first_size = None
        for file in files:
            with Image.open(file) as image:
                if first_size is None:
                    first_size = image.size
                elif image.size != first_size:
                    raise VideoImportError(
                        f"frame {file.name} is {image.size[0]}x{image.size[1]}, but {files[0].name} is "
                        f"{first_size[0]}x{first_size[1]}: the frames of one folder (one episode) must share a size"
                    )
                yield np.asarray(image.convert("RGB"))

    return source_fps, _constant_rate(frames(), source_fps)


def _episode_frames(path: Path, source_fps: float | None) -> tuple[float | None, Frames]:
    """The video of an episode file (memory-mapped), whatever its actions."""
    return source_fps, _constant_rate(iter(read_episode(path).video), source_fps)


# kind -> (path, source_fps) -> (the input's frame rate or None, its frames with their display times)
DECODERS = {"video": _video_frames, "gif": _gif_frames, "frames": _folder_frames, "episode": _episode_frames}


def pick_frames(frames: Frames, frame_skip: int = 1, fps: float | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(source index, frame)`` of the frames to keep: every ``frame_skip``-th, or with ``fps`` the frame on
    screen at each tick ``k / fps`` of the input's own clock (a frame on screen for several ticks repeats)."""
    shown_until, ticks = 0.0, 0
    for index, (frame, duration) in enumerate(frames):
        if fps is None:
            if index % frame_skip == 0:
                yield index, frame
            continue
        if duration is None:
            raise VideoImportError("it records no frame rate, so --fps cannot resample it: give --source-fps")
        shown_until += duration
        due = math.ceil(shown_until * fps - 1e-6)  # ticks before this frame leaves the screen
        for _ in range(due - ticks):
            yield index, frame
        ticks = due


def square_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop a frame to a square and resize it to ``size x size``: area averaging when shrinking
    (no aliasing), bilinear when enlarging."""
    height, width = frame.shape[:2]
    side = min(height, width)
    left, top = (width - side) // 2, (height - side) // 2
    resample = Image.Resampling.BOX if side >= size else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(frame).resize((size, size), resample, box=(left, top, left + side, top + side)))


def cut_episodes(
    picked: Iterator[tuple[int, np.ndarray]], settings: ImportSettings
) -> Iterator[tuple[list[int], np.ndarray]]:
    """Resized frames in consecutive episodes of at most ``max_frames``, each with its source indices; a last
    episode shorter than ``min_frames`` is dropped."""
    indices: list[int] = []
    frames: list[np.ndarray] = []
    for index, frame in picked:
        frames.append(frames[-1] if indices and indices[-1] == index else square_resize(frame, settings.size))
        indices.append(index)
        if len(frames) == settings.max_frames:
            yield indices, np.stack(frames)
            indices, frames = [], []
    if len(frames) >= settings.min_frames:
        yield indices, np.stack(frames)


def _unit_hash(seed: int, name: str) -> float:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big") / 2**64


def assign_splits(names: list[str], settings: ImportSettings, known: dict[str, str]) -> dict[str, str]:
    """Each input's split: the one ``known`` gives (already imported), else test when the hash of its name and
    the seed falls below ``test_fraction``. Should that leave the test split empty with two or more inputs,
    the new input of lowest hash goes there."""
    scores = {name: _unit_hash(settings.seed, name) for name in names}
    splits = {name: known.get(name) or ("test" if scores[name] < settings.test_fraction else "train") for name in names}
    new = [name for name in names if name not in known]
    if settings.test_fraction > 0 and len(names) > 1 and new and "test" not in splits.values():
        splits[min(new, key=scores.__getitem__)] = "test"
    return splits


def _reason(err: Exception) -> str:
    """The first and last lines of an error (ffmpeg's come with its whole log in between)."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()] or [type(err).__name__]
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def import_source(source: Source, out: Path, split: str, settings: ImportSettings) -> dict[str, dict[str, Any]]:
    """Write the episodes of one input (those not on disk yet) and return their manifest entries.

    Raises :class:`VideoImportError` naming the input when it cannot be read, after deleting the episodes
    this call wrote for it.
    """
    written: list[Path] = []
    entries = {}
    try:
        source_fps, frames = DECODERS[source.kind](source.path, settings.source_fps)
        fps = settings.fps or (source_fps / settings.frame_skip if source_fps else None)
        picked = pick_frames(frames, settings.frame_skip, settings.fps)
        for part, (indices, video) in enumerate(cut_episodes(picked, settings)):
            key = f"{split}/{source.name}.{part:03d}.npz"
            if not (out / key).exists():
                written.append(write_episode(out / key, video, None))
            entries[key] = {
                "task": settings.task, "policy": settings.policy, "source": source.name,
                "source_frames": [indices[0], indices[-1]], "fps": fps, "length": len(video),
            }
    except Exception as err:
        for path in written:
            path.unlink(missing_ok=True)
        if isinstance(err, VideoImportError):
            raise VideoImportError(f"{source.path}: {err}") from err
        if isinstance(err, (OSError, RuntimeError, ValueError, EOFError, StopIteration)):
            raise VideoImportError(f"{source.path}: cannot read it ({_reason(err)})") from err
        raise
    return entries


def _dataset_fps(episodes: dict[str, dict[str, Any]], settings: ImportSettings) -> float:
    """The manifest's frame rate: the one asked for, else the commonest of the episodes (else the default)."""
    rates = Counter(entry["fps"] for entry in episodes.values() if entry["fps"])
    return settings.fps or (rates.most_common(1)[0][0] if rates else DatasetManifest.fps)


def _start(out: Path, record: dict[str, Any]) -> None:
    """Record the settings of a new import, or check that a rerun repeats them."""
    path = out / SETTINGS_FILE
    if path.exists():
        found = read_json(path)
        changed = [f"{key} {found.get(key)!r} -> {record[key]!r}" for key in record if found.get(key) != record[key]]
        if changed:
            raise VideoImportError(
                f"{out} was imported with other settings ({', '.join(changed)}): repeat them to resume, "
                "or import into another --out"
            )
    elif (out / MANIFEST_FILE).exists():
        raise VideoImportError(f"{out} holds a dataset that wm import-videos did not make; import into another --out")
    else:
        write_json_atomic(path, record)


def import_videos(input_path: str | Path, out: str | Path, settings: ImportSettings | None = None) -> dict[str, Any]:
    """Import every input under ``input_path`` into the dataset ``out`` (resuming); returns counts.

    Keys: ``inputs``, ``imported`` (inputs decoded in this run), ``reused`` (inputs finished before),
    ``skipped`` (names of inputs too short), ``train`` and ``test`` (episodes in each split).
    """
    input_path, out = Path(input_path), Path(out)
    settings = settings or ImportSettings()
    sources = find_sources(input_path, exclude=out.resolve())
    default_task = input_path.resolve().stem if input_path.is_file() else input_path.resolve().name
    settings = replace(settings, task=settings.task or default_task)
    _start(out, {"input": str(input_path.resolve()), **asdict(settings)})
    manifest = DatasetManifest.load(out) or DatasetManifest(
        ENV, [settings.task], None, settings.env_steps_per_frame, _dataset_fps({}, settings)
    )
    finished: dict[str, list[str]] = {}
    for key, entry in manifest.episodes.items():
        finished.setdefault(entry["source"], []).append(key)
    finished = {name: keys for name, keys in finished.items() if all((out / key).exists() for key in keys)}
    splits = assign_splits(
        [s.name for s in sources], settings, {name: keys[0].split("/")[0] for name, keys in finished.items()}
    )
    summary: dict[str, Any] = {"inputs": len(sources), "imported": 0, "reused": 0, "skipped": []}
    progress = tqdm(sources, desc=f"import {input_path.name}", unit="input", dynamic_ncols=True)
    for source in progress:
        if source.name in finished:
            summary["reused"] += 1
            continue
        entries = import_source(source, out, splits[source.name], settings)
        if not entries:
            summary["skipped"].append(source.name)
            warnings.warn(f"{source.path}: skipped, shorter than --min-frames {settings.min_frames} after resampling")
            continue
        manifest.episodes.update(entries)
        manifest.fps = _dataset_fps(manifest.episodes, settings)
        manifest.save(out)
        summary["imported"] += 1
    progress.close()
    manifest.save(out)
    rates = sorted({entry["fps"] for entry in manifest.episodes.values() if entry["fps"]})
    if len(rates) > 1:
        warnings.warn(f"{out}: episodes run at different rates {rates} fps: pass --fps to resample them to one")
    for split in ("train", "test"):
        summary[split] = sum(key.startswith(f"{split}/") for key in manifest.episodes)
    if settings.test_fraction > 0 and not summary["test"]:
        warnings.warn(f"{out}: no episode in the test split, which wm train-video evaluates on: raise "
                      "--test-fraction or change --seed")
    return summary

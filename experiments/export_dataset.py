"""A dataset in TECO's npz layout (``wm export-dataset``), for models outside this toolkit.

TECO (Yan et al. 2023) stores its DMLab and Minecraft data as ``{split}/{shard}/{i}.npz`` files, each
with ``video`` (T, H, W, 3) uint8 and ``actions`` (T,); its loaders, and most others written for that
data, read any file with those two arrays. The export writes every episode of every split that way
(``poses`` too where the dataset recorded them, for the revisit row, and ``task_id`` in a dataset of
several tasks; an action-free episode gets no ``actions``), numbered in the order the evaluation reads
them, beside the dataset's ``manifest.json`` keyed by the new paths and ``export.json``, which names
each file's source episode. The export is a
dataset of its own: ``wm eval-consistency --data`` takes it, and a model's predictions for it are
files mirroring its paths (see :mod:`experiments.eval_consistency`). Files are written atomically, and
a rerun skips those already written.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from worldmodel.checkpoint import write_json_atomic
from worldmodel.episodes import DatasetManifest, action_arrays, episode_paths, read_episode, write_npz_atomic

SPLITS = ("train", "test")
SHARD_SIZE = 1000  # episodes per shard folder
EXPORT_FILE = "export.json"


def teco_name(split: str, index: int) -> str:
    """Where episode ``index`` of ``split`` goes; zero-padded so that sorted paths keep the source's order."""
    return f"{split}/{index // SHARD_SIZE:04d}/{index:06d}.npz"


def export_teco_layout(root: str | Path, out: str | Path) -> dict[str, Any]:
    """Write every episode of ``root``'s splits into ``out`` in TECO's layout; returns ``export.json``'s
    contents (each exported file's source episode, relative to ``root``)."""
    root, out = Path(root), Path(out)
    if out.resolve() == root.resolve():
        raise ValueError(f"export into a folder other than the dataset itself ({root})")
    splits = [split for split in SPLITS if (root / split).is_dir()]
    if not splits:
        raise FileNotFoundError(f"no split folder ({' or '.join(SPLITS)}) under {root}")
    manifest = DatasetManifest.load(root)
    sources: dict[str, str] = {}
    for split in splits:
        for index, path in enumerate(tqdm(episode_paths(root, split), desc=f"export {split}", unit="episode")):
            name = teco_name(split, index)
            sources[name] = str(path.relative_to(root))
            if (out / name).is_file():
                continue
            episode = read_episode(path)
            arrays = {"video": episode.video, **action_arrays(episode.actions)}
            if episode.poses is not None:
                arrays["poses"] = episode.poses
            if manifest is not None and len(manifest.tasks) > 1:
                arrays["task_id"] = np.asarray(episode.task_id, np.int64)
            write_npz_atomic(out / name, arrays)
    if manifest is not None:
        episodes = {name: manifest.episodes[source] for name, source in sources.items() if source in manifest.episodes}
        replace(manifest, episodes=episodes).save(out)
    report = {"layout": "teco", "source": str(root), "episodes": sources}
    write_json_atomic(out / EXPORT_FILE, report)
    return report

"""A reference for the revisit columns: predict each frame by the context frame whose recorded pose is nearest.

Not a model: it reads the poses the dataset records, which no video model sees. It shows what remembering the
context can buy on a dataset (on the scaled maze: 26 dB PSNR on revisit frames, against copy-last's 10), and
writes its predictions where `wm eval-consistency --predictions` reads them:

    python examples/nearest_pose_memory.py data/maze-small runs/memory/nearest-pose-predictions 48 52
    wm eval-consistency --protocol scaled --data data/maze-small \\
        --predictions nearest-pose=runs/memory/nearest-pose-predictions --out runs/memory/nearest-pose
"""

import math
import sys
from pathlib import Path

import numpy as np

from worldmodel.episodes import episode_paths, read_episode


def nearest_pose_frames(video: np.ndarray, poses: np.ndarray, context: int, horizon: int) -> np.ndarray:
    """For each predicted frame, the context frame nearest in pose: distance in cells plus heading in radians."""
    seen = poses[:context]
    picked = []
    for t in range(context, context + horizon):
        distance = np.hypot(seen[:, 0] - poses[t, 0], seen[:, 2] - poses[t, 2])
        turn = np.abs((seen[:, 3] - poses[t, 3] + math.pi) % (2 * math.pi) - math.pi)
        picked.append(video[int(np.argmin(distance + turn))])
    return np.stack(picked)


def main() -> None:
    data, out, context, horizon = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    paths = episode_paths(data, "test")
    for path in paths:
        episode = read_episode(path)
        if episode.poses is None:
            raise SystemExit(f"{path} records no poses: this reference needs them")
        target = out / path.relative_to(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        np.savez(target, video=nearest_pose_frames(episode.video, np.asarray(episode.poses), context, horizon))
    print(f"nearest-pose predictions for {len(paths)} test videos in {out}")


if __name__ == "__main__":
    main()

"""Predictions from a model that knows nothing of this toolkit, for `wm eval-consistency --predictions`.

It reads a dataset exported in TECO's layout (`wm export-dataset`) with numpy alone and writes, for each test
video, an .npz under the same path holding `video`: the 156 frames after the first 144. Two stand-in models:
`hold` keeps the last context frame (it must score exactly as the copy-last row) and `loop` replays the last 12
context frames. Replace `predict` with your model.

    python examples/outside_predictions.py data/maze-teco runs/hold/predictions hold
"""

import sys
from pathlib import Path

import numpy as np

CONTEXT, HORIZON = 144, 156


def predict(video: np.ndarray, kind: str) -> np.ndarray:
    if kind == "hold":
        return np.repeat(video[CONTEXT - 1 : CONTEXT], HORIZON, axis=0)
    recent = video[CONTEXT - 12 : CONTEXT]
    return np.concatenate([recent] * (HORIZON // len(recent) + 1))[:HORIZON]


def main() -> None:
    data, out, kind = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    paths = sorted((data / "test").rglob("*.npz"))
    for path in paths:
        target = out / path.relative_to(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        np.savez(target, video=predict(np.load(path)["video"], kind))
    print(f"{kind} predictions for {len(paths)} test videos in {out}")


if __name__ == "__main__":
    main()

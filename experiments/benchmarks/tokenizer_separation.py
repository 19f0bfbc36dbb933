"""Does a tokenizer tell two behaviours apart? Paired episodes from the same resets, frame by frame.

Where a VIPER reward pays a behaviour nearly as much as the expert's (reacher's near miss: the fingertip
resting a few pixels off the target), the first suspect is the tokenizer: if both frames encode to the
same codes, no video model on those codes can tell them apart, and a sharper tokenizer is the fix.
This script measures it. It pairs the episodes of two policies recorded from the same reset seeds (the
graded expert and a probe, say), and over frames ``--from`` to ``--to`` of each pair reports:

- the share of codes that differ between the pair's frames;
- the pair's pixel distance (RMS, grey levels);
- each reconstruction's RMS distance to its own frame and to the other policy's frame.

If a reconstruction lies much nearer its own frame than the other's, the codes keep the difference, and
the reward's failure lies in the video model, not the tokenizer. ``--figure`` draws the first pair's
first frames over their reconstructions. For example:

    python -m experiments.benchmarks.tokenizer_separation \\
        --tokenizer runs/reward/reacher-easy/tokenizer/checkpoint \\
        --episodes runs/reward/reacher-easy/data-graded/test/reacher-easy/expert \\
        --episodes runs/probes/reacher-easy/test/reacher-easy/agent-nearmiss --from 20 --to 50 \\
        --figure docs/figures/reacher_tokenizer_near_miss.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from worldmodel.episodes import read_episode
from worldmodel.tokenizer import Tokenizer, load_tokenizer


def _rms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a - b) ** 2).mean(axis=(1, 2, 3)))


def pair_separation(tokenizer: Tokenizer, first: np.ndarray, second: np.ndarray) -> dict[str, float]:
    """Codes and reconstructions of two equally long frame stacks (T, H, W, 3), compared frame by frame."""
    if first.shape != second.shape:
        raise ValueError(f"paired frames must have one shape, got {first.shape} and {second.shape}")
    codes = [tokenizer.encode(frames) for frames in (first, second)]
    recon = [tokenizer.decode(c).cpu().numpy().astype(np.float64) for c in codes]
    a, b = first.astype(np.float64), second.astype(np.float64)
    return {
        "codes_differing": float((codes[0] != codes[1]).flatten(1).float().mean()),
        "pair_rms": float(_rms(a, b).mean()),
        "reconstruction_to_own": float((_rms(recon[0], a).mean() + _rms(recon[1], b).mean()) / 2),
        "reconstruction_to_other": float((_rms(recon[0], b).mean() + _rms(recon[1], a).mean()) / 2),
    }


def write_figure(tokenizer: Tokenizer, frames: np.ndarray, path: Path, scale: int = 4) -> None:
    """Frames (N, H, W, 3) in a row over their reconstructions, each pixel drawn ``scale`` times."""
    recon = tokenizer.decode(tokenizer.encode(frames)).cpu().numpy().astype(np.uint8)
    grid = np.concatenate([np.concatenate(list(frames), 1), np.concatenate(list(recon), 1)], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, grid.repeat(scale, 0).repeat(scale, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, type=Path, help="a train-tokenizer checkpoint")
    parser.add_argument("--episodes", required=True, action="append", type=Path,
                        help="a folder of one policy's episodes (.npz, named by reset seed); give two")
    parser.add_argument("--from", dest="start", type=int, default=0, help="first frame compared")
    parser.add_argument("--to", dest="stop", type=int, default=None, help="frame after the last compared")
    parser.add_argument("--figure", type=Path, default=None, help="PNG of the first pair's first frames, "
                        "and their reconstructions below")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if len(args.episodes) != 2:
        parser.error("give --episodes twice: the two policies' folders")
    first, second = ({path.name: path for path in sorted(folder.glob("*.npz"))} for folder in args.episodes)
    paired = sorted(set(first) & set(second))
    if not paired:
        parser.error(f"no episode file name (reset seed) is in both {args.episodes[0]} and {args.episodes[1]}")
    tokenizer = load_tokenizer(args.tokenizer, args.device)
    rows = []
    for name in paired:
        a, b = (np.asarray(read_episode(files[name]).video[args.start:args.stop]) for files in (first, second))
        length = min(len(a), len(b))
        rows.append(pair_separation(tokenizer, a[:length], b[:length]))
        if args.figure is not None and len(rows) == 1:
            write_figure(tokenizer, np.stack([a[0], b[0]]), args.figure)
    result = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
    print(json.dumps({"pairs": len(rows), **result}, indent=1))


if __name__ == "__main__":
    main()

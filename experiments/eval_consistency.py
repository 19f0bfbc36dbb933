"""Long-horizon consistency of video prediction: TECO's protocol, with baselines, revisits, plots and videos.

The protocol (TECO, Yan et al. 2023; ``../shared/SEED_NOTES.md`` section 4): condition on the first
144 frames of each test video and its actions, predict the next 156, one sample per video (no
best-of-N), and score every predicted frame against the truth by PSNR, SSIM and LPIPS; the curves
are means over videos per horizon and the table holds their means. FVD compares the real 300-frame
videos with videos of 36 real frames followed by 264 generated ones.

What the numbers mean needs references, so the same table holds
- **copy-last**: the last context frame repeated: what a model that knows nothing scores;
- **short window**: the same weights with attention cut to a few frames: what long context buys;
- any other model bundle given by name;
- **predictions of any model**, ours or not, read from files (:func:`read_predictions`): for the test video
  stored at ``{data}/{path}``, the file ``{predictions}/{path}`` holds ``video``, the predicted frames
  ``(horizon, H, W, 3)`` uint8 after the first ``context`` (or the whole video, of which frames
  ``context`` to ``context + horizon`` are taken), and optionally ``fvd_video``, the frames after the first
  ``fvd_context`` of an ``fvd_length``-frame video (the same two shapes), for FVD. ``wm export-dataset``
  writes a dataset in TECO's layout for a model outside this toolkit to read.

The **late** columns average predicted frames 100-156 only, where memory of the context is all a
model has to go on. The **revisit** row averages the predicted frames whose recorded pose (datasets
made by ``envs/`` carry ``poses``) comes back to a pose held somewhere in the context, except the last
context frame's pose, which copy-last already has: the frames a model with memory can get right.

Beside the sampled frames, each of our per-frame models scores the true predicted frames **teacher-forced**
(bits per code, each frame given the true ones before it): exact, cheap, and free of sampling noise, it shows
whether a long window uses its memory on revisit frames before the model's samples are good enough to show it.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from experiments.eval_video import episode_task, frame_stride
from experiments.plots import save_figure
from experiments.videos import save_video, side_by_side
from worldmodel.episodes import DatasetManifest, episode_paths, read_episode
from worldmodel.device import AUTO, resolve_device
from worldmodel.metrics import frechet_distance, i3d_features, psnr, ssim
from worldmodel.metrics.i3d import InceptionI3D
from worldmodel.metrics.lpips import LPIPS, shared_lpips
from worldmodel.video_model import VideoModel

METRICS = ("psnr", "ssim", "lpips")
COPY_LAST = "copy-last"
TOKENIZER_CEILING = "tokenizer (sees the truth)"

# (videos (B, T, H, W, 3) uint8, actions (B, T[, A]), task (B,) or None, context, horizon, generator)
#   -> predicted frames (B, horizon, H, W, 3) uint8
Predictor = Callable[[np.ndarray, np.ndarray, "torch.Tensor | None", int, int, torch.Generator], np.ndarray]


@dataclass(frozen=True)
class Protocol:
    """Frame counts of TECO's protocol and the thresholds of the revisit row."""

    context: int = 144
    horizon: int = 156
    fvd_context: int = 36
    fvd_length: int = 300
    late_from: int = 100  # the late columns average predicted frames late_from..horizon (counted from 1)
    revisit_distance: float = 0.5  # in the env's units: maze cells, terrain blocks
    revisit_degrees: float = 30.0

    def __post_init__(self) -> None:
        if min(self.context, self.horizon, self.fvd_context) < 1 or self.fvd_length <= self.fvd_context:
            raise ValueError(f"frame counts must be >= 1 and fvd_length > fvd_context, got {self}")
        if not 1 <= self.late_from <= self.horizon:
            raise ValueError(f"late_from must be in [1, horizon={self.horizon}], got {self.late_from}")


# TECO's counts, and the same proportions for the scaled benchmark's 100-frame episodes (dmlab:maze-small):
# 48 of 100 frames as context (144 of 300), FVD from the first 12 (36), late columns over the last 20 (57 of 156).
PROTOCOLS = {"teco": Protocol(), "scaled": Protocol(context=48, horizon=52, fvd_context=12, fvd_length=100,
                                                    late_from=33)}


@dataclass
class TestVideo:
    """One test episode at the model's frame rate."""

    name: str
    video: np.ndarray  # (T, H, W, 3) uint8
    actions: np.ndarray  # (T,) or (T, A)
    poses: np.ndarray | None  # (T, 4) x, y, z, heading (radians), when the dataset recorded them
    task: torch.Tensor | None  # (1,) task id of the model, None for an unconditional model


PREDICTION_KEY, FVD_PREDICTION_KEY = "video", "fvd_video"


def load_test_videos(
    model: VideoModel | None, root: str | Path, split: str, count: int, length: int
) -> list[TestVideo]:
    """The first ``count`` episodes of ``split`` (sorted paths) with at least ``length`` frames, cut to ``length``,
    at the model's frame rate (the dataset's own without a model)."""
    root = Path(root)
    manifest = DatasetManifest.load(root)
    stride = 1 if model is None else frame_stride(model, manifest, root)
    videos = []
    for path in episode_paths(root, split):
        episode = read_episode(path)
        if len(episode.video[::stride]) < length:
            continue
        poses = None if episode.poses is None else np.array(episode.poses[::stride][:length])
        videos.append(TestVideo(
            str(path.relative_to(root)), np.array(episode.video[::stride][:length]),
            np.array(episode.actions[::stride][:length]), poses,
            None if model is None else episode_task(model, manifest, episode),
        ))
        if len(videos) == count:
            break
    if not videos:
        raise ValueError(f"no episode under {root / split} has the {length} frames (at the model's rate) needed")
    return videos


def copy_last(videos: np.ndarray, actions: np.ndarray, task: Any, context: int, horizon: int, generator: Any) -> np.ndarray:
    """The last context frame, repeated."""
    return np.repeat(videos[:, context - 1 : context], horizon, axis=1)


def tokenizer_ceiling(model: VideoModel) -> Predictor:
    """The true future frames encoded and decoded: the best any model on these codes can score."""

    def reconstruct(videos, actions, task, context, horizon, generator):
        return model.reconstruct(videos, context, horizon).cpu().numpy()

    return reconstruct


def model_predictor(
    model: VideoModel, temperature: float = 1.0, top_k: int | None = None, decoding: str = "sequential"
) -> Predictor:
    """One sample per video from ``model``, following the videos' own actions."""

    def predict(videos, actions, task, context, horizon, generator):
        generated = model.continue_video(
            videos, context, horizon, actions, task, temperature, top_k, generator, decoding
        )
        return generated.cpu().numpy()

    return predict


def predicted_frame_bits(
    model: VideoModel, videos: list[TestVideo], context: int, horizon: int, batch_size: int
) -> np.ndarray:
    """Teacher-forced bits per code of every predicted frame ``(N, horizon)``: each frame scored given the true
    frames and actions before it. No sampling noise, and seconds where sampling takes minutes: what a longer
    window gains on revisit frames here is memory the model uses, whether or not its samples show it yet.
    Frame by frame through the rolling KV cache, so TECO's 300-frame videos take no more memory than one window."""
    takes_actions = model.transformer.config.action_kind is not None
    out = []
    for i in range(0, len(videos), batch_size):
        batch = videos[i : i + batch_size]
        tasks = None if batch[0].task is None else torch.cat([v.task for v in batch])
        frames = np.stack([v.video[: context + horizon] for v in batch])
        actions = np.stack([v.actions[: context + horizon] for v in batch])
        scorer = model.scorer(len(batch))
        log_probs = [
            scorer.push(frames[:, t], torch.as_tensor(actions[:, t - 1]) if takes_actions and t else None, tasks)
            for t in range(context + horizon)
        ]
        bits = -torch.stack(log_probs[context:], dim=1) / (model.transformer.config.codes_per_frame * math.log(2))
        out.append(bits.cpu().numpy())
    return np.concatenate(out)


def predict_all(
    name: str, predictor: Predictor, videos: list[TestVideo], context: int, horizon: int, batch_size: int, seed: int,
    device: str = "cpu",
) -> np.ndarray:
    """Predictions ``(N, horizon, H, W, 3)`` for all videos, in batches; one generator (on the models'
    ``device``) seeded once per call."""
    generator = torch.Generator(device).manual_seed(seed)
    out = []
    for i in tqdm(range(0, len(videos), batch_size), desc=f"{name}: {context} -> {horizon} frames", unit="batch"):
        batch = videos[i : i + batch_size]
        tasks = None if batch[0].task is None else torch.cat([v.task for v in batch])
        frames = np.stack([v.video[: context + horizon] for v in batch])
        actions = np.stack([v.actions[: context + horizon] for v in batch])
        out.append(predictor(frames, actions, tasks, context, horizon, generator))
    return np.concatenate(out)


def read_predictions(
    directory: str | Path, videos: list[TestVideo], key: str, context: int, horizon: int, required: bool = True
) -> np.ndarray | None:
    """The predicted frames ``(N, horizon, H, W, 3)`` of each test video, from ``{directory}/{video name}``'s
    ``key`` array: ``horizon`` frames, or a whole video from which frames ``context..context + horizon`` are
    taken. Where a file lacks ``key`` and ``required`` is False, None (no such predictions were made)."""
    directory = Path(directory)
    out = []
    for video in videos:
        path = directory / video.name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no predictions for test video {video.name}")
        try:
            with np.load(path, allow_pickle=False) as arrays:
                if key not in arrays:
                    if required:
                        raise ValueError(f"{path}: no '{key}' array (has {sorted(arrays.files)})")
                    return None
                frames = arrays[key]
        except (OSError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path}: unreadable predictions file ({err})") from err
        want = (horizon, *video.video.shape[1:])
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != want[1:]:
            raise ValueError(f"{path}: '{key}' must be uint8 frames of shape (T, {', '.join(map(str, want[1:]))}), "
                             f"got {frames.dtype} {frames.shape}")
        if len(frames) >= context + horizon:
            frames = frames[context : context + horizon]
        elif len(frames) != horizon:
            raise ValueError(f"{path}: '{key}' has {len(frames)} frames; expected the {horizon} predicted ones, or a "
                             f"whole video of at least {context + horizon}")
        out.append(frames)
    return np.stack(out)


def exact_match_psnr(shape: tuple[int, ...]) -> float:
    """PSNR of the smallest error uint8 frames can have (one value off by one level): identical frames'
    score, so that a copied frame that happens to be exact counts as excellent, not infinite."""
    return 10 * math.log10(255.0**2 * math.prod(shape[-3:]))


def frame_scores(truth: np.ndarray, prediction: np.ndarray, lpips: LPIPS | None = None) -> dict[str, np.ndarray]:
    """PSNR (dB), SSIM and LPIPS (with ``lpips``, else the shared CPU network) of every predicted frame, each
    ``(N, horizon)``."""
    cap = exact_match_psnr(truth.shape)
    return {
        "psnr": np.minimum(psnr(truth, prediction).numpy(), cap),
        "ssim": ssim(truth, prediction).numpy(),
        "lpips": (lpips or shared_lpips())(truth, prediction).numpy(),
    }


def revisit_mask(poses: np.ndarray, context: int, horizon: int, distance: float, degrees: float) -> np.ndarray:
    """Bool ``(horizon,)``: predicted frames whose pose is within ``distance`` (on the ground plane, x and z)
    and ``degrees`` of heading of some context frame's pose, but not of the last context frame's."""
    past, future = poses[:context], poses[context : context + horizon]
    apart = np.hypot(future[:, None, 0] - past[None, :, 0], future[:, None, 2] - past[None, :, 2])
    turn = np.angle(np.exp(1j * (future[:, None, 3] - past[None, :, 3])))  # wrapped to (-pi, pi]
    near = (apart <= distance) & (np.abs(turn) <= math.radians(degrees))
    return near.any(axis=1) & ~near[:, -1]


@dataclass
class MethodResult:
    """One row of the tables and its per-horizon curves."""

    name: str
    means: dict[str, float]
    late: dict[str, float]
    revisit: dict[str, float] = field(default_factory=dict)
    fvd: float | None = None
    curves: dict[str, list[float]] = field(default_factory=dict)
    bits_per_code: dict[str, float] = field(default_factory=dict)  # teacher-forced: all, late, revisits, elsewhere


def summarise(
    name: str, scores: dict[str, np.ndarray], protocol: Protocol, revisits: np.ndarray | None
) -> MethodResult:
    late = slice(protocol.late_from - 1, protocol.horizon)
    result = MethodResult(
        name,
        means={m: float(scores[m].mean()) for m in METRICS},
        late={m: float(scores[m][:, late].mean()) for m in METRICS},
        curves={m: scores[m].mean(axis=0).tolist() for m in METRICS},
    )
    if revisits is not None and revisits.any():
        result.revisit = {m: float(scores[m][revisits].mean()) for m in METRICS}
    return result


def summarise_bits(bits: np.ndarray, protocol: Protocol, revisits: np.ndarray | None) -> dict[str, float]:
    """Means of per-frame bits per code ``(N, horizon)``: over all predicted frames, the late ones, the revisit
    frames and the others."""
    summary = {"all": float(bits.mean()), "late": float(bits[:, protocol.late_from - 1 :].mean())}
    if revisits is not None and revisits.any() and not revisits.all():
        summary |= {"revisits": float(bits[revisits].mean()), "elsewhere": float(bits[~revisits].mean())}
    return summary


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def tables(results: list[MethodResult], protocol: Protocol, revisit_frames: int, videos: int) -> str:
    """TECO's table (FVD, PSNR, SSIM, LPIPS over all predicted frames), then the late and revisit columns."""
    p = protocol
    lines = [
        f"{videos} test videos; {p.context} context frames -> {p.horizon} predicted, one sample each; "
        f"FVD on {p.fvd_length}-frame videos from {p.fvd_context} context frames.",
        "",
        "| method | FVD | PSNR | SSIM | LPIPS |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        m = r.means
        lines.append(f"| {r.name} | {_cell(r.fvd, 1)} | {m['psnr']:.2f} | {m['ssim']:.3f} | {m['lpips']:.3f} |")
    lines += [
        "",
        f"| method | PSNR {p.late_from}-{p.horizon} | SSIM {p.late_from}-{p.horizon} | LPIPS {p.late_from}-{p.horizon} "
        f"| PSNR revisits | SSIM revisits | LPIPS revisits |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        v = r.revisit
        lines.append(
            f"| {r.name} | {r.late['psnr']:.2f} | {r.late['ssim']:.3f} | {r.late['lpips']:.3f} | "
            f"{_cell(v.get('psnr'), 2)} | {_cell(v.get('ssim'), 3)} | {_cell(v.get('lpips'), 3)} |"
        )
    lines.append("")
    lines.append(
        f"Revisits: {revisit_frames} predicted frames within {p.revisit_distance} units and {p.revisit_degrees:g} "
        "degrees of a context pose other than the last one."
        if revisit_frames else "Revisits: no recorded poses, or no predicted frame revisits a context pose."
    )
    scored = [r for r in results if r.bits_per_code]
    if scored:
        lines += [
            "",
            "Teacher-forced bits per code of the predicted frames (lower is better; each frame given the true ones "
            "before it): a long window that beats a short one on revisits uses its memory.",
            "",
            f"| model | all | {p.late_from}-{p.horizon} | revisits | elsewhere |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in scored:
            b = r.bits_per_code
            lines.append(f"| {r.name} | {b['all']:.3f} | {b['late']:.3f} | {_cell(b.get('revisits'), 3)} | "
                         f"{_cell(b.get('elsewhere'), 3)} |")
    return "\n".join(lines)


def plot_curves(results: list[MethodResult], protocol: Protocol, path: Path) -> Path:
    """PSNR, SSIM and LPIPS against the predicted frame's number, one line per method."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 3.6))
    steps = np.arange(1, protocol.horizon + 1)
    for i, (metric, better) in enumerate([("psnr", "higher"), ("ssim", "higher"), ("lpips", "lower")]):
        axes = figure.add_subplot(1, 3, i + 1)
        for r in results:
            axes.plot(steps, r.curves[metric], label=r.name, linewidth=1.2)
        axes.axvspan(protocol.late_from, protocol.horizon, color="0.9", zorder=0)
        axes.set(title=f"{metric.upper()} ({better} is better)", xlabel="predicted frame", xlim=(1, protocol.horizon))
    figure.axes[0].legend(fontsize=8)
    return save_figure(figure, path)


def evaluate_consistency(
    model_dir: str | Path | None,
    data_root: str | Path,
    out: str | Path,
    protocol: Protocol = Protocol(),
    videos: int = 64,
    fvd_videos: int = 16,
    short_window: int | None = 4,
    others: dict[str, str | Path] | None = None,
    split: str = "test",
    batch_size: int = 8,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    save_videos: int = 4,
    decoding: str = "sequential",
    device: str = AUTO,
    predictions: dict[str, str | Path] | None = None,
) -> dict[str, Any]:
    """Run the protocol for the model, the short-window model, ``others``, the ``predictions`` folders of any
    model (named; see :func:`read_predictions`), copy-last and the tokenizer ceiling; write the report.
    Without ``model_dir`` the videos run at the dataset's own frame rate and the rows that need our model
    (short window, tokenizer ceiling) are left out. Every model and the metric networks (LPIPS, I3D) run on
    ``device``.

    Writes ``{out}/consistency.json`` (everything, curves and teacher-forced bits per code included),
    ``consistency.md`` (the tables), ``horizon_curves.png`` and ``videos/video{i}.gif|.mp4`` (truth beside each method).
    Deterministic for a seed and batch size; ``decoding="jacobi"`` gives the same frames faster.
    """
    if videos < 1 or fvd_videos < 0 or save_videos < 0 or batch_size < 1:
        raise ValueError("need videos >= 1, batch_size >= 1, fvd_videos >= 0 and save_videos >= 0")
    if fvd_videos == 1:
        raise ValueError("FVD needs at least 2 videos (or 0 to skip it)")
    predictions = {name: Path(path) for name, path in (predictions or {}).items()}
    if model_dir is None and not predictions:
        raise ValueError("nothing to evaluate: give a model bundle, a folder of predictions, or both")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(device)
    model = None if model_dir is None else VideoModel.load(model_dir, device)
    sampling = {"temperature": temperature, "top_k": top_k, "decoding": decoding}
    models: dict[str, VideoModel] = {}
    if model is not None:
        models["model"] = model
        if short_window is not None and short_window < model.window:
            k = model.frames_per_code_step
            unit = "" if k == 1 else f" code steps ({k * short_window} frames)"
            models[f"model, window {short_window}{unit}"] = model.with_window(short_window)
    for name, path in (others or {}).items():
        models[name] = VideoModel.load(path, device)
    methods: dict[str, Predictor | Path] = {name: model_predictor(m, **sampling) for name, m in models.items()}
    clash = sorted(set(predictions) & {*methods, COPY_LAST, TOKENIZER_CEILING})
    if clash:
        raise ValueError(f"predictions named {clash} would share a row with another method; rename them")
    methods.update(predictions)
    methods[COPY_LAST] = copy_last
    if model is not None:
        methods[TOKENIZER_CEILING] = tokenizer_ceiling(model)

    p = protocol
    length = p.context + p.horizon
    tests = load_test_videos(model, data_root, split, videos, length)
    truth = np.stack([v.video[p.context :] for v in tests])
    revisits = None
    if all(v.poses is not None for v in tests):
        revisits = np.stack([
            revisit_mask(v.poses, p.context, p.horizon, p.revisit_distance, p.revisit_degrees) for v in tests
        ])
    fvd_tests = load_test_videos(model, data_root, split, fvd_videos, p.fvd_length) if fvd_videos else []
    fvd_truth = np.stack([v.video for v in fvd_tests]) if fvd_tests else None
    # I3D is the slow part of FVD (about 15 frames/s on a CPU thread): the real videos go through it once.
    i3d = InceptionI3D().to(device) if fvd_truth is not None else None
    real_features = i3d_features(fvd_truth, i3d) if fvd_truth is not None else None
    lpips = LPIPS().to(device)

    results, shown = [], {}
    fvd_horizon = p.fvd_length - p.fvd_context
    with torch.no_grad():
        for name, method in methods.items():
            if isinstance(method, Path):
                predicted = read_predictions(method, tests, PREDICTION_KEY, p.context, p.horizon)
                future = None if real_features is None else read_predictions(
                    method, fvd_tests, FVD_PREDICTION_KEY, p.fvd_context, fvd_horizon, required=False
                )
            else:
                predicted = predict_all(name, method, tests, p.context, p.horizon, batch_size, seed, device)
                future = None if real_features is None else predict_all(
                    name, method, fvd_tests, p.fvd_context, fvd_horizon, batch_size, seed, device
                )
            result = summarise(name, frame_scores(truth, predicted, lpips), p, revisits)
            if name in models and models[name].frames_per_code_step == 1:
                bits = predicted_frame_bits(models[name], tests, p.context, p.horizon, batch_size)
                result.bits_per_code = summarise_bits(bits, p, revisits)
            if future is not None:
                generated = np.concatenate([fvd_truth[:, : p.fvd_context], future], axis=1)
                result.fvd = frechet_distance(real_features, i3d_features(generated, i3d))
            results.append(result)
            shown[name] = predicted[:save_videos]

    saved = []
    for i in range(min(save_videos, len(tests))):
        context = tests[i].video[: p.context]
        panels = [tests[i].video] + [np.concatenate([context, shown[name][i]]) for name in methods]
        frames = side_by_side(panels, ["truth", *methods], scale=2)
        saved.append([str(f) for f in save_video(frames, [out / "videos" / f"video{i}.gif", out / "videos" / f"video{i}.mp4"], fps=15)])

    revisit_frames = int(revisits.sum()) if revisits is not None else 0
    table = tables(results, p, revisit_frames, len(tests))
    report = {
        "model": None if model_dir is None else str(model_dir),
        "predictions": {name: str(path) for name, path in predictions.items()},
        "data": str(data_root),
        "split": split,
        "protocol": asdict(p),
        "videos": [v.name for v in tests],
        "fvd_videos": len(fvd_tests),
        "seed": seed,
        "batch_size": batch_size,
        "temperature": temperature,
        "top_k": top_k,
        "decoding": decoding,
        "revisit_frames": revisit_frames,
        "results": [asdict(r) for r in results],
        "plot": str(plot_curves(results, p, out / "horizon_curves.png")),
        "side_by_side_videos": saved,
        "table": table,
    }
    (out / "consistency.json").write_text(json.dumps(report, indent=2))
    (out / "consistency.md").write_text(table + "\n")
    return report

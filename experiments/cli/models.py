"""Commands that build the video model: collect or import episodes, train and evaluate tokenizers and video
transformers."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from experiments.cli.flags import add_device_flag, add_sampling_flags, dataclass_flags, dataclass_values


def _add_collect(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "collect",
        help="record episodes of an expert, a trained agent, their noisy grades, or random play",
        description="Run policies in a pixel env and write episodes (.npz) plus a manifest.json. "
        "Episodes already on disk are skipped, so re-running resumes an interrupted collection. Where no "
        "scripted expert exists, train one on the task's reward (wm train-agent --reward env --run RUN) and "
        "record it with --policies agent:RUN, as VIPER got its expert videos.",
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
        help="comma-separated policies: expert, random, still (the do-nothing action), held:<steps> (a random "
        "action held that many env steps), noisy:<std> (expert + Gaussian action noise), agent:<run dir> (the "
        "trained agent of a `wm train-agent` run on this task, acting on the CPU), noisy-agent:<std>:<run dir>; "
        "e.g. expert,noisy:0.3,noisy:1.0,random for graded-quality episodes, random,still,held:25 for play",
    )
    parser.add_argument("--episodes", type=int, default=20, help="episodes per policy")
    parser.add_argument("--out", required=True, type=Path, help="dataset root ({out}/{train,test}/...)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed from which every episode's reset and policy seeds derive"
    )
    parser.add_argument("--test-fraction", type=float, default=0.1, help="share of each policy's episodes held out")
    parser.add_argument("--max-steps", type=int, default=None, help="cut episodes to this many agent steps")
    parser.add_argument(
        "--action-repeat", type=int, default=None,
        help="DMC only: physics steps per recorded frame and per action (default the env's 2); e.g. 8 to match "
        "a train-imagination run at --action-repeat 8, whose world model these episodes may then join",
    )
    parser.add_argument(
        "--task-label", default=None,
        help="file the episodes under this task name instead of the env's, e.g. random play as "
        "cartpole-swingup@play beside the expert's episodes: a model trained on both is conditioned on the source, "
        "and serves as expert and baseline of the ratio reward (--baseline-task)",
    )
    parser.add_argument("--workers", type=int, default=2, help="episode-running processes")
    parser.set_defaults(handler=_run_collect)


def _run_collect(args: argparse.Namespace) -> None:
    from envs.collect import PolicySpec, collect
    from experiments.agent_policy import run_policy_factory
    from experiments.reports import returns_table

    policies = [PolicySpec.parse(p) for p in args.policies.split(",")]
    if args.action_repeat is not None and not args.env.startswith("dmc:"):
        raise SystemExit(f"--action-repeat sets DMC's physics steps per frame; {args.env} is no DMC env")
    manifest = collect(
        args.env, policies, args.episodes, args.out, args.seed, args.test_fraction, args.workers, args.max_steps,
        run_policy_factory, None if args.action_repeat is None else {"action_repeat": args.action_repeat},
        args.task_label,
    )
    print(returns_table(manifest.episodes))


def _add_import_videos(subparsers: argparse._SubParsersAction) -> None:
    from experiments.import_videos import ImportSettings

    parser = subparsers.add_parser(
        "import-videos",
        help="turn a folder of videos (MP4, WebM, GIF, frame folders, .npz) into an action-free episode dataset",
        description="Find every input under --input, recursively: video files (MP4, WebM, MOV, MKV, AVI, GIF, ...), "
        "folders of image frames (one folder is one episode, frames in natural order: frame2 before frame10) and "
        ".npz episode files (e.g. TECO's {split}/{shard}/{i}.npz; only their video is kept). Each is centre-cropped "
        "to a square, resized to --size, taken every --frame-skip frames or resampled to --fps by its own frame rate, "
        "optionally cut into episodes of --max-frames, and written without actions to {out}/train or {out}/test "
        "(a hash of its name and --seed picks the split, so it stays put as inputs are added), with "
        "{out}/manifest.json (action_space null; per episode its source file and frame range) and {out}/import.json "
        "(the settings). The data a VIPER reward trains on: then wm train-tokenizer and wm train-video, which trains "
        "action-free on it. Rerunning with the same settings resumes, skipping what is written; an unreadable input "
        "stops the import with an error naming it, leaving none of its episodes behind; an input shorter than "
        "--min-frames is skipped with a warning naming it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--input", required=True, type=Path, help="folder of videos, frame folders and .npz files (or one file)"
    )
    parser.add_argument("--out", required=True, type=Path, help="dataset root ({out}/{train,test}/..., manifest.json)")
    dataclass_flags(parser, ImportSettings())
    parser.set_defaults(handler=_run_import_videos)


def _run_import_videos(args: argparse.Namespace) -> None:
    from experiments.import_videos import ImportSettings, import_videos

    settings = ImportSettings(**dataclass_values(args, ImportSettings))
    print(json.dumps(import_videos(args.input, args.out, settings), indent=2))


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
        "--preset", default="dmc", help="tokenizer preset: dmc (64->8x8), dmc-paper, atari, maze3d (64->16x16), "
        "long (64->4x4), fast (64->4x4, FSQ codes of 4375 values), video (a causal video tokenizer: 64->8x8 per 4 "
        "frames, trained on clips of --clip-frames)"
    )
    parser.add_argument("--quantizer", choices=["vq", "fsq", "lfq"], default=None, help="override the preset's quantizer")
    parser.add_argument("--channels", type=int, default=None, help="override the preset's base CNN channels")
    parser.add_argument("--resume", action="store_true", help="continue from {run}/checkpoint")
    add_device_flag(parser)
    dataclass_flags(parser, TokenizerTraining())
    parser.set_defaults(handler=_run_train_tokenizer)


def _run_train_tokenizer(args: argparse.Namespace) -> None:
    from experiments.presets import tokenizer_preset
    from worldmodel.train_tokenizer import TokenizerTraining, train_tokenizer

    config = tokenizer_preset(args.preset, args.quantizer, args.channels)
    training = TokenizerTraining(**dataclass_values(args, TokenizerTraining))
    summary = train_tokenizer(args.data, args.run, config, training, resume=args.resume, device=args.device)
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
    add_device_flag(parser)
    parser.set_defaults(handler=_run_eval_tokenizer)


def _run_eval_tokenizer(args: argparse.Namespace) -> None:
    from experiments.reports import tokenizer_report

    print(json.dumps(tokenizer_report(args.checkpoint, args.data, args.frames, args.out, args.device), indent=2))


def _add_train_video(subparsers: argparse._SubParsersAction) -> None:

    from worldmodel.train_video import VideoTraining

    parser = subparsers.add_parser(
        "train-video",
        help="train the video transformer on a dataset tokenised by a trained tokenizer",
        description="Tokenise the dataset once with a tokenizer checkpoint (cached under "
        "{data}/token_cache/<tokenizer fingerprint>, reused by later runs), then train a frame-causal video "
        "transformer on clips of the train split, scoring held-out log-likelihood (bits per code and per pixel "
        "dimension) on the test split. Logs to {run}/tb, checkpoints atomically to {run}/checkpoint, writes "
        "the tokenizer + transformer bundle to {run}/model; --resume continues an interrupted run exactly. "
        "Actions and tasks come from the dataset's manifest (none for an action-free dataset). For several "
        "processes or GPUs: torchrun --nproc_per_node N -m experiments.cli train-video --run-dir RUN ... "
        "(batch size is per process).",
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
        "--preset", default="dmc", help="transformer preset: dmc (CPU-sized), dmc-paper (VIPER's), long (sees 144 "
        "frames), long-paper (long at a GPU's size) or memory (one 48-frame window: the scaled benchmark's context)"
    )
    parser.add_argument(
        "--no-actions", action="store_true",
        help="train action-free (a VIPER reward model); action-free data (wm import-videos) always trains so",
    )
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
    parser.add_argument(
        "--mix-data", type=Path, default=None,
        help="a second dataset (e.g. expert episodes beside an agent's play; footage without actions or rewards "
        "too) whose train clips make up --mix-fraction of each batch; same frame rate and tasks",
    )
    parser.add_argument(
        "--factorized-head", action="store_true",
        help="predict an FSQ code as one digit per level, each from its own softmax (MAGVIT-v2 factorises LFQ "
        "codes so): a head of sum(levels) outputs instead of prod(levels), most of a sampling step's cost on a CPU "
        "for thousands of codes; the digits of a code are then independent given the context",
    )
    parser.add_argument(
        "--masked-decoding", action="store_true",
        help="also learn to fill in frames in a few parallel passes (MaskGIT), for --decoding masked: faster "
        "imagined steps where a model step costs little more for a whole frame than for a code (a GPU); "
        "a training step costs about twice as much",
    )
    parser.add_argument(
        "--init-from", type=Path, default=None,
        help="start from this video model's transformer weights (same tokenizer and architecture), e.g. to "
        "teach a trained world model --masked-decoding in a short run",
    )
    parser.add_argument("--resume", action="store_true", help="continue from {run}/checkpoint")
    add_device_flag(parser)
    # clip_length defaults to None on the command line: the preset then decides.
    dataclass_flags(parser, replace(VideoTraining(), clip_length=None))
    parser.set_defaults(handler=_run_train_video)


def _run_train_video(args: argparse.Namespace) -> None:

    from experiments.presets import video_preset
    from worldmodel.episodes import DatasetManifest
    from worldmodel.tokenizer import load_tokenizer
    from worldmodel.train_video import VideoTraining, fit_to_data, train_video

    preset = video_preset(args.preset)
    config = fit_to_data(
        replace(
            preset.transformer, action_dropout=args.action_dropout, reward_head=args.reward_head,
            continue_head=args.continue_head, masked_decoding=args.masked_decoding,
        ),
        load_tokenizer(args.tokenizer, args.device),
        DatasetManifest.load(args.data),
        actions=False if args.no_actions else None,
        factorized=args.factorized_head,
    )
    settings = dataclass_values(args, VideoTraining)
    training = VideoTraining(**{**settings, "clip_length": args.clip_length or preset.clip_length})
    summary = train_video(args.data, args.tokenizer, args.run, config, training, args.resume, args.device, args.cache,
                          mix_root=args.mix_data, init_from=args.init_from)
    print(json.dumps(summary, indent=2))


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
    add_sampling_flags(parser, "sampling seed (rollout i uses seed + i)")
    add_device_flag(parser)
    parser.set_defaults(handler=_run_eval_video)


def _run_eval_video(args: argparse.Namespace) -> None:
    from experiments.eval_video import evaluate_video_model

    report = evaluate_video_model(
        args.model, args.data, args.out, args.context, args.horizon, args.rollouts, args.seed,
        args.temperature, args.top_k, args.device,
    )
    print(report["table"])
    print(f"report and rollouts written to {args.out}")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """This job's subcommands, in the order ``wm --help`` lists them."""
    _add_collect(subparsers)
    _add_import_videos(subparsers)
    _add_train_tokenizer(subparsers)
    _add_eval_tokenizer(subparsers)
    _add_train_video(subparsers)
    _add_eval_video(subparsers)

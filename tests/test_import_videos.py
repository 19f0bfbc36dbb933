import dataclasses
import json

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from gymnasium.wrappers import RecordVideo
from PIL import Image

import envs
import experiments.import_videos as import_module
from experiments.cli import main
from experiments.eval_reward import calibrate_reward, evaluate_reward
from experiments.eval_video import evaluate_video_model
from experiments.import_videos import (
    ImportSettings,
    VideoImportError,
    assign_splits,
    import_videos,
    square_resize,
)
from tests.conftest import moving_square_video
from worldmodel.episodes import DatasetManifest, EpisodeDataset, read_episode
from worldmodel.tokenizer import FrameTokenizer, TokenizerConfig, load_tokenizer
from worldmodel.train_video import VideoTraining, fit_to_data, train_video
from worldmodel.transformer import VideoTransformerConfig


def _square_frames(length: int, height: int, width: int, step: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A white 16-pixel square moving right over grey, and the square's left edge in each frame."""
    frames = np.full((length, height, width, 3), 60, np.uint8)
    lefts = (width - 16) // 2 - length + step * np.arange(length)
    for t, left in enumerate(lefts):
        frames[t, height // 2 - 8 : height // 2 + 8, left : left + 16] = 255
    return frames, lefts


def _write_mp4(path, frames, fps):
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, frames, plugin="FFMPEG", fps=fps, quality=10, macro_block_size=1)
    return path


def _write_gif(path, frames, durations_ms):
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=list(durations_ms), loop=0)
    return path


def _write_folder(folder, frames, names=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / (names[i] if names else f"frame{i + 1}.png"))
    return folder


def _centre_x(frame: np.ndarray) -> float:
    """Column of the bright square's centre, weighted by brightness above the background."""
    weight = np.clip(frame.astype(np.float32).mean(-1) - 60, 0, None).sum(0)
    return float((weight * np.arange(len(weight))).sum() / weight.sum())


def test_mp4_round_trip_keeps_every_frame_and_where_the_square_is(tmp_path):
    frames, _ = _square_frames(40, 96, 128)
    _write_mp4(tmp_path / "videos" / "run.mp4", frames, fps=20)
    summary = import_videos(tmp_path / "videos", tmp_path / "data", ImportSettings(min_frames=8, test_fraction=0))
    assert summary == {"inputs": 1, "imported": 1, "reused": 0, "skipped": [], "train": 1, "test": 0}
    episode = read_episode(tmp_path / "data" / "train" / "run.mp4.000.npz")
    assert episode.video.shape == (40, 64, 64, 3) and episode.actions.shape == (40, 0)
    expected = np.stack([square_resize(f, 64) for f in frames])
    assert np.abs(episode.video.astype(np.float32) - expected).mean() < 2.0  # H.264 at its best quality
    for decoded, source in zip(episode.video, expected):
        assert _centre_x(decoded) == pytest.approx(_centre_x(source), abs=0.5)
    manifest = DatasetManifest.load(tmp_path / "data")
    assert manifest.action_space is None and manifest.fps == 20 and manifest.tasks == ["videos"]
    assert manifest.episodes["train/run.mp4.000.npz"] == {
        "task": "videos", "policy": "expert", "source": "run.mp4", "source_frames": [0, 39], "fps": 20.0,
        "length": 40,
    }


def test_gymnasium_record_video_footage_imports_in_step_with_the_env(tmp_path):
    """Footage our writer never touched: RecordVideo (moviepy) at 128 pixels and every physics step (100 fps),
    resampled to 50 fps and 64 pixels, lands frame for frame on the env's own frames at action repeat 2."""
    actions = np.ones((20, 1), np.float32)  # full push: the cart moves further each frame
    recorded = RecordVideo(gym.wrappers.TimeLimit(envs.make("dmc:cartpole-swingup", size=128, action_repeat=1), 40),
                           str(tmp_path / "videos"), episode_trigger=lambda episode: True, disable_logger=True)
    recorded.reset(seed=3)
    for step in range(40):
        recorded.step(actions[step // 2])
    recorded.close()
    own_env = envs.make("dmc:cartpole-swingup", size=64, action_repeat=2)
    own = [own_env.reset(seed=3)[0]] + [own_env.step(action)[0] for action in actions]
    import_videos(tmp_path / "videos", tmp_path / "data", ImportSettings(fps=50, min_frames=2, test_fraction=0))
    (entry,) = DatasetManifest.load(tmp_path / "data").episodes.values()
    assert entry["fps"] == 50 and entry["source_frames"] == [0, 40] and entry["length"] == 21
    video = read_episode(next((tmp_path / "data" / "train").glob("*.npz"))).video.astype(np.float32)
    distance = np.abs(video[:, None] - np.stack(own)[None].astype(np.float32)).mean(axis=(2, 3, 4))
    assert np.diagonal(distance).max() < 3.6  # H.264 and resampling from 128 pixels
    assert all(distance[k, k] < distance[k, k - 2] for k in range(10, 21))  # in step: not a frame early or late


def test_gif_and_frame_folder_inputs_read_exactly_in_natural_order(tmp_path):
    frames = moving_square_video(12, 64, seed=0)
    _write_gif(tmp_path / "in" / "clip.gif", frames, [50] * 12)
    tall = np.stack([np.pad(f, ((16, 16), (0, 0), (0, 0))) for f in frames])  # 96 x 64: cropped back to 64 x 64
    _write_folder(tmp_path / "in" / "shots" / "take1", tall)  # frame1.png ... frame12.png: frame10 after frame2
    (tmp_path / "in" / "teco" / "train" / "0").mkdir(parents=True)  # TECO's layout: the video kept, actions not
    np.savez_compressed(tmp_path / "in" / "teco" / "train" / "0" / "3.npz", video=frames, actions=np.arange(12))
    settings = ImportSettings(min_frames=4, test_fraction=0, task="reach")
    assert import_videos(tmp_path / "in", tmp_path / "data", settings)["train"] == 3
    for name in ("clip.gif", "shots/take1", "teco/train/0/3.npz"):
        episode = read_episode(tmp_path / "data" / "train" / f"{name}.000.npz")
        np.testing.assert_array_equal(episode.video, frames)
        assert episode.actions.shape == (12, 0)
    manifest = DatasetManifest.load(tmp_path / "data")
    assert manifest.tasks == ["reach"] and manifest.fps == 20.0  # the GIF's 50 ms per frame; the folder has no rate
    assert manifest.episodes["train/shots/take1.000.npz"]["fps"] is None


def test_fps_resampling_takes_the_frame_on_screen_at_each_tick(tmp_path):
    frames, _ = _square_frames(60, 64, 64, step=1)
    _write_mp4(tmp_path / "in" / "a.mp4", frames, fps=30)
    _write_gif(tmp_path / "in" / "b.gif", frames[:3], [100, 300, 100])  # 0.5 s: 5 ticks at 10 fps
    summary = import_videos(tmp_path / "in", tmp_path / "data", ImportSettings(fps=10, min_frames=2, test_fraction=0))
    assert summary["train"] == 2
    a = read_episode(tmp_path / "data/train/a.mp4.000.npz").video
    assert len(a) == 20  # 2 s at 10 fps: every third frame, as --frame-skip 3 gives
    manifest = DatasetManifest.load(tmp_path / "data")
    assert manifest.episodes["train/a.mp4.000.npz"]["source_frames"] == [0, 57] and manifest.fps == 10
    b = read_episode(tmp_path / "data/train/b.gif.000.npz").video
    np.testing.assert_array_equal(b, frames[[0, 1, 1, 1, 2]])
    import_videos(tmp_path / "in" / "a.mp4", tmp_path / "every3", ImportSettings(frame_skip=3, test_fraction=0))
    np.testing.assert_array_equal(read_episode(tmp_path / "every3/train/a.mp4.000.npz").video, a)
    _write_folder(tmp_path / "frames" / "take", frames[:4])
    with pytest.raises(VideoImportError, match="take: it records no frame rate.*--source-fps"):
        import_videos(tmp_path / "frames", tmp_path / "nofps", ImportSettings(fps=10, min_frames=1))


def test_long_inputs_are_cut_and_short_ones_skipped_by_name(tmp_path):
    frames = moving_square_video(25, 64, seed=1)
    _write_gif(tmp_path / "in" / "long.gif", frames, [50] * 25)
    _write_gif(tmp_path / "in" / "short.gif", frames[:5], [50] * 5)
    with pytest.warns(UserWarning, match="short.gif: skipped, shorter than --min-frames 8"):
        summary = import_videos(tmp_path / "in", tmp_path / "data",
                                ImportSettings(min_frames=8, max_frames=10, test_fraction=0))
    assert summary["skipped"] == ["short.gif"] and summary["train"] == 2  # 10 + 10; the last 5 frames are dropped
    manifest = DatasetManifest.load(tmp_path / "data")
    assert manifest.episodes["train/long.gif.001.npz"]["source_frames"] == [10, 19]


def test_resume_skips_what_is_written_and_ends_as_an_uninterrupted_import(tmp_path, monkeypatch):
    for i in range(3):
        _write_gif(tmp_path / "in" / f"v{i}.gif", moving_square_video(10, 64, seed=i), [50] * 10)
    settings = ImportSettings(min_frames=4, max_frames=6, test_fraction=0.5)
    import_videos(tmp_path / "in", tmp_path / "whole", settings)

    real, written = import_module.write_episode, []

    def interrupted_in_the_second_input(path, *args, **kwargs):
        if len(written) == 3:  # v0's two episodes and v1's first are on disk
            raise KeyboardInterrupt
        written.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(import_module, "write_episode", interrupted_in_the_second_input)
    with pytest.raises(KeyboardInterrupt):
        import_videos(tmp_path / "in", tmp_path / "resumed", settings)
    monkeypatch.setattr(import_module, "write_episode", real)
    first = sorted((tmp_path / "resumed").rglob("*.npz"))
    assert len(first) == 3
    times = {path: path.stat().st_mtime_ns for path in first}
    summary = import_videos(tmp_path / "in", tmp_path / "resumed", settings)
    assert summary["reused"] == 1 and summary["imported"] == 2
    assert all(path.stat().st_mtime_ns == time for path, time in times.items())  # not rewritten
    whole, resumed = (
        sorted(p.relative_to(tmp_path / d) for p in (tmp_path / d).rglob("*.npz")) for d in ("whole", "resumed")
    )
    assert whole == resumed and len(whole) == 6
    for relative in whole:
        np.testing.assert_array_equal(read_episode(tmp_path / "whole" / relative).video,
                                      read_episode(tmp_path / "resumed" / relative).video)
    assert DatasetManifest.load(tmp_path / "whole") == DatasetManifest.load(tmp_path / "resumed")
    with pytest.raises(VideoImportError, match="other settings.*size 64 -> 32"):
        import_videos(tmp_path / "in", tmp_path / "resumed", dataclasses.replace(settings, size=32))


def test_split_is_a_stable_hash_of_the_name_and_seed():
    settings = ImportSettings(test_fraction=0.3, seed=7)
    names = [f"clip{i}.mp4" for i in range(60)]
    splits = assign_splits(names, settings, {})
    assert splits == assign_splits(names, settings, {})
    assert 8 <= list(splits.values()).count("test") <= 30
    more = assign_splits(names + [f"new{i}.mp4" for i in range(30)], settings, {})
    assert {name: more[name] for name in names} == splits  # adding inputs moves none
    assert assign_splits(names, dataclasses.replace(settings, seed=8), {}) != splits
    assert list(assign_splits(["a.mp4", "b.mp4"], ImportSettings(test_fraction=0.01), {}).values()).count("test") == 1
    assert set(assign_splits(["a.mp4", "b.mp4"], ImportSettings(test_fraction=0), {}).values()) == {"train"}


def test_unreadable_inputs_are_named_and_leave_nothing_behind(tmp_path):
    frames = moving_square_video(6, 64, seed=0)
    _write_gif(tmp_path / "in" / "a.gif", frames, [50] * 6)
    (tmp_path / "in" / "b.mp4").write_bytes(b"not a video" * 100)
    with pytest.raises(VideoImportError, match="b.mp4: cannot read it"):
        import_videos(tmp_path / "in", tmp_path / "data", ImportSettings(min_frames=2, test_fraction=0))
    assert not list((tmp_path / "data").rglob("b.mp4*")) and not list((tmp_path / "data").rglob("*.tmp"))

    folder = _write_folder(tmp_path / "mixed" / "take", frames[:5])
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "frame6.png")
    with pytest.raises(VideoImportError, match="take: frame frame6.png is 32x32, but frame1.png is 64x64"):
        import_videos(tmp_path / "mixed", tmp_path / "out2", ImportSettings(min_frames=1, max_frames=2))
    assert not list((tmp_path / "out2").rglob("*.npz")) and not list((tmp_path / "out2").rglob("*.tmp"))

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    with pytest.warns(UserWarning, match="notes.txt"), pytest.raises(VideoImportError, match="empty: no inputs"):
        import_videos(tmp_path / "empty", tmp_path / "out3")
    with pytest.raises(VideoImportError, match="notes.txt: unknown file type '.txt'"):
        import_videos(tmp_path / "empty" / "notes.txt", tmp_path / "out4")
    with pytest.raises(SystemExit, match="wm import-videos: error: .*b.mp4: cannot read it"):
        main(["import-videos", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "cli"), "--min-frames", "2"])


TOKENIZER = TokenizerConfig(
    image_size=32, base_channels=8, ch_mult=(1, 2, 2, 2), latent_dim=8, quantizer="vq",
    quantizer_kwargs={"codebook_size": 16},
)
TRANSFORMER = VideoTransformerConfig(vocab_size=16, code_shape=(4, 4), window=3, embed_dim=32, layers=2, heads=2)


def test_imported_footage_trains_an_action_free_model_and_scores_as_a_reward(tmp_path):
    for policy, seeds in (("expert", range(4)), ("random", range(10, 13))):
        for seed in seeds:
            _write_gif(tmp_path / policy / f"{seed}.gif", moving_square_video(12, 48, seed), [100] * 12)
        import_videos(tmp_path / policy, tmp_path / f"data-{policy}",
                      ImportSettings(size=32, min_frames=8, test_fraction=0.3, policy=policy, task="square",
                                     env_steps_per_frame=2))
    expert = tmp_path / "data-expert"
    torch.manual_seed(0)
    FrameTokenizer(TOKENIZER).save(tmp_path / "tok")
    tokenizer = load_tokenizer(tmp_path / "tok")
    manifest = DatasetManifest.load(expert)
    with pytest.raises(ValueError, match="action-free"):
        fit_to_data(TRANSFORMER, tokenizer, manifest, actions=True)
    with pytest.raises(ValueError, match="action_dropout 0.5 .* the dataset is action-free"):
        fit_to_data(dataclasses.replace(TRANSFORMER, action_dropout=0.5), tokenizer, manifest)
    config = fit_to_data(TRANSFORMER, tokenizer, manifest)
    assert config.action_kind is None
    training = VideoTraining(steps=3, batch_size=2, clip_length=6, warmup_steps=0, eval_every=100, eval_clips=2)
    summary = train_video(expert, tmp_path / "tok", tmp_path / "run", config, training)
    assert summary["step"] == 3 and np.isfinite(summary["bits_per_code"])
    cache = next((expert / "token_cache").iterdir())
    assert EpisodeDataset(cache, "train", 6, frames_key="codes")[0]["actions"].shape == (6, 0)

    model = tmp_path / "run" / "model"
    stats = calibrate_reward(model, expert)
    assert set(stats) == {"square"} and stats["square"]["std"] > 0
    report = evaluate_reward(model, [expert, tmp_path / "data-random"], tmp_path / "reward", split="test")
    assert {row["policy"] for row in report["by_policy"]} == {"expert", "random"}
    assert all(np.isfinite(e["viper_return"]) and np.isnan(e["true_return"]) for e in report["episodes"])
    assert np.isnan(report["correlations"]["square"]["spearman"])
    video_report = evaluate_video_model(model, [expert], tmp_path / "video", context=4, horizon=2, rollouts=1)
    assert video_report["likelihood"][0]["policy"] == "expert" and len(video_report["rollouts"]) == 1
    assert json.loads((tmp_path / "run" / "model" / "bundle.json").read_text())["action_space"] is None

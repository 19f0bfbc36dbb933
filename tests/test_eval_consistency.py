import math
from dataclasses import replace

import imageio
import numpy as np
import pytest
import torch

from tests.conftest import moving_square_video, randomize_weights
from tests.test_video_model import TOKENIZER, TRANSFORMER
from experiments.cli import main
from experiments.eval_consistency import (
    COPY_LAST, TOKENIZER_CEILING, Protocol, copy_last, evaluate_consistency, exact_match_psnr, frame_scores,
    revisit_mask,
)
from experiments.export_dataset import export_teco_layout
from experiments.presets import tokenizer_preset, video_preset
from experiments.rollout import NO_TRUTH_GREY, long_rollout
from experiments.videos import LABEL_HEIGHT, VideoWriter, save_video, side_by_side
from worldmodel.rollout import rollout
from worldmodel.episodes import DatasetManifest, write_episode
from worldmodel.metrics import psnr
from worldmodel.tokenizer import FrameTokenizer
from worldmodel.transformer import VideoTransformer
from worldmodel.video_model import VideoModel, VideoModelInfo

ACTIONS = 3
CONFIG = replace(TRANSFORMER, num_tasks=0, num_actions=ACTIONS, window=3)
SMALL = Protocol(context=6, horizon=5, fvd_context=3, fvd_length=10, late_from=3)


def _model(image_size: int = 32) -> VideoModel:
    torch.manual_seed(0)
    tokenizer = FrameTokenizer(replace(TOKENIZER, image_size=image_size))
    config = replace(CONFIG, code_shape=tokenizer.code_shape)
    info = VideoModelInfo(action_space={"type": "discrete", "n": ACTIONS})
    return VideoModel(tokenizer, randomize_weights(VideoTransformer(config)), info)


def _poses(length: int) -> np.ndarray:
    """Walk east for 6 frames, then come back (keeping heading 0, as if walking backwards), then jump away."""
    x = np.array([0, 1, 2, 3, 4, 5, 3.1, 2.2, 1.1, 9, 9, 9, 9], np.float32)[:length]
    return np.stack([x, np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)], axis=1)


@pytest.fixture
def posed_dataset(tmp_path):
    root = tmp_path / "data"
    for i in range(3):
        actions = np.random.default_rng(i).integers(ACTIONS, size=12)
        write_episode(root / "test" / f"ep{i}.npz", moving_square_video(12, 32, i), actions, poses=_poses(12))
    return root


def test_revisits_are_context_poses_other_than_the_last():
    poses = _poses(11)  # predicted frames 6-8 come back to x = 3, 2, 1 of context frames 3, 2, 1
    assert revisit_mask(poses, 6, 5, distance=0.5, degrees=30).tolist() == [True, True, True, False, False]
    turned = poses.copy()
    turned[7, 3] = math.radians(45)  # same place, looking elsewhere
    turned[8, 3] = 2 * math.pi - math.radians(10)  # the same view: headings wrap around
    assert revisit_mask(turned, 6, 5, distance=0.5, degrees=30).tolist() == [True, False, True, False, False]
    # at 2.5, frame 6 (x = 3.1) is also near the last context frame (x = 5), which copy-last already shows
    assert revisit_mask(poses, 6, 5, distance=2.5, degrees=30).tolist() == [False, True, True, False, False]


def test_scores_and_copy_last_on_known_cases():
    videos = np.stack([moving_square_video(8, 32, seed) for seed in (0, 1)])
    copied = copy_last(videos, None, None, 3, 5, None)
    assert copied.shape == (2, 5, 32, 32, 3) and (copied == videos[:, 2:3]).all()
    scores = frame_scores(videos[:, 3:], copied)
    np.testing.assert_allclose(scores["psnr"], psnr(videos[:, 3:], copied).numpy(), rtol=1e-6)
    exact = frame_scores(videos[:, :2], videos[:, :2])
    assert exact_match_psnr((32, 32, 3)) == pytest.approx(10 * math.log10(255**2 * 32 * 32 * 3))
    np.testing.assert_allclose(exact["psnr"], exact_match_psnr((32, 32, 3)), rtol=1e-6)
    np.testing.assert_allclose(exact["ssim"], 1.0, atol=1e-6)
    np.testing.assert_allclose(exact["lpips"], 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="late_from"):
        Protocol(horizon=5, late_from=6)


def test_with_window_keeps_the_weights_and_cuts_the_history():
    model = _model().transformer
    narrow = model.with_window(1)
    assert narrow.config.window == 1 and model.config.window == 3
    codes = torch.randint(16, (2, 6, 4, 4), generator=torch.Generator().manual_seed(0))
    actions = torch.randint(ACTIONS, (2, 6), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(narrow.log_prob(codes[:, :2], actions[:, :2]), model.log_prob(codes[:, :2], actions[:, :2]))
    assert not torch.allclose(narrow.log_prob(codes, actions)[:, 3:], model.log_prob(codes, actions)[:, 3:])
    with pytest.raises(ValueError, match="window"):
        model.with_window(0)


def test_continue_video_follows_the_videos_own_actions():
    model = _model()
    videos = np.stack([moving_square_video(9, 32, seed) for seed in (0, 1)])
    actions = torch.randint(ACTIONS, (2, 9), generator=torch.Generator().manual_seed(2))
    got = model.continue_video(videos, 4, 5, actions, generator=torch.Generator().manual_seed(3))
    codes = model.tokenizer.encode(videos[:, :4])
    expected = rollout(
        model.transformer, codes, 5, actions=actions[:, 3:8], context_actions=actions[:, :4],
        generator=torch.Generator().manual_seed(3),
    )
    assert torch.equal(got, model.tokenizer.decode(expected))
    with pytest.raises(ValueError, match="takes actions"):
        model.continue_video(videos, 4, 5)
    with pytest.raises(ValueError, match="cannot lead into frame 8"):
        model.continue_video(videos, 4, 5, actions[:, :7])


def test_frame_sampler_generates_what_continue_video_does():
    model = _model()
    videos = np.stack([moving_square_video(6, 32, seed) for seed in (0, 1)])
    actions = torch.randint(ACTIONS, (2, 6), generator=torch.Generator().manual_seed(2))
    expected = model.continue_video(videos, 3, 3, actions, generator=torch.Generator().manual_seed(4))
    sampler, generator = model.sampler(2), torch.Generator().manual_seed(4)
    for t in range(3):
        sampler.push(videos[:, t], None if t == 0 else actions[:, t - 1])
    frames = [sampler.sample(actions[:, t - 1], generator=generator) for t in range(3, 6)]
    assert torch.equal(torch.stack(frames, dim=1), expected)


def test_eval_consistency_tables_curves_videos_and_determinism(posed_dataset, tmp_path):
    _model().save(tmp_path / "model")
    kwargs = dict(protocol=SMALL, videos=3, fvd_videos=2, short_window=1, batch_size=2, seed=5, save_videos=1)
    report = evaluate_consistency(tmp_path / "model", posed_dataset, tmp_path / "a", **kwargs)
    again = evaluate_consistency(tmp_path / "model", posed_dataset, tmp_path / "b", **{**kwargs, "fvd_videos": 0})
    assert [{**r, "fvd": None} for r in report["results"]] == again["results"]  # the same samples for a seed
    jacobi = evaluate_consistency(
        tmp_path / "model", posed_dataset, tmp_path / "j", **{**kwargs, "fvd_videos": 0}, decoding="jacobi"
    )
    assert jacobi["results"] == again["results"] and jacobi["decoding"] == "jacobi"  # the same frames
    rows = {r["name"]: r for r in report["results"]}
    assert list(rows) == ["model", "model, window 1", COPY_LAST, TOKENIZER_CEILING]
    videos = np.stack([moving_square_video(12, 32, i) for i in range(3)])
    copied = np.repeat(videos[:, 5:6], 5, axis=1)
    expected = psnr(videos[:, 6:11], copied).numpy()
    assert rows[COPY_LAST]["means"]["psnr"] == pytest.approx(expected.mean(), rel=1e-5)
    assert rows[COPY_LAST]["late"]["psnr"] == pytest.approx(expected[:, 2:].mean(), rel=1e-5)
    assert rows[COPY_LAST]["revisit"]["psnr"] == pytest.approx(expected[:, :3].mean(), rel=1e-5)
    assert report["revisit_frames"] == 9
    for row in rows.values():
        assert len(row["curves"]["lpips"]) == 5 and row["fvd"] is not None and np.isfinite(row["fvd"])
    assert rows["model"]["means"] != rows["model, window 1"]["means"]
    tokenizer = VideoModel.load(tmp_path / "model").tokenizer
    reconstructed = tokenizer.decode(tokenizer.encode(videos[:, 6:11])).numpy()
    ceiling = psnr(videos[:, 6:11], reconstructed).mean().item()
    assert rows[TOKENIZER_CEILING]["means"]["psnr"] == pytest.approx(ceiling, rel=1e-5)
    model = VideoModel.load(tmp_path / "model")
    for name, window in [("model", CONFIG.window), ("model, window 1", 1)]:
        actions = torch.as_tensor(np.stack([np.random.default_rng(i).integers(ACTIONS, size=12) for i in range(3)]))
        log_probs = model.with_window(window).log_prob(videos[:, :11], actions[:, :11])[:, 6:]  # one batch pass
        bits = (-log_probs / (CONFIG.codes_per_frame * math.log(2))).numpy()
        expected_bits = {"all": bits.mean(), "late": bits[:, 2:].mean(), "revisits": bits[:, :3].mean(),
                         "elsewhere": bits[:, 3:].mean()}
        assert rows[name]["bits_per_code"] == pytest.approx(expected_bits, rel=1e-4)
    assert rows[COPY_LAST]["bits_per_code"] == {} and rows[TOKENIZER_CEILING]["bits_per_code"] == {}
    table = (tmp_path / "a" / "consistency.md").read_text()
    assert "| method | FVD | PSNR | SSIM | LPIPS |" in table and "| copy-last |" in table
    assert f"| model, window 1 | {rows['model, window 1']['bits_per_code']['all']:.3f} |" in table
    assert "9 predicted frames within 0.5 units" in table
    assert (tmp_path / "a" / "horizon_curves.png").stat().st_size > 0
    gif = imageio.mimread(tmp_path / "a" / "videos" / "video0.gif")
    assert len(gif) == 11 and gif[0].shape[1] == 5 * 2 * 32  # truth and 4 methods side by side, scale 2
    assert len(imageio.mimread(tmp_path / "a" / "videos" / "video0.mp4")) == 11
    with pytest.raises(ValueError, match="has the 40 frames"):
        evaluate_consistency(tmp_path / "model", posed_dataset, tmp_path / "c", replace(SMALL, horizon=34), videos=1, fvd_videos=0)


def _write_predictions(root, out, predict) -> None:
    """As a user's script would: one .npz per test video, at the video's path under the dataset."""
    for path in sorted((root / "test").rglob("*.npz")):
        target = out / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        np.savez(target, **predict(np.load(path)["video"]))


def test_predictions_from_files_score_as_the_frames_they_hold(posed_dataset, tmp_path):
    copied, oracle = tmp_path / "copied", tmp_path / "oracle"
    _write_predictions(posed_dataset, copied, lambda video: {"video": np.repeat(video[5:6], 5, axis=0)})
    _write_predictions(posed_dataset, oracle, lambda video: {"video": video, "fvd_video": video[3:10]})
    kwargs = dict(protocol=SMALL, videos=3, fvd_videos=2, batch_size=2, save_videos=1)
    report = evaluate_consistency(None, posed_dataset, tmp_path / "a", **kwargs,
                                  predictions={"copied": copied, "oracle": oracle})
    rows = {r["name"]: r for r in report["results"]}
    assert list(rows) == ["copied", "oracle", COPY_LAST]  # no model: no short window, no tokenizer row
    for part in ("means", "late", "revisit", "curves"):
        assert rows["copied"][part] == rows[COPY_LAST][part]  # the same frames, read from files
    assert rows["copied"]["fvd"] is None and rows[COPY_LAST]["fvd"] is not None  # no fvd_video written
    assert rows["oracle"]["means"]["psnr"] == pytest.approx(exact_match_psnr((32, 32, 3)))
    assert rows["oracle"]["means"]["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert rows["oracle"]["fvd"] == pytest.approx(0.0, abs=1e-2)  # the real videos themselves
    assert report["model"] is None and report["predictions"] == {"copied": str(copied), "oracle": str(oracle)}

    first = copied / "test" / "ep0.npz"
    np.savez(first, video=np.zeros((4, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="ep0.npz: 'video' has 4 frames; expected the 5 predicted"):
        evaluate_consistency(None, posed_dataset, tmp_path / "b", **kwargs, predictions={"copied": copied})
    np.savez(first, video=np.zeros((5, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="must be uint8 frames of shape"):
        evaluate_consistency(None, posed_dataset, tmp_path / "b", **kwargs, predictions={"copied": copied})
    first.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match="ep0.npz: unreadable predictions file"):
        evaluate_consistency(None, posed_dataset, tmp_path / "b", **kwargs, predictions={"copied": copied})
    first.unlink()
    with pytest.raises(FileNotFoundError, match="no predictions for test video test/ep0.npz"):
        evaluate_consistency(None, posed_dataset, tmp_path / "b", **kwargs, predictions={"copied": copied})
    with pytest.raises(ValueError, match="share a row"):
        evaluate_consistency(None, posed_dataset, tmp_path / "b", **kwargs, predictions={COPY_LAST: oracle})
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate_consistency(None, posed_dataset, tmp_path / "b", **kwargs)


def test_export_writes_teco_layout_that_evaluates_as_its_source(posed_dataset, tmp_path):
    DatasetManifest("dmlab", ["maze"], {"type": "discrete", "n": ACTIONS},
                    episodes={"test/ep1.npz": {"policy": "expert"}}).save(posed_dataset)
    exported = tmp_path / "teco"
    main(["export-dataset", "--data", str(posed_dataset), "--out", str(exported)])
    files = [path.relative_to(exported).as_posix() for path in sorted(exported.rglob("*.npz"))]
    assert files == ["test/0000/000000.npz", "test/0000/000001.npz", "test/0000/000002.npz"]
    with np.load(exported / files[1]) as arrays:
        assert sorted(arrays.files) == ["actions", "poses", "video"]
        source = np.load(posed_dataset / "test" / "ep1.npz")
        for key in arrays.files:
            np.testing.assert_array_equal(arrays[key], source[key])
    assert DatasetManifest.load(exported).episodes == {"test/0000/000001.npz": {"policy": "expert"}}
    assert export_teco_layout(posed_dataset, exported)["episodes"]["test/0000/000001.npz"] == "test/ep1.npz"
    _model().save(tmp_path / "model")
    kwargs = dict(protocol=SMALL, videos=3, fvd_videos=0, batch_size=2, save_videos=0, seed=1)
    ours = evaluate_consistency(tmp_path / "model", posed_dataset, tmp_path / "a", **kwargs)
    theirs = evaluate_consistency(tmp_path / "model", exported, tmp_path / "b", **kwargs)
    assert ours["results"] == theirs["results"]  # the same videos in the same order, the same samples


def test_long_rollout_from_a_dataset_runs_past_its_end(posed_dataset, tmp_path):
    _model().save(tmp_path / "model")
    report = long_rollout(tmp_path / "model", tmp_path / "roll", frames=10, context=4, data=posed_dataset, episode=1, seed=0)
    assert report["frames_with_truth"] == 12 and report["generated_frames"] == 10
    assert report["generation_frames_per_second"] > 0
    frames = imageio.mimread(tmp_path / "roll" / "rollout.gif")
    assert len(frames) == 14 and frames[0].shape[:2] == (2 * (32 + LABEL_HEIGHT), 2 * 2 * 32)
    truth = frames[-1][2 * LABEL_HEIGHT :, : 2 * 32, :3]
    assert np.abs(truth.astype(int) - NO_TRUTH_GREY).max() <= 2  # the episode ended: a grey panel
    assert len(imageio.mimread(tmp_path / "roll" / "rollout.mp4")) == 14
    jacobi = long_rollout(tmp_path / "model", tmp_path / "jacobi", frames=10, context=4, data=posed_dataset,
                          episode=1, seed=0, decoding="jacobi")
    np.testing.assert_array_equal(imageio.mimread(tmp_path / "jacobi" / "rollout.gif")[-1], frames[-1])
    assert report["model_steps_per_frame"] == 17 and 1 <= jacobi["model_steps_per_frame"] <= 17
    with pytest.raises(ValueError, match="ends after 12 frames"):
        long_rollout(tmp_path / "model", tmp_path / "roll2", frames=2, context=20, data=posed_dataset)
    with pytest.raises(ValueError, match="episode 7 does not exist"):
        long_rollout(tmp_path / "model", tmp_path / "roll2", frames=2, data=posed_dataset, episode=7)


def test_long_rollout_from_a_live_env(tmp_path):
    _model(image_size=64).save(tmp_path / "model")
    report = long_rollout(tmp_path / "model", tmp_path / "roll", frames=3, context=2, env="dmlab:maze", policy="expert")
    assert report["frames_with_truth"] == 5 and "dmlab:maze" in report["source"]
    assert len(imageio.mimread(tmp_path / "roll" / "rollout.gif")) == 5
    with pytest.raises(ValueError, match="exactly one context source"):
        long_rollout(tmp_path / "model", tmp_path / "x", frames=1)


def test_video_writer_is_atomic_and_side_by_side_labels(tmp_path):
    frames = np.stack([moving_square_video(4, 32, 0), moving_square_video(4, 32, 1)])
    joined = side_by_side(list(frames), ["a", "b"], scale=2)
    assert joined.shape == (4, 2 * (32 + LABEL_HEIGHT), 2 * 64, 3)
    assert (joined[:, 2 * LABEL_HEIGHT :, : 2 * 32] == frames[0].repeat(2, 1).repeat(2, 2)).all()
    paths = save_video(np.zeros((3, 31, 33, 3), np.uint8), [tmp_path / "odd.mp4"], fps=10)
    assert imageio.mimread(paths[0])[0].shape == (32, 34, 3)  # padded to even sides for H.264
    with pytest.raises(RuntimeError), VideoWriter([tmp_path / "broken.gif"], fps=10) as writer:
        writer.append(frames[0, 0])
        raise RuntimeError("interrupted")
    assert list(tmp_path.glob("*broken*")) == []
    with pytest.raises(ValueError, match="must end in"):
        VideoWriter([tmp_path / "x.avi"], fps=10)
    with pytest.raises(ValueError, match="one shape"):
        side_by_side([frames[0], frames[0, :, :16]])


def test_cli_rejects_a_bad_compare_argument(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["eval-consistency", "--model", "m", "--data", "d", "--out", "o", "--compare", "no-equals-sign"])
    assert "expected NAME=PATH" in capsys.readouterr().err


def test_the_scaled_protocol_keeps_tecos_proportions_and_single_counts_override_it(monkeypatch, tmp_path):
    import experiments.eval_consistency as consistency

    teco, scaled = consistency.PROTOCOLS["teco"], consistency.PROTOCOLS["scaled"]
    assert teco == Protocol() and scaled.context + scaled.horizon == scaled.fvd_length == 100
    assert abs(scaled.context / scaled.fvd_length - teco.context / teco.fvd_length) < 0.01
    assert abs(scaled.fvd_context / scaled.fvd_length - teco.fvd_context / teco.fvd_length) < 0.01
    seen = []
    monkeypatch.setattr(consistency, "evaluate_consistency",
                        lambda model, data, out, protocol, *args: seen.append(protocol) or {"table": ""})
    base = ["eval-consistency", "--model", "m", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    main(base + ["--protocol", "scaled", "--late-from", "40"])
    main(base)
    assert seen == [replace(scaled, late_from=40), teco]


def test_long_presets_see_the_whole_teco_context():
    """The `long` model reaches back over all 144 context frames, trains on clips that long, at 4x4 codes."""
    assert FrameTokenizer(tokenizer_preset("long")).code_shape == (4, 4)
    preset = video_preset("long")
    assert preset.transformer.receptive_field >= Protocol().context
    assert preset.clip_length >= Protocol().context

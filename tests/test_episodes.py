import json
import zipfile

import numpy as np
import pytest

from worldmodel.episodes import (
    DatasetManifest,
    EpisodeDataset,
    EpisodeFormatError,
    read_episode,
    write_episode,
)


def _video(t: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(t, 8, 8, 3), dtype=np.uint8)


def test_round_trip_is_memory_mapped(tmp_path):
    video, actions = _video(12), np.random.randn(12, 2).astype(np.float32)
    rewards = np.arange(12, dtype=np.float32)
    path = write_episode(tmp_path / "ep.npz", video, actions, rewards, task_id=3)
    episode = read_episode(path)
    assert isinstance(episode.video, np.memmap)
    np.testing.assert_array_equal(episode.video, video)
    np.testing.assert_array_equal(episode.actions, actions)
    np.testing.assert_array_equal(episode.rewards, rewards)
    assert episode.task_id == 3 and len(episode) == 12
    assert not list(tmp_path.glob(".*.tmp")), "atomic write left its temporary file behind"


def test_poses_round_trip_and_are_optional(tmp_path):
    poses = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    with_poses = read_episode(write_episode(tmp_path / "a.npz", _video(6), np.arange(6), poses=poses))
    np.testing.assert_array_equal(with_poses.poses, poses)
    assert read_episode(write_episode(tmp_path / "b.npz", _video(6), np.arange(6))).poses is None


def test_reads_teco_style_compressed_files(tmp_path):
    video = _video(9)
    (tmp_path / "train" / "0").mkdir(parents=True)
    np.savez_compressed(tmp_path / "train" / "0" / "3.npz", video=video, actions=np.arange(9))
    dataset = EpisodeDataset(tmp_path, "train", clip_length=3)
    assert len(dataset) == 7
    np.testing.assert_array_equal(dataset[6]["video"], video[6:9])
    assert dataset[0]["task_id"] == 0


def test_action_free_episodes_store_no_actions_and_read_as_empty_actions(tmp_path):
    video = _video(7)
    path = write_episode(tmp_path / "train" / "a.npz", video, None)
    with zipfile.ZipFile(path) as archive:
        assert "actions.npy" not in archive.namelist()
    episode = read_episode(path)
    assert episode.actions.shape == (7, 0) and episode.actions.dtype == np.float32
    write_episode(tmp_path / "train" / "b.npz", episode.video, episode.actions)  # what was read writes back
    np.savez_compressed(tmp_path / "train" / "c.npz", video=video)  # TECO-style, video only
    dataset = EpisodeDataset(tmp_path, "train", clip_length=3)
    assert dataset.sample(4, np.random.default_rng(0))["actions"].shape == (4, 3, 0)
    assert dataset.sample_contexts(2, np.random.default_rng(0))["actions"].shape == (2, 3, 0)
    DatasetManifest("videos", ["clips"], None).save(tmp_path)
    assert DatasetManifest.load(tmp_path).action_space is None


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_episode(tmp_path / "ep.npz", _video(3), None)
    assert not any(tmp_path.iterdir())


def test_clips_with_frame_skip_cover_every_start(tmp_path):
    write_episode(tmp_path / "train" / "a.npz", _video(10), np.arange(10))
    write_episode(tmp_path / "train" / "b.npz", _video(4, 1), np.arange(100, 104))
    dataset = EpisodeDataset(tmp_path, "train", clip_length=3, frame_skip=2)
    # a clip spans (3-1)*2+1 = 5 frames: 6 starts in a, none in b
    assert len(dataset) == 6
    np.testing.assert_array_equal(dataset[5]["actions"], [5, 7, 9])
    batch = dataset.sample(4, np.random.default_rng(0))
    assert batch["video"].shape == (4, 3, 8, 8, 3) and batch["video"].dtype == np.uint8
    with pytest.raises(IndexError):
        dataset[6]


def test_contexts_end_at_every_frame_and_are_padded_at_an_episode_start(tmp_path):
    for episode, length in enumerate((5, 3)):  # frame t of episode e is filled with 10 * e + t
        video = np.broadcast_to((10 * episode + np.arange(length))[:, None, None, None], (length, 8, 8, 3))
        write_episode(tmp_path / "train" / f"{episode}.npz", video.astype(np.uint8), 10 * episode + np.arange(length))
    contexts = EpisodeDataset(tmp_path, "train", clip_length=3).sample_contexts(400, np.random.default_rng(0))
    assert contexts["video"].shape == (400, 3, 8, 8, 3) and contexts["lengths"].dtype == np.int64
    ends = set()
    for video, actions, length in zip(contexts["video"], contexts["actions"], contexts["lengths"]):
        last = int(video[-1, 0, 0, 0])
        frame = last % 10
        assert length == min(3, frame + 1)
        expected = np.concatenate([[last - length + 1] * (3 - length), last - length + 1 + np.arange(length)])
        np.testing.assert_array_equal(video[:, 0, 0, 0], expected)  # the padding repeats the first real frame
        np.testing.assert_array_equal(actions, expected)
        ends.add(last)
    assert ends == {0, 1, 2, 3, 4, 10, 11, 12}  # every frame of every episode, the first ones included
    starts = EpisodeDataset(tmp_path, "train", clip_length=3).sample_contexts(40, np.random.default_rng(0), True)
    assert (starts["lengths"] == 1).all() and set(starts["video"][:, :, 0, 0, 0].ravel().tolist()) == {0, 10}


def test_clip_rewards_sum_over_skipped_frames_and_terminals_mark_a_terminated_end(tmp_path):
    rewards = np.arange(10, dtype=np.float32)
    write_episode(tmp_path / "train" / "a.npz", _video(10), np.arange(10), rewards, terminated=True)
    write_episode(tmp_path / "train" / "b.npz", _video(10), np.arange(10), rewards)  # cut by a time limit
    assert read_episode(tmp_path / "train" / "a.npz").terminated
    assert not read_episode(tmp_path / "train" / "b.npz").terminated
    dataset = EpisodeDataset(tmp_path, "train", clip_length=3, frame_skip=2)
    first, last = dataset[0], dataset[5]  # episode a from frames 0 and 5
    np.testing.assert_array_equal(first["rewards"], [0 + 1, 2 + 3, 4 + 5])
    np.testing.assert_array_equal(last["rewards"], [5 + 6, 7 + 8, 9])
    assert first["terminals"].tolist() == [False, False, False] and last["terminals"].tolist() == [False, False, True]
    assert not dataset[11]["terminals"].any()  # episode b's end is a truncation
    write_episode(tmp_path / "train" / "c.npz", _video(10), np.arange(10))  # no rewards recorded
    mixed = EpisodeDataset(tmp_path, "train", clip_length=3).sample(64, np.random.default_rng(0))
    assert "rewards" not in mixed and mixed["terminals"].shape == (64, 3)


def test_no_clip_fits_is_an_error(tmp_path):
    write_episode(tmp_path / "train" / "a.npz", _video(3), np.arange(3))
    with pytest.raises(ValueError, match="frames a clip"):
        EpisodeDataset(tmp_path, "train", clip_length=4)


def test_missing_split_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="test"):
        EpisodeDataset(tmp_path, "test")


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"video": _video(5), "actions": np.arange(4)}, "5 frames but 4 actions"),
        ({"video": _video(5).astype(np.float32), "actions": np.arange(5)}, "dtype is float32"),
        ({"video": _video(5)[..., :2], "actions": np.arange(5)}, "expected \\(T, H, W, 3\\)"),
        ({"video": _video(5), "actions": np.zeros((5, 2), np.float64)}, "actions dtype"),
        ({"video": _video(5), "actions": np.arange(5), "rewards": np.zeros(4)}, "rewards shape"),
        ({"video": _video(5), "actions": np.arange(5), "poses": np.zeros((5, 3), np.float32)}, "poses are"),
        ({"video": _video(5), "actions": np.arange(5), "poses": np.zeros((5, 4))}, "poses are float64"),
        ({"actions": np.arange(5)}, "missing array 'video'"),
    ],
)
def test_inconsistent_files_name_file_and_problem(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(EpisodeFormatError, match=message) as info:
        read_episode(path)
    assert "bad.npz" in str(info.value)


def test_truncated_and_corrupt_files_raise(tmp_path):
    path = write_episode(tmp_path / "ep.npz", _video(50), np.arange(50))
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(EpisodeFormatError, match="cut.npz"):
        read_episode(tmp_path / "cut.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(EpisodeFormatError, match="junk.npz"):
        read_episode(tmp_path / "junk.npz")


def test_pickled_object_arrays_are_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, video=_video(2), actions=np.array([{}, {}], dtype=object))
    with pytest.raises(EpisodeFormatError, match="obj.npz"):
        read_episode(path)


def test_writing_bad_episode_raises_before_touching_disk(tmp_path):
    with pytest.raises(EpisodeFormatError):
        write_episode(tmp_path / "ep.npz", _video(3), np.arange(2))
    assert not any(tmp_path.iterdir())


def test_manifest_round_trip_and_corruption(tmp_path):
    manifest = DatasetManifest("dmc", ["cartpole-swingup"], {"type": "box", "shape": [1]}, 2, 50.0)
    manifest.episodes["train/a.npz"] = {"return": 812.5}
    manifest.save(tmp_path)
    assert DatasetManifest.load(tmp_path) == manifest
    assert json.loads((tmp_path / "manifest.json").read_text())["tasks"] == ["cartpole-swingup"]
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(EpisodeFormatError, match="manifest"):
        DatasetManifest.load(tmp_path)


def test_stored_members_are_not_compressed(tmp_path):
    path = write_episode(tmp_path / "ep.npz", _video(4), np.arange(4))
    with zipfile.ZipFile(path) as archive:
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.conftest import moving_square_video
from worldmodel import train_video as train_video_module
from worldmodel import training_run
from worldmodel.checkpoint import CheckpointError, fingerprint, load_checkpoint
from worldmodel.episodes import DatasetManifest, write_episode
from worldmodel.token_cache import TokenCacheError, build_token_cache, default_cache_dir, tokenizer_fingerprint
from worldmodel.tokenizer import FrameTokenizer, TokenizerConfig
from worldmodel.train_video import VideoTraining, bits_per_dim, fit_to_data, mixed_batch, train_video
from worldmodel.transformer import VideoTransformer, VideoTransformerConfig
from worldmodel.video_model import VideoModel

TOKENIZER = TokenizerConfig(
    image_size=32, base_channels=8, ch_mult=(1, 2, 2, 2), latent_dim=8, quantizer="vq",
    quantizer_kwargs={"codebook_size": 16},
)
TRANSFORMER = VideoTransformerConfig(
    vocab_size=16, code_shape=(4, 4), window=3, embed_dim=32, layers=2, heads=2, num_actions=16
)


def _tokenizer(path, seed: int = 0):
    torch.manual_seed(seed)
    FrameTokenizer(TOKENIZER).save(path)
    return path


def _training(steps: int, **overrides) -> VideoTraining:
    # constant learning rate, so a run cut short and resumed sees the same schedule
    settings = dict(
        steps=steps, batch_size=4, clip_length=6, lr=3e-3, warmup_steps=0, min_lr_fraction=1.0,
        log_every=2, eval_every=4, checkpoint_every=3, eval_clips=4,
    )
    return VideoTraining(**{**settings, **overrides})


def test_training_lowers_the_loss_and_writes_metrics_checkpoint_and_bundle(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    summary = train_video(tiny_dataset, _tokenizer(tmp_path / "tok"), run, TRANSFORMER, _training(40, eval_every=100))
    assert summary["step"] == 40 and summary["eval_clips"] == 4
    assert summary["bits_per_code"] < 0.6 * math.log2(16)  # an untrained model scores about log2(vocab)
    assert summary["bits_per_dim"] == pytest.approx(summary["bits_per_code"] * 16 / (32 * 32 * 3))
    assert summary["log_prob_per_frame"] == pytest.approx(-summary["bits_per_code"] * math.log(2) * 16)
    assert json.loads((run / "eval.json").read_text())["step"] == 40
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert VideoTransformer.load(run / "checkpoint").config == TRANSFORMER
    model = VideoModel.load(run / "model")
    assert model.window == 3 and model.info.frame_skip == 1
    frames = torch.zeros(1, 3, 32, 32, 3, dtype=torch.uint8)
    assert model.log_prob(frames, torch.tensor([[1, 2]])).shape == (1, 3)


def test_world_model_heads_learn_rewards_and_terminations(tmp_path):
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for i, split in enumerate(["train"] * 4 + ["test"]):
        actions = rng.integers(16, size=12)
        rewards = (actions % 2).astype(np.float32) * 3.0  # the reward of a step follows from its action
        write_episode(root / split / f"ep{i}.npz", moving_square_video(12, 32, i), actions, rewards, terminated=i % 2 == 0)
    config = dataclasses.replace(TRANSFORMER, reward_head=True, continue_head=True)
    summary = train_video(root, _tokenizer(tmp_path / "tok"), tmp_path / "run", config, _training(150, eval_every=1000))
    assert summary["reward_mae"] < 0.5  # guessing the mean would be off by 1.5 on average
    assert summary["continue_accuracy"] == 1.0
    model = VideoModel.load(tmp_path / "run" / "model")
    assert model.transformer.reward_head is not None and model.transformer.continue_head is not None
    plain = tmp_path / "plain"
    for i, split in enumerate(["train", "test"]):
        write_episode(plain / split / f"ep{i}.npz", moving_square_video(12, 32, i), np.arange(12))
    with pytest.raises(ValueError, match="record no rewards"):
        train_video(plain, tmp_path / "tok", tmp_path / "run2", config, _training(2))


def _dataset(root, seeds, actions: bool = True, rewards: bool = True, frame_skip: int = 1, inverted: bool = False):
    """Squares drifting over a gradient (``inverted``: in inverted colours), the last episode held out."""
    space = {"type": "discrete", "n": 16} if actions else None
    DatasetManifest("test", ["squares"], space, frame_skip=frame_skip).save(root)
    for i, seed in enumerate(seeds):
        split = "test" if i == len(seeds) - 1 else "train"
        video = moving_square_video(16, 32, seed)
        write_episode(root / split / f"ep{seed}.npz", 255 - video if inverted else video,
                      np.arange(16) if actions else np.zeros((16, 0), np.float32),
                      np.ones(16, np.float32) if rewards else None)
    return root


def test_a_mixed_in_dataset_teaches_what_the_primary_never_shows(tmp_path):
    """Play in one palette, expert footage in another (no actions, no rewards): with a quarter of each batch from
    the footage, the model learns the footage's frames too, and its reward head still learns from the play alone."""
    play = _dataset(tmp_path / "play", [0, 1, 2, 3])
    footage = _dataset(tmp_path / "expert", [10, 11, 12, 13], actions=False, rewards=False, inverted=True)
    tokenizer = _tokenizer(tmp_path / "tok")
    config = dataclasses.replace(TRANSFORMER, reward_head=True)
    kwargs = dict(steps=150, eval_every=1000)
    alone = train_video(play, tokenizer, tmp_path / "alone", config, _training(**kwargs))
    mixed = train_video(play, tokenizer, tmp_path / "mixed", config, _training(**kwargs, mix_fraction=0.25),
                        mix_root=footage)
    assert mixed["cache"]["mix"] == {"encoded": 4, "reused": 0} and "mix" not in alone["cache"]
    held_out = torch.as_tensor(255 - moving_square_video(16, 32, 13))[None]  # the footage's test episode
    scores = {name: VideoModel.load(tmp_path / name / "model").log_prob(held_out).sum().item()
              for name in ("alone", "mixed")}
    assert scores["mixed"] > scores["alone"] + 30  # nats over 16 frames (49 measured)
    assert mixed["bits_per_code"] < 0.6 * math.log2(16) and mixed["reward_mae"] < 0.3  # the play still learnt
    with pytest.raises(ValueError, match="go together"):
        train_video(play, tokenizer, tmp_path / "x", config, _training(1, mix_fraction=0.25))
    with pytest.raises(ValueError, match="mix_fraction must be in"):
        _training(1, mix_fraction=1.0)
    for other, named in [(_dataset(tmp_path / "skip", [5, 6], frame_skip=2), "2 env steps per frame"),
                         (tmp_path / "plain", "needs both manifests")]:
        if named == "needs both manifests":
            write_episode(other / "train" / "ep.npz", moving_square_video(16, 32, 7), np.arange(16))
        with pytest.raises(ValueError, match=named):
            train_video(play, tokenizer, tmp_path / "x", config, _training(1, mix_fraction=0.25), mix_root=other)


def test_mixed_batches_mask_what_the_mix_did_not_record():
    primary = {"codes": np.zeros((2, 3, 4, 4), np.uint8), "actions": np.ones((2, 3), np.int64),
               "rewards": np.ones((2, 3), np.float32), "task_id": np.zeros(2, np.int64)}
    footage = {"codes": np.ones((1, 3, 4, 4), np.uint8), "actions": np.zeros((1, 3, 0), np.float32),
               "task_id": np.zeros(1, np.int64)}
    batch, actions_known, rewards_known = mixed_batch(primary, footage)
    assert batch["actions"].tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 0]] and batch["codes"][2].min() == 1
    assert actions_known.tolist() == rewards_known.tolist() == [True, True, False]
    recorded = {**footage, "actions": np.ones((1, 3), np.int64), "rewards": np.ones((1, 3), np.float32)}
    assert mixed_batch(primary, recorded)[2].tolist() == [True, True, True]
    assert mixed_batch(primary, recorded, mix_rewards=False)[2].tolist() == [True, True, False]  # another reward
    model = VideoTransformer(dataclasses.replace(TRANSFORMER, reward_head=True)).eval()
    codes = torch.randint(16, (3, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    actions, rewards = torch.randint(16, (3, 3)), torch.rand(3, 3)
    known = torch.tensor([True, True, False])
    masked = model.losses(codes, actions, None, rewards, None, actions_known=known, rewards_known=known)
    other_actions = actions.clone()
    other_actions[2] = (actions[2] + 1) % 16
    assert model.losses(codes, other_actions, None, rewards, None, known, known).codes == masked.codes  # ignored
    assert model.losses(codes, other_actions, None, rewards).codes != masked.codes  # else they count
    subset = model.losses(codes[:2], actions[:2], None, rewards[:2])
    torch.testing.assert_close(masked.reward, subset.reward)  # the third clip's rewards are not learnt


def test_resumed_run_equals_uninterrupted_run(tiny_dataset, tmp_path):
    tokenizer = _tokenizer(tmp_path / "tok")
    straight = train_video(tiny_dataset, tokenizer, tmp_path / "straight", TRANSFORMER, _training(8))
    train_video(tiny_dataset, tokenizer, tmp_path / "resumed", TRANSFORMER, _training(5))
    resumed = train_video(tiny_dataset, tokenizer, tmp_path / "resumed", TRANSFORMER, _training(8), resume=True)
    assert resumed["step"] == 8 and resumed["weights_sha256"] == straight["weights_sha256"]
    a, _ = load_checkpoint(tmp_path / "straight" / "checkpoint")
    b, _ = load_checkpoint(tmp_path / "resumed" / "checkpoint")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_run_stopped_by_its_time_budget_resumes_to_the_uninterrupted_run(tiny_dataset, tmp_path, monkeypatch):
    """A decaying schedule, and a clock that ticks one second per reading (see test_train_tokenizer)."""
    seconds = iter(range(10**6))
    monkeypatch.setattr(training_run, "clock", lambda: float(next(seconds)))
    tokenizer = _tokenizer(tmp_path / "tok")
    decaying = _training(6, min_lr_fraction=0.1, eval_every=100)
    straight = train_video(tiny_dataset, tokenizer, tmp_path / "straight", TRANSFORMER, decaying)
    budget = dataclasses.replace(decaying, max_minutes=2.5 / 60)
    assert train_video(tiny_dataset, tokenizer, tmp_path / "cut", TRANSFORMER, budget)["step"] == 3
    resumed = train_video(tiny_dataset, tokenizer, tmp_path / "cut", TRANSFORMER, decaying, resume=True)
    assert resumed["step"] == 6 and resumed["weights_sha256"] == straight["weights_sha256"]


def test_token_cache_is_built_once_and_tied_to_its_tokenizer(tiny_dataset, tmp_path):
    tokenizer = _tokenizer(tmp_path / "tok")
    first = train_video(tiny_dataset, tokenizer, tmp_path / "a", TRANSFORMER, _training(1))
    again = train_video(tiny_dataset, tokenizer, tmp_path / "b", TRANSFORMER, _training(1))
    assert first["cache"] == {"encoded": 4, "reused": 0} and again["cache"] == {"encoded": 0, "reused": 4}

    other = _tokenizer(tmp_path / "other", seed=1)
    rebuilt = train_video(tiny_dataset, other, tmp_path / "c", TRANSFORMER, _training(1))
    assert rebuilt["cache"] == {"encoded": 4, "reused": 0}  # its own cache directory
    own_cache = default_cache_dir(tiny_dataset, tokenizer_fingerprint(FrameTokenizer.load(tokenizer)))
    with pytest.raises(TokenCacheError, match="made by tokenizer"):
        build_token_cache(tiny_dataset, FrameTokenizer.load(other), own_cache)
    with pytest.raises(CheckpointError, match="codes of tokenizer"):
        train_video(tiny_dataset, other, tmp_path / "a", TRANSFORMER, _training(2), resume=True)


def test_bad_configurations_are_refused_up_front(tiny_dataset, tmp_path):
    tokenizer = _tokenizer(tmp_path / "tok")
    wrong_vocab = VideoTransformerConfig.from_dict({**TRANSFORMER.to_dict(), "vocab_size": 32})
    with pytest.raises(ValueError, match="transformer models"):
        train_video(tiny_dataset, tokenizer, tmp_path / "run", wrong_vocab, _training(1))
    with_tasks = VideoTransformerConfig.from_dict({**TRANSFORMER.to_dict(), "num_tasks": 2})
    train_video(tiny_dataset, tokenizer, tmp_path / "run", TRANSFORMER, _training(1))
    with pytest.raises(FileExistsError, match="--resume"):
        train_video(tiny_dataset, tokenizer, tmp_path / "run", TRANSFORMER, _training(2))
    with pytest.raises(CheckpointError, match="transformer config"):
        train_video(tiny_dataset, tokenizer, tmp_path / "run", with_tasks, _training(2), resume=True)


def test_a_finished_run_run_again_returns_its_results_without_evaluating_again(tiny_dataset, tmp_path, monkeypatch):
    tokenizer = _tokenizer(tmp_path / "tok")
    finished = train_video(tiny_dataset, tokenizer, tmp_path / "run", TRANSFORMER, _training(3))

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was evaluated again")

    monkeypatch.setattr(train_video_module, "evaluate_transformer", refuse)
    again = train_video(tiny_dataset, tokenizer, tmp_path / "run", TRANSFORMER, _training(3), resume=True)
    assert again == json.loads(json.dumps(finished))
    with pytest.raises(AssertionError, match="evaluated again"):  # more steps asked for: it trains and evaluates
        train_video(tiny_dataset, tokenizer, tmp_path / "run", TRANSFORMER, _training(4), resume=True)


def test_a_run_from_before_an_option_existed_resumes_at_its_default(tiny_dataset, tmp_path):
    tokenizer = _tokenizer(tmp_path / "tok")
    train_video(tiny_dataset, tokenizer, tmp_path / "run", TRANSFORMER, _training(3))
    saved = tmp_path / "run" / "checkpoint" / "config.json"
    config = json.loads(saved.read_text())
    for newer in ("masked_decoding", "code_levels"):
        del config["config"][newer]
    saved.write_text(json.dumps(config))
    assert train_video(tiny_dataset, tokenizer, tmp_path / "run", TRANSFORMER, _training(5), resume=True)["step"] == 5


def test_a_factorized_head_predicts_fsq_codes_digit_by_digit(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    fsq = dataclasses.replace(TOKENIZER, latent_dim=3, quantizer="fsq", quantizer_kwargs={"levels": [5, 3, 2]})
    FrameTokenizer(fsq).save(tmp_path / "fsq")
    fitted = fit_to_data(TRANSFORMER, FrameTokenizer(fsq), None, actions=False, factorized=True)
    assert (fitted.vocab_size, fitted.code_levels, fitted.factors) == (30, (5, 3, 2), (5, 3, 2))
    config = dataclasses.replace(TRANSFORMER, vocab_size=30, code_levels=(5, 3, 2))
    summary = train_video(tiny_dataset, tmp_path / "fsq", tmp_path / "run", config, _training(40, eval_every=100))
    assert summary["bits_per_code"] < 0.6 * math.log2(30)  # an untrained model scores about log2(vocab)
    assert VideoModel.load(tmp_path / "run" / "model").transformer.head.out_features == 3 * 5  # 3 digits, padded to 5
    with pytest.raises(ValueError, match="codes made of levels"):
        fit_to_data(TRANSFORMER, FrameTokenizer(TOKENIZER), None, actions=False, factorized=True)


def test_a_run_can_start_from_a_trained_model_and_learn_masked_decoding(tiny_dataset, tmp_path):
    tokenizer = _tokenizer(tmp_path / "tok")
    trained = train_video(tiny_dataset, tokenizer, tmp_path / "trained", TRANSFORMER, _training(30, eval_every=100))
    masked = dataclasses.replace(TRANSFORMER, masked_decoding=True)
    frozen = _training(2, lr=1e-12, eval_every=100)  # too small a step to move the weights
    started = train_video(tiny_dataset, tokenizer, tmp_path / "started", masked, frozen,
                          init_from=tmp_path / "trained" / "model")
    fresh = train_video(tiny_dataset, tokenizer, tmp_path / "fresh", masked, frozen)
    assert started["bits_per_code"] == pytest.approx(trained["bits_per_code"], rel=1e-4)
    assert fresh["bits_per_code"] > trained["bits_per_code"] + 0.5
    weights, _ = load_checkpoint(tmp_path / "started" / "checkpoint")
    assert {"mask_code", "draft"} <= set(weights)
    with pytest.raises(ValueError, match="another tokenizer"):
        train_video(tiny_dataset, _tokenizer(tmp_path / "tok2", seed=1), tmp_path / "other", masked, frozen,
                    init_from=tmp_path / "trained" / "model")

def test_bits_per_dim_counts_every_pixel_channel():
    assert bits_per_dim(math.log(2), codes_per_frame=64, image_size=8) == pytest.approx(64 / (8 * 8 * 3))


def _data_parallel_worker(rank: int, init_file: str, data, tokenizer, run, out) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        summary = train_video(data, tokenizer, run, TRANSFORMER, _training(3))
    finally:
        dist.destroy_process_group()
    (out / f"rank{rank}.json").write_text(json.dumps(summary))


def test_two_process_data_parallel_run_keeps_ranks_identical(tiny_dataset, tmp_path):
    tokenizer = _tokenizer(tmp_path / "tok")
    args = (str(tmp_path / "init"), tiny_dataset, tokenizer, tmp_path / "ddp", tmp_path)
    mp.spawn(_data_parallel_worker, args=args, nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["step"] == ranks[1]["step"] == 3
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    saved, _ = load_checkpoint(tmp_path / "ddp" / "checkpoint")
    assert fingerprint(saved) == ranks[0]["weights_sha256"]
    single = train_video(tiny_dataset, tokenizer, tmp_path / "single", TRANSFORMER, _training(3))
    assert single["weights_sha256"] != ranks[0]["weights_sha256"]  # rank 1 saw other clips


def test_a_clip_length_curriculum_grows_the_clips_step_by_step(tiny_dataset, tmp_path, monkeypatch):
    curriculum = VideoTraining(clip_length=16, curriculum_steps=8, curriculum_start=4)
    assert [curriculum.clip_frames(step) for step in (0, 4, 7, 8, 100)] == [4, 10, 14, 16, 16]
    assert VideoTraining(clip_length=16).clip_frames(0) == 16
    with pytest.raises(ValueError, match="curriculum_start >= 2"):
        VideoTraining(curriculum_steps=4, curriculum_start=1)
    lengths = []
    losses = VideoTransformer.losses

    def recording(self, codes, *args, **kwargs):
        if self.training:
            lengths.append(codes.shape[1])
        return losses(self, codes, *args, **kwargs)

    monkeypatch.setattr(VideoTransformer, "losses", recording)
    tokenizer = _tokenizer(tmp_path / "tok")
    train_video(tiny_dataset, tokenizer, tmp_path / "run", TRANSFORMER,
                _training(4, curriculum_steps=2, curriculum_start=2))
    assert lengths == [2, 4, 6, 6]  # clip_length 6, reached at step 2

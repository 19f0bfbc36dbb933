import json
from dataclasses import replace

import pytest
import torch

from worldmodel import training_run
from worldmodel.checkpoint import CheckpointError, load_checkpoint
from worldmodel.tokenizer import FrameTokenizer, TokenizerConfig
from worldmodel.schedule import learning_rate
from worldmodel.train_tokenizer import TokenizerTraining, train_tokenizer

TINY = TokenizerConfig(
    image_size=32, base_channels=8, ch_mult=(1, 2), latent_dim=8, quantizer="vq", quantizer_kwargs={"codebook_size": 16}
)


def _training(steps: int) -> TokenizerTraining:
    # constant learning rate, so a run cut short and resumed sees the same schedule
    return TokenizerTraining(
        steps=steps, batch_size=4, lr=3e-3, warmup_steps=0, min_lr_fraction=1.0,
        log_every=2, eval_every=4, checkpoint_every=3, eval_frames=8,
    )


def test_training_logs_checkpoints_and_evaluates(tiny_dataset, tmp_path):
    summary = train_tokenizer(tiny_dataset, tmp_path / "run", TINY, _training(8))
    assert summary["step"] == 8 and summary["eval_frames"] == 8
    assert {"psnr", "ssim", "codebook_usage", "perplexity"} <= set(summary)
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["step"] == 8
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    tokenizer = FrameTokenizer.load(tmp_path / "run" / "checkpoint")
    assert tokenizer.vocab_size == 16


def test_resumed_run_equals_uninterrupted_run(tiny_dataset, tmp_path):
    train_tokenizer(tiny_dataset, tmp_path / "straight", TINY, _training(10))
    train_tokenizer(tiny_dataset, tmp_path / "resumed", TINY, _training(5))
    summary = train_tokenizer(tiny_dataset, tmp_path / "resumed", TINY, _training(10), resume=True)
    assert summary["step"] == 10
    straight, _ = load_checkpoint(tmp_path / "straight" / "checkpoint")
    resumed, _ = load_checkpoint(tmp_path / "resumed" / "checkpoint")
    for name in straight:
        torch.testing.assert_close(straight[name], resumed[name], msg=name)


def test_run_stopped_by_its_time_budget_resumes_to_the_uninterrupted_run(tiny_dataset, tmp_path, monkeypatch):
    """A decaying schedule and a clock that ticks one second per reading: were the schedule to follow the
    clock, the budgeted run would anneal early and differ."""
    seconds = iter(range(10**6))
    monkeypatch.setattr(training_run, "clock", lambda: float(next(seconds)))
    decaying = replace(_training(6), warmup_steps=0, min_lr_fraction=0.1)
    straight = train_tokenizer(tiny_dataset, tmp_path / "straight", TINY, decaying)
    budget = replace(decaying, max_minutes=2.5 / 60)
    assert train_tokenizer(tiny_dataset, tmp_path / "cut", TINY, budget)["step"] == 3
    assert train_tokenizer(tiny_dataset, tmp_path / "cut", TINY, budget, resume=True)["step"] == 3  # spent
    resumed = train_tokenizer(tiny_dataset, tmp_path / "cut", TINY, decaying, resume=True)
    assert resumed["step"] == 6 and resumed["psnr"] == straight["psnr"]
    a, _ = load_checkpoint(tmp_path / "straight" / "checkpoint")
    b, _ = load_checkpoint(tmp_path / "cut" / "checkpoint")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    with pytest.raises(ValueError, match="batch_size: 4 then, 8 now"):
        train_tokenizer(tiny_dataset, tmp_path / "cut", TINY, replace(decaying, batch_size=8), resume=True)


def test_existing_run_needs_resume_and_matching_config(tiny_dataset, tmp_path):
    train_tokenizer(tiny_dataset, tmp_path / "run", TINY, _training(2))
    with pytest.raises(FileExistsError, match="--resume"):
        train_tokenizer(tiny_dataset, tmp_path / "run", TINY, _training(4))
    other = TokenizerConfig.from_dict({**TINY.to_dict(), "base_channels": 16})
    with pytest.raises(CheckpointError, match="config"):
        train_tokenizer(tiny_dataset, tmp_path / "run", other, _training(4), resume=True)


def test_learning_rate_warms_up_then_decays_by_steps_alone():
    training = TokenizerTraining(steps=1000, lr=1.0, warmup_steps=100, min_lr_fraction=0.1)
    assert learning_rate(0, training) == pytest.approx(0.01)
    assert learning_rate(99, training) == pytest.approx(1.0)
    assert learning_rate(1000, training) == pytest.approx(0.1)
    assert learning_rate(550, training) == pytest.approx(0.55)
    timed = TokenizerTraining(steps=1000, lr=1.0, warmup_steps=100, min_lr_fraction=0.1, max_minutes=0.001)
    assert [learning_rate(s, timed) for s in (0, 550, 1000)] == [learning_rate(s, training) for s in (0, 550, 1000)]


def test_a_causal_video_tokenizer_trains_on_clips_and_resumes_exactly(tiny_dataset, tmp_path):
    from worldmodel.tokenizer import load_tokenizer
    from worldmodel.video_tokenizer import CausalVideoTokenizer, VideoTokenizerConfig

    config = VideoTokenizerConfig(image_size=32, base_channels=8, ch_mult=(1, 2), time_downsample=2, latent_dim=3,
                                  quantizer="fsq", quantizer_kwargs={"levels": [5, 5, 5]})
    training = replace(_training(4), clip_frames=5, batch_size=2)
    straight = train_tokenizer(tiny_dataset, tmp_path / "straight", config, training)
    assert straight["step"] == 4 and straight["eval_frames"] == 5  # one held-out clip of 5 frames
    assert isinstance(load_tokenizer(tmp_path / "straight" / "checkpoint", "cpu"), CausalVideoTokenizer)
    train_tokenizer(tiny_dataset, tmp_path / "resumed", config, replace(training, steps=2))
    resumed = train_tokenizer(tiny_dataset, tmp_path / "resumed", config, training, resume=True)
    assert resumed["psnr"] == straight["psnr"]
    with pytest.raises(ValueError, match="1 \\+ 2 n frames"):
        train_tokenizer(tiny_dataset, tmp_path / "bad", config, replace(training, clip_frames=4))

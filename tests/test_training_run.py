"""The run pattern every training loop shares: settings, checkpoint with RNG state, tensorboard, budget."""

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from worldmodel import training_run
from worldmodel.checkpoint import CheckpointError, write_json_atomic
from worldmodel.training_run import TrainingRun


def _model_and_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    return model, torch.optim.Adam(model.parameters(), lr=0.1)


def _train_step(model, optimizer):
    loss = model(torch.randn(4, 3)).pow(2).mean()  # draws from the torch RNG
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def _logged_steps(directory):
    events = EventAccumulator(str(directory / "tb"))
    events.Reload()
    return [event.step for event in events.Scalars("loss")]


def test_a_resumed_run_gets_back_weights_optimizer_rng_counters_and_state(tmp_path):
    model, optimizer = _model_and_optimizer()
    generator = np.random.default_rng(5)
    run = TrainingRun(tmp_path, resume=False, settings={"lr": 0.1, "steps": 4}, counters={"episode": 0})
    assert run.restore() is None and not run.resumed
    _train_step(model, optimizer)
    generator.random()
    run.counters.update(step=1, episode=7)
    run.save(model.state_dict(), {"kind": "linear"}, optimizers={"adam": optimizer}, generators={"play": generator},
             tensors={"extra": torch.arange(3)}, state={"last_eval": 1.5},
             extra_files=lambda directory: (directory / "replay.npz").write_bytes(b"replay"))
    # what the uninterrupted run does next
    _train_step(model, optimizer)
    expected_weights = {k: v.clone() for k, v in model.state_dict().items()}
    expected_draw = generator.random()

    again, again_optimizer = _model_and_optimizer()
    again_generator = np.random.default_rng(99)
    resumed = TrainingRun(tmp_path, resume=True, settings={"lr": 0.1, "steps": 8}, may_change=("steps",))
    restored = resumed.restore({"kind": ("model kind", "linear")}, {"adam": again_optimizer}, {"play": again_generator})
    again.load_state_dict(restored.weights)
    assert resumed.resumed and resumed.counters == {"step": 1, "elapsed_s": pytest.approx(0.0, abs=60), "episode": 7}
    assert restored.state == {"last_eval": 1.5} and torch.equal(restored.tensors["extra"], torch.arange(3))
    assert (tmp_path / "checkpoint" / "replay.npz").read_bytes() == b"replay"
    _train_step(again, again_optimizer)
    for name, value in again.state_dict().items():
        torch.testing.assert_close(value, expected_weights[name], rtol=0, atol=0)
    assert again_generator.random() == expected_draw


def test_refusals_name_the_problem(tmp_path):
    model, optimizer = _model_and_optimizer()
    run = TrainingRun(tmp_path, resume=False, settings={"lr": 0.1, "steps": 4})
    run.save(model.state_dict(), {"kind": "linear"}, optimizers={"adam": optimizer})
    with pytest.raises(FileExistsError, match="--resume"):
        TrainingRun(tmp_path, resume=False)
    with pytest.raises(ValueError, match=r"lr: 0.1 then, 0.2 now.*only steps may change"):
        TrainingRun(tmp_path, resume=True, settings={"lr": 0.2, "steps": 4}, may_change=("steps",))
    with pytest.raises(CheckpointError, match="model kind linear, but this run asks for conv"):
        TrainingRun(tmp_path, resume=True).restore({"kind": ("model kind", "conv")})
    with pytest.raises(CheckpointError, match="no state of optimizer 'sgd'"):
        TrainingRun(tmp_path, resume=True).restore(optimizers={"sgd": optimizer})
    write_json_atomic(tmp_path / "checkpoint" / "trainer.json", {"step": 3, "elapsed_s": 1.0})  # an older layout
    with pytest.raises(CheckpointError, match="another version of the toolkit"):
        TrainingRun(tmp_path, resume=True).restore()


def test_a_completed_config_resumes_across_an_added_field_and_a_changed_one_is_named(tmp_path):
    model, optimizer = _model_and_optimizer()
    run = TrainingRun(tmp_path, resume=False)
    run.save(model.state_dict(), {"config": {"width": 4}}, optimizers={"adam": optimizer})
    with_defaults = {"config": lambda saved: {"width": 4, "bonus": 0.0, **saved}}  # a release added "bonus"
    assert TrainingRun(tmp_path, resume=True).restore(
        {"config": ("model config", {"width": 4, "bonus": 0.0})}, complete=with_defaults) is not None
    with pytest.raises(CheckpointError, match=r"another model config: width 4 \(now 8\), bonus 0.0 \(now 1.0\)"):
        TrainingRun(tmp_path, resume=True).restore(
            {"config": ("model config", {"width": 8, "bonus": 1.0})}, complete=with_defaults)
    with pytest.raises(CheckpointError, match="but this run asks for"):  # without completing, the field is missing
        TrainingRun(tmp_path, resume=True).restore({"config": ("model config", {"width": 4, "bonus": 0.0})})


def test_resumed_tensorboard_drops_what_was_logged_after_the_checkpoint(tmp_path):
    model, _ = _model_and_optimizer()
    run = TrainingRun(tmp_path, resume=False)
    for step in range(1, 6):  # checkpoint at step 3, crash after logging step 5
        run.writer.add_scalar("loss", float(step), step)
        if step == 3:
            run.counters["step"] = 3
            run.save(model.state_dict(), {})
    run.writer.flush()
    resumed = TrainingRun(tmp_path, resume=True)
    resumed.restore()
    for step in range(4, 7):
        resumed.writer.add_scalar("loss", float(step), step)
    resumed.close()
    assert _logged_steps(tmp_path) == [1, 2, 3, 4, 5, 6]


def test_the_time_budget_counts_across_resumes(tmp_path, monkeypatch):
    seconds = iter(range(0, 10**6, 10))  # ten seconds per reading
    monkeypatch.setattr(training_run, "clock", lambda: float(next(seconds)))
    model, _ = _model_and_optimizer()
    run = TrainingRun(tmp_path, resume=False, max_minutes=0.5)
    assert not run.tick() and run.counters["elapsed_s"] == 10.0
    assert not run.tick()
    run.save(model.state_dict(), {})  # at 20 s
    resumed = TrainingRun(tmp_path, resume=True, max_minutes=0.5)
    resumed.restore()
    assert not resumed.tick() and resumed.counters["elapsed_s"] == 30.0  # 20 s before, 10 s now
    assert resumed.tick() and resumed.out_of_time


def test_a_setting_added_since_the_run_started_resumes_at_its_default(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class Settings:
        lr: float = 0.1
        mix_rewards: bool = True  # added to the code after the run below started

    TrainingRun(tmp_path, resume=False, settings={"lr": 0.1}).save({"w": torch.zeros(1)}, {"kind": "linear"})
    TrainingRun(tmp_path, resume=True, settings=Settings())  # the old behaviour is the default: no change
    write_json_atomic(tmp_path / "settings.json", {"lr": 0.1})
    with pytest.raises(ValueError, match="mix_rewards: True then, False now"):
        TrainingRun(tmp_path, resume=True, settings=Settings(mix_rewards=False))
    with pytest.raises(ValueError, match="lr: 0.1 then, 0.2 now"):
        TrainingRun(tmp_path, resume=True, settings=Settings(lr=0.2))

import pytest
import torch

from worldmodel.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_into_module,
    load_training_state,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
)


def test_round_trip_and_overwrite(tmp_path):
    target = tmp_path / "ckpt"
    save_checkpoint(target, {"w": torch.ones(2)}, {"step": 1})
    save_checkpoint(target, {"w": torch.zeros(3)}, {"step": 2})
    tensors, config = load_checkpoint(target)
    assert config == {"step": 2}
    torch.testing.assert_close(tensors["w"], torch.zeros(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_interrupted_swap_is_recovered(tmp_path):
    target = tmp_path / "ckpt"
    save_checkpoint(target, {"w": torch.ones(2)}, {"step": 1})
    target.rename(tmp_path / ".ckpt.old")  # crash between the two renames
    _, config = load_checkpoint(target)
    assert config == {"step": 1}


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing")
    target = tmp_path / "ckpt"
    save_checkpoint(target, {"w": torch.ones(2)}, {"step": 1})
    (target / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt safetensors"):
        load_checkpoint(target)
    (target / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match="corrupt JSON"):
        load_checkpoint(target)
    (target / "config.json").unlink()
    with pytest.raises(CheckpointError, match="missing config.json"):
        load_checkpoint(target)


def test_mismatched_module_is_a_clear_error():
    module = torch.nn.Linear(3, 2)
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_into_module(module, {"weight": torch.zeros(2, 4), "bias": torch.zeros(2)}, "x")
    with pytest.raises(CheckpointError, match="missing \\['bias'\\]"):
        load_into_module(module, {"weight": torch.zeros(2, 3)}, "x")


def test_optimizer_state_round_trips_through_safetensors(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    tensors, groups = optimizer_to_tensors(optimizer)
    save_checkpoint(tmp_path / "c", model.state_dict(), {}, tensors, {"optimizer": groups})
    loaded, state = load_training_state(tmp_path / "c")
    fresh = torch.optim.Adam(model.parameters(), lr=0.5)
    optimizer_from_tensors(fresh, loaded, state["optimizer"])
    for a, b in zip(optimizer.state.values(), fresh.state.values()):
        torch.testing.assert_close(a["exp_avg"], b["exp_avg"])
        torch.testing.assert_close(a["step"], b["step"])
    assert fresh.param_groups[0]["lr"] == 0.1

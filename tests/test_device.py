"""The device given on the command line reaches every model a command builds or loads.

CI has no GPU, so a second spelling of the CPU, ``cpu:0``, stands in for it: torch places tensors on
``cpu:0`` exactly as on ``cpu``, but the spy sees which string each module was moved with. Every module
that runs (its forward is called) must hold only weights of modules moved to ``cpu:0``; a module left on
the default device, or moved anywhere else, fails the test and is named. (Modules built and never run,
such as the quantizer a config builds to check its arguments, hold nothing that computes.) A move to a
``torch.device`` taken from a tensor (``narrow.to(self.device)``) follows that tensor, which reads ``cpu``
for a tensor on ``cpu:0``: such a move counts as placed; a move spelled ``"cpu"`` (a loader's default) does not.
"""

import itertools
import json

import pytest
import torch

from experiments.cli import build_parser, main
from worldmodel.device import resolve_device

GIVEN = "cpu:0"
GIVEN_DEVICE = torch.device(GIVEN)


class PlacementSpy:
    """Records every module that runs and every ``Module.to(device)`` call while installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ran: dict[int, torch.nn.Module] = {}
        self.moves: list[tuple[torch.nn.Module, torch.device]] = []
        call, to = torch.nn.Module.__call__, torch.nn.Module.to
        spy = self

        def recording_call(module, *args, **kwargs):
            spy.ran[id(module)] = module
            return call(module, *args, **kwargs)

        def recording_to(module, *args, **kwargs):
            device = torch._C._nn._parse_to(*args, **kwargs)[0]
            given = kwargs.get("device", args[0] if args else None)
            follows = isinstance(given, torch.device) and given.index is None  # a tensor's device
            if device is not None:
                spy.moves.append((module, GIVEN_DEVICE if follows and device.type == "cpu" else device))
            return to(module, *args, **kwargs)

        monkeypatch.setattr(torch.nn.Module, "__call__", recording_call)
        monkeypatch.setattr(torch.nn.Module, "to", recording_to)

    def reset(self) -> None:
        self.ran.clear()
        self.moves.clear()

    def assert_all_on(self, device: str) -> None:
        """Every weight of every module run since the last reset lives in a module moved to ``device``."""
        target = torch.device(device)
        wrong = sorted({f"{type(m).__name__} -> {d}" for m, d in self.moves if d != target})
        assert not wrong, f"modules moved elsewhere than {device}: {wrong}"
        placed = {id(t) for m, _ in self.moves for t in itertools.chain(m.parameters(), m.buffers())}
        weighted = [m for m in self.ran.values() if any(True for _ in itertools.chain(m.parameters(), m.buffers()))]
        assert weighted, "the command ran no model: the check would prove nothing"
        missed = sorted({
            type(m).__name__ for m in weighted
            if any(id(t) not in placed for t in itertools.chain(m.parameters(), m.buffers()))
        })
        assert not missed, f"modules left off {device}: {missed}"


@pytest.fixture
def spy(monkeypatch):
    return PlacementSpy(monkeypatch)


def test_auto_is_cuda_when_available_else_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1" and resolve_device("cpu:0") == "cpu:0"
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")


def test_the_spy_catches_a_module_left_on_the_default_device(spy):
    placed, forgotten, unused = torch.nn.Linear(2, 2).to(GIVEN), torch.nn.Linear(2, 3), torch.nn.Linear(2, 4)
    placed(forgotten(torch.ones(2)[None])[:, :2])
    with pytest.raises(AssertionError, match=r"modules left off cpu:0: \['Linear'\]"):
        spy.assert_all_on(GIVEN)
    forgotten.to(GIVEN)
    spy.assert_all_on(GIVEN)  # the unused module does not count
    unused.to("cpu")
    with pytest.raises(AssertionError, match="Linear -> cpu"):
        spy.assert_all_on(GIVEN)


MODEL_COMMANDS = {  # every subcommand that loads or trains a model; the rest take no --device
    "train-tokenizer", "train-video", "eval-tokenizer", "eval-video", "eval-consistency", "rollout",
    "calibrate-reward", "eval-reward", "train-agent", "train-imagination", "eval-imagination", "check-world-model",
    "benchmark-dmc", "diagnose-reward", "build-reward", "quickstart", "diagnose-imagination",
}


def _subcommands() -> dict:
    parser = build_parser()
    return next(a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict)).choices


def test_every_model_command_takes_device_defaulting_to_auto():
    for name, parser in _subcommands().items():
        flags = {flag: action for action in parser._actions for flag in action.option_strings}
        if name in MODEL_COMMANDS:
            assert flags["--device"].default == "auto", name
        else:
            assert "--device" not in flags, name


def test_main_resolves_auto_once_for_the_handler(monkeypatch):
    import experiments.quickstart as quickstart_module

    seen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(quickstart_module, "quickstart", lambda *args: seen.append(args[-1]) or "report.md")
    main(["quickstart"])
    assert seen == ["cuda"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny cartpole dataset, a tokenizer and a video model bundle, trained by the CLI on cpu:0 (the
    train-tokenizer and train-video paths are checked as they are made), and a VIPER agent run."""
    root = tmp_path_factory.mktemp("device")
    data, tok, video = root / "data", root / "tok", root / "video"
    main(["collect", "--env", "dmc:cartpole-balance", "--episodes", "4", "--max-steps", "12", "--out", str(data),
          "--workers", "1", "--test-fraction", "0.5"])
    placements = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        spy = PlacementSpy(monkeypatch)
        main(["train-tokenizer", "--data", str(data), "--run", str(tok), "--channels", "8", "--steps", "2",
              "--batch-size", "2", "--eval-frames", "4", "--device", GIVEN])
        placements["train-tokenizer"] = (dict(spy.ran), list(spy.moves))
        spy.reset()
        main(["train-video", "--data", str(data), "--tokenizer", str(tok / "checkpoint"), "--run", str(video),
              "--steps", "2", "--batch-size", "2", "--clip-length", "4", "--eval-clips", "1", "--device", GIVEN])
        placements["train-video"] = (dict(spy.ran), list(spy.moves))
    return root, placements


@pytest.mark.parametrize("command", ["train-tokenizer", "train-video"])
def test_training_commands_train_on_the_device_given(trained, command, monkeypatch):
    spy = PlacementSpy(monkeypatch)
    spy.ran, spy.moves = trained[1][command]
    spy.assert_all_on(GIVEN)


def _model_commands(root):
    data, model = str(root / "data"), str(root / "video" / "model")
    out = str(root / "out")
    return {
        "eval-tokenizer": ["eval-tokenizer", "--checkpoint", str(root / "tok" / "checkpoint"), "--data", data,
                           "--frames", "4", "--out", out],
        "eval-video": ["eval-video", "--model", model, "--data", data, "--out", out, "--context", "2",
                       "--horizon", "2", "--rollouts", "1"],
        "eval-consistency": ["eval-consistency", "--model", model, "--data", data, "--out", out, "--videos", "1",
                             "--fvd-videos", "2", "--context", "2", "--horizon", "2", "--fvd-context", "2",
                             "--fvd-length", "10", "--late-from", "1", "--save-videos", "0",
                             "--compare", f"again={model}"],
        "rollout": ["rollout", "--model", model, "--out", out, "--data", data, "--frames", "2", "--context", "2"],
        "calibrate-reward": ["calibrate-reward", "--model", model, "--data", data],
        "eval-reward": ["eval-reward", "--model", model, "--baseline-model", model, "--data", data, "--out", out],
        "train-agent": ["train-agent", "--env", "dmc:cartpole-balance", "--run", str(root / "agent"),
                        "--model", model, "--baseline-model", model, "--total-steps", "6", "--seed-steps", "2",
                        "--eval-every", "100", "--eval-episodes", "0", "--video-every", "0",
                        "--action-repeat", "2", "--replay-capacity", "50", "--batch-size", "4"],
    }


@pytest.mark.parametrize("command", ["eval-tokenizer", "eval-video", "eval-consistency", "rollout",
                                     "calibrate-reward", "eval-reward", "train-agent"])
def test_model_commands_load_every_model_on_the_device_given(trained, command, spy):
    main([*_model_commands(trained[0])[command], "--device", GIVEN])
    spy.assert_all_on(GIVEN)


def test_diagnose_reward_loads_agent_and_models_on_the_device_given(trained, monkeypatch):
    train_agent = _model_commands(trained[0])["train-agent"]
    run = str(trained[0] / "agent-to-diagnose")
    main([*train_agent[:train_agent.index("--run") + 1], run, *train_agent[train_agent.index("--run") + 2:]])
    spy = PlacementSpy(monkeypatch)
    main(["diagnose-reward", "--run", run, "--episodes", "1", "--device", GIVEN])
    spy.assert_all_on(GIVEN)


def test_imagination_commands_train_and_load_every_model_on_the_device_given(tmp_path, monkeypatch):
    run = str(tmp_path / "imagination")
    spy = PlacementSpy(monkeypatch)
    main(["train-imagination", "--run", run, "--device", GIVEN, "--env", "dmc:cartpole-balance",
          "--episode-steps", "12", "--physics-steps", str(8 * 36), "--seed-episodes", "2", "--tokenizer-steps", "2",
          "--first-world-model-steps", "2", "--world-model-batch", "2", "--world-model-clip", "8",
          "--imagination-updates", "1", "--imagined-envs", "2", "--eval-episodes", "1", "--ac-horizon", "3",
          "--ac-feature-dim", "16", "--ac-hidden-dim", "16"])
    spy.assert_all_on(GIVEN)
    for command in (["eval-imagination", "--episodes", "1"], ["check-world-model", "--episodes", "1"]):
        spy.reset()
        main([*command, "--run", run, "--device", GIVEN])
        spy.assert_all_on(GIVEN)


def test_benchmark_dmc_gives_every_run_the_device(tmp_path, monkeypatch):
    import experiments.dmc_benchmark as benchmark

    devices = []
    monkeypatch.setattr(benchmark, "run_agent", lambda *args, **kwargs: devices.append(kwargs["device"]) or {
        "env_steps": 1})
    monkeypatch.setattr(benchmark, "run_grid", lambda out, runs, settings, *rest: [
        benchmark.run_one(run, out, settings, {}, {}, 1) for run in runs] and "")
    main(["benchmark-dmc", "--out", str(tmp_path), "--tasks", "cartpole-swingup", "--obs", "state",
          "--rewards", "env", "--seeds", "0,1", "--device", GIVEN])
    assert devices == [GIVEN, GIVEN]


def test_quickstart_trains_and_loads_every_model_on_the_device_given(tmp_path, monkeypatch, capsys):
    spy = PlacementSpy(monkeypatch)
    main(["quickstart", "--out", str(tmp_path), "--task", "cartpole-balance", "--episodes", "3",
          "--random-episodes", "2", "--graded-episodes", "1", "--max-steps", "20", "--tokenizer-minutes", "0.005",
          "--video-minutes", "0.005", "--baseline-minutes", "0.005", "--agent-minutes", "0.005", "--workers", "1",
          "--device", GIVEN])
    spy.assert_all_on(GIVEN)
    assert json.loads((tmp_path / "agent" / "run.json").read_text())["physics_steps_per_agent_step"] == 8

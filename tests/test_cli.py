import argparse
import dataclasses
import json
import re

import pytest

from experiments.cli import build_parser, main

SUBCOMMANDS = sorted(  # every registered subcommand, so a new one cannot skip this test
    next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_flag_of_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0 and f"wm {command}" in capsys.readouterr().out
    parser = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    silent = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
    assert not silent, f"wm {command}: flags without help {silent}"


def _settings_flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


SETTINGS = {  # the config dataclasses whose fields are flags, and the commands and flag prefixes that show them
    "TokenizerTraining": ("worldmodel.train_tokenizer", {"train-tokenizer": ""}),
    "VideoTraining": ("worldmodel.train_video", {"train-video": ""}),
    "Training": ("agents.workspace", {"train-agent": ""}),
    "ImaginationSettings": ("experiments.train_imagination", {"train-imagination": ""}),
    "ActorCriticConfig": ("agents.actor_critic", {"train-imagination": "ac-"}),
    "ImportSettings": ("experiments.import_videos", {"import-videos": ""}),
}


def _settings_class(name):
    import importlib

    return getattr(importlib.import_module(SETTINGS[name][0]), name)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_every_settings_field_has_help_beside_it(name):
    missing = [f.name for f in dataclasses.fields(_settings_class(name)) if not f.metadata.get("help")]
    assert not missing, f"{name} fields without metadata={{'help': ...}}: {missing}"


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_every_settings_field_is_a_flag_with_its_help(name, capsys):
    cls = _settings_class(name)
    commands = {c: p for c, p in next(a for a in build_parser()._actions
                                      if isinstance(a, argparse._SubParsersAction)).choices.items()}
    for command, prefix in SETTINGS[name][1].items():
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([command, "--help"])
        assert exit_info.value.code == 0
        text = "".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
        flags = _settings_flags(commands[command])
        for field in dataclasses.fields(cls):
            flag = f"--{prefix}{field.name.replace('_', '-')}"
            if field.default_factory is not dataclasses.MISSING:
                assert flag not in flags  # a nested settings group (the actor-critic's) has its own prefix
                continue
            assert flag in flags, f"{command} has no {flag}"
            assert "".join(field.metadata["help"].split()) in text, f"{command} --help lacks {flag}'s help"


def test_a_field_without_help_still_makes_a_working_flag():
    from experiments.cli.flags import dataclass_flags

    @dataclasses.dataclass
    class Settings:
        steps: int = dataclasses.field(default=3, metadata={"help": "how many"})
        budget: float | None = None
        name: str = "x"
        fast: bool = False

    parser = argparse.ArgumentParser()
    dataclass_flags(parser, Settings())
    args = parser.parse_args(["--budget", "2.5", "--name", "y", "--fast"])
    assert (args.steps, args.budget, args.name, args.fast) == (3, 2.5, "y", True)
    assert Settings(**vars(args)) == Settings(3, 2.5, "y", True)


def test_parsed_flags_reach_the_config_dataclasses(monkeypatch, tmp_path):
    import experiments.train_imagination as imagination
    import worldmodel.train_tokenizer as tokenizer_training

    seen = {}
    monkeypatch.setattr(tokenizer_training, "train_tokenizer",
                        lambda data, run, config, training, **kwargs: seen.update(tokenizer=training) or {})
    main(["train-tokenizer", "--data", str(tmp_path), "--run", str(tmp_path / "run"), "--lr", "0.25",
          "--max-minutes", "1.5", "--eval-frames", "7"])
    expected = dataclasses.replace(tokenizer_training.TokenizerTraining(), lr=0.25, max_minutes=1.5, eval_frames=7)
    assert seen["tokenizer"] == expected

    monkeypatch.setattr(imagination, "train_in_imagination",
                        lambda run, settings, device: seen.update(imagination=settings) or {"history": [],
                                                                                         "iteration": 0,
                                                                                         "agent_steps": 0})
    main(["train-imagination", "--run", str(tmp_path / "imagined"), "--world-model-clip", "12",
          "--imagine-from", "episode_start", "--ac-horizon", "7", "--ac-lam", "0.5"])
    settings = seen["imagination"]
    assert (settings.world_model_clip, settings.imagine_from) == (12, "episode_start")
    assert settings.agent == dataclasses.replace(settings.agent.__class__(), horizon=7, lam=0.5)

    # a one-model reward recipe: its one model is the expert and the baseline, conditioned on the play's task
    recipe = tmp_path / "reward"
    recipe.mkdir()
    summary = {"task": "cartpole-balance", "baseline_model": str(recipe / "video" / "model"),
               "baseline_task": "cartpole-balance@play",
               "reward": {"correlations": {"cartpole-balance": {"spearman": 0.9}}}}
    (recipe / "reward_recipe.json").write_text(json.dumps(summary))
    main(["train-imagination", "--run", str(tmp_path / "imagined"), "--viper-recipe", str(recipe)])
    settings = seen["imagination"]
    assert (settings.viper_model, settings.viper_baseline_model) == (str(recipe / "video" / "model"),) * 2
    assert settings.viper_baseline_task == "cartpole-balance@play"
    with pytest.raises(SystemExit, match="holds the reward of cartpole-balance, not of dmc:cartpole-swingup"):
        main(["train-imagination", "--run", str(tmp_path / "other"), "--viper-recipe", str(recipe),
              "--env", "dmc:cartpole-swingup"])


def test_action_repeat_means_physics_steps_per_decision_in_every_help(capsys):
    for command in ("train-agent", "train-imagination"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--action-repeat" in text and "physics steps (DMC; underlying env steps elsewhere) per agent decision" in text


def test_train_agent_defaults_to_drqv2_on_states(monkeypatch, tmp_path):
    import experiments.train_agent as train_agent

    seen = {}
    monkeypatch.setattr(train_agent, "run_agent", lambda *args, **kwargs: seen.update(args=args, kwargs=kwargs) or {})
    main(["train-agent", "--env", "dmc:cartpole-swingup", "--run", str(tmp_path), "--reward", "env"])
    agent, training, action_repeat = seen["args"][2], seen["args"][4], seen["args"][7]
    assert (agent, seen["kwargs"]["observation"], action_repeat) == ("drqv2", "state", None)
    assert training.updates_per_step == 4 and training.frame_stack == 1  # drqv2's cpu recipe on states


def test_bad_input_is_one_clear_line(tmp_path):
    with pytest.raises(SystemExit, match="bad policy 'greedy'"):
        main(["collect", "--env", "dmc:cartpole-balance", "--policies", "greedy", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="no split 'train'"):
        main(["train-tokenizer", "--data", str(tmp_path / "nothing"), "--run", str(tmp_path / "run")])
    with pytest.raises(SystemExit, match="needs a video model"):
        main(["train-agent", "--env", "dmc:cartpole-swingup", "--run", str(tmp_path / "drq")])


def test_collect_train_and_eval_from_the_command_line(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    main(["collect", "--env", "dmc:cartpole-balance", "--episodes", "2", "--max-steps", "8",
          "--out", str(data), "--workers", "1", "--test-fraction", "0.5"])
    assert "| cartpole-balance | expert | 2 |" in capsys.readouterr().out
    main(["train-tokenizer", "--data", str(data), "--run", str(run), "--channels", "8", "--steps", "3",
          "--batch-size", "2", "--eval-frames", "4", "--quantizer", "fsq"])
    main(["eval-tokenizer", "--checkpoint", str(run / "checkpoint"), "--data", str(data), "--frames", "4"])
    assert (run / "reconstructions.png").exists() and (run / "tokenizer_eval.json").exists()
    assert '"encode_decode_frames_per_s"' in capsys.readouterr().out


def test_quickstart_runs_end_to_end_and_resumes(tmp_path, capsys):
    args = ["quickstart", "--out", str(tmp_path), "--task", "cartpole-balance", "--episodes", "3",
            "--random-episodes", "2", "--graded-episodes", "1", "--max-steps", "20", "--tokenizer-minutes", "0.02",
            "--video-minutes", "0.02", "--baseline-minutes", "0.01", "--agent-minutes", "0.02", "--workers", "1"]
    main(args)
    report = (tmp_path / "report.md").read_text()
    for expected in ("| cartpole-balance | expert | 3 |", "PSNR", "| baseline | 2 random-policy episodes |",
                     "| cartpole-balance | 6 |", "## DrQ-v2 on the VIPER reward alone", "observes the state vector",
                     "x the random policy's"):
        assert expected in report
    for figure in ("tokenizer/reconstructions.png", "reward/likelihood_heatmap.png", "agent/true_return.png"):
        assert (tmp_path / figure).exists()
    assert list((tmp_path / "agent" / "videos").glob("*.gif"))
    assert json.loads((tmp_path / "reward" / "reward_eval.json").read_text())["baseline_model"].endswith("model")
    run = json.loads((tmp_path / "agent" / "run.json").read_text())
    assert (run["observation"], run["baseline_model"]) == ("state", str(tmp_path / "video-random" / "model"))
    weights = {path: path.read_bytes() for path in tmp_path.glob("*/checkpoint/model.safetensors")}
    assert {path.parts[-3] for path in weights} == {"tokenizer", "video", "video-random", "agent"}
    capsys.readouterr()
    main(args)  # everything on disk: the finished reward is read back, the agent resumes past its budget
    assert "already holds this recipe's reward for cartpole-balance" in capsys.readouterr().out
    # Nothing trains further, and every result of the report (PSNR, bits, correlations, DrQ's
    # returns) is the same; only the minutes taken differ.
    assert all(path.read_bytes() == data for path, data in weights.items())
    again = (tmp_path / "report.md").read_text()
    assert re.sub(r"\d+\.\d min", "? min", again) == re.sub(r"\d+\.\d min", "? min", report)


def test_train_video_from_the_command_line(tiny_dataset, tmp_path, capsys):
    from worldmodel.episodes import DatasetManifest
    from worldmodel.tokenizer import FrameTokenizer, TokenizerConfig
    from worldmodel.video_model import VideoModel

    DatasetManifest("synthetic", ["square"], {"type": "discrete", "n": 16}).save(tiny_dataset)
    tokenizer = TokenizerConfig(image_size=32, base_channels=8, ch_mult=(1, 2, 2, 2), latent_dim=8)
    FrameTokenizer(tokenizer).save(tmp_path / "tok")
    args = ["train-video", "--data", str(tiny_dataset), "--tokenizer", str(tmp_path / "tok"), "--run",
            str(tmp_path / "run"), "--steps", "2", "--batch-size", "2", "--clip-length", "4", "--eval-clips", "2"]
    main(args)
    assert '"bits_per_dim"' in capsys.readouterr().out
    model = VideoModel.load(tmp_path / "run" / "model")
    assert model.transformer.config.num_actions == 16 and model.info.tasks == ["square"]
    with pytest.raises(SystemExit, match="--resume"):
        main(args)
    with pytest.raises(SystemExit, match="no (tokenizer )?checkpoint"):
        main([*args[:3], "--tokenizer", str(tmp_path / "missing"), "--run", str(tmp_path / "other")])


def test_compare_runs_tabulates_and_plots_returns(tmp_path, capsys):
    import json

    for name, scale in (("viper", 1.0), ("true", 2.0)):
        log = {
            "train": [{"env_step": 10 * i, "true_return": scale * i, "return": 0.0} for i in range(1, 7)],
            "eval": [{"env_step": 30, "true_return": scale * 3}, {"env_step": 60, "true_return": scale * 6}],
        }
        (tmp_path / name).mkdir()
        (tmp_path / name / "returns.json").write_text(json.dumps(log))
    final = {"true_return": 12.0, "true_returns": [10.0, 14.0], "episodes": 2, "seed": 10_000, "env_steps": 60}
    (tmp_path / "true" / "final_eval.json").write_text(json.dumps(final))  # as wm benchmark-dmc writes it
    out = tmp_path / "cmp.png"
    main(["compare-runs", "--run", f"VIPER={tmp_path / 'viper'}", "--run", f"true={tmp_path / 'true'}",
          "--out", str(out), "--smooth", "2", "--reference-return", "random=1.5"])
    table = capsys.readouterr().out
    assert "| VIPER | 60 | 6.0 | 5.5 | - |" in table
    assert "| true | 60 | 12.0 | 11.0 | 12.0 +- 1.4 (2 episodes) |" in table  # standard error of 10 and 14
    assert "| random | - | 1.5 | - | - |" in table
    assert out.stat().st_size > 0 and out.with_suffix(".md").read_text().strip() == table.strip()
    with pytest.raises(SystemExit, match="LABEL=DIR"):
        main(["compare-runs", "--run", str(tmp_path / "viper"), "--out", str(out)])
    with pytest.raises(SystemExit, match="a number"):
        main(["compare-runs", "--run", f"x={tmp_path / 'viper'}", "--out", str(out), "--reference-return",
              "random=low"])
    with pytest.raises(SystemExit, match="no returns.json"):
        main(["compare-runs", "--run", f"x={tmp_path}", "--out", str(out)])
    imagined = tmp_path / "imagination"  # a train-imagination run's progress.json reads as a returns log
    imagined.mkdir()
    history = [{"agent_steps": 100 * i, "eval_return": 10.0 * i, "collect_return": 5.0 * i} for i in (1, 2)]
    (imagined / "progress.json").write_text(json.dumps({"iteration": 2, "history": history}))
    main(["compare-runs", "--run", f"imagined={imagined}", "--out", str(out), "--smooth", "2"])
    assert "| imagined | 200 | 20.0 | 7.5 | - |" in capsys.readouterr().out


def test_quickstart_takes_the_tasks_data_recipe_unless_told(monkeypatch, tmp_path):
    import experiments.quickstart as quickstart_module

    budgets = []
    monkeypatch.setattr(quickstart_module, "quickstart",
                        lambda out, task, budget, workers, device: budgets.append(budget) or out / "report.md")
    main(["quickstart", "--out", str(tmp_path), "--task", "cartpole-swingup"])
    main(["quickstart", "--out", str(tmp_path), "--task", "reacher-easy"])
    main(["quickstart", "--out", str(tmp_path), "--task", "reacher-easy", "--episodes", "30",
          "--data-episode-steps", "80", "--max-steps", "20"])
    recipes = [(b.episodes, b.random_episodes, b.data_episode_steps, b.max_steps, b.graded_noise[0])
               for b in budgets]
    assert recipes == [(12, 12, None, None, 0.3), (240, 240, 50, None, 1.0), (30, 240, 80, 20, 1.0)]


def test_a_one_model_recipe_is_its_own_baseline(tmp_path, capsys):
    from experiments.reward_recipe import RewardRecipe, build_reward
    from worldmodel.video_model import VideoModel

    recipe = RewardRecipe(episodes=2, random_episodes=2, graded_episodes=1, probes=(), tokenizer_steps=2,
                          video_steps=2, baseline_steps=1, max_steps=20, one_model=True)
    summary = build_reward("cartpole-balance", tmp_path, recipe, workers=1)
    play = "cartpole-balance@play"
    assert (summary["baseline_task"], summary["baseline_model"]) == (play, str(tmp_path / "video" / "model"))
    assert summary["video"]["step"] == 3 and not (tmp_path / "video-random").exists()
    assert VideoModel.load(tmp_path / "video" / "model").info.tasks == ["cartpole-balance", play]
    assert {info["policy"] for info in summary["expert_episodes"].values()} == {"expert"}
    assert json.loads((tmp_path / "reward" / "reward_eval.json").read_text())["baseline_task"] == play
    assert "| one model of both sources | 2 episodes of the scripted expert and 2 random-policy ones" in (
        tmp_path / "report.md").read_text()
    capsys.readouterr()
    build_reward("cartpole-balance", tmp_path, recipe, workers=1)
    assert "already holds this recipe's reward" in capsys.readouterr().out


def test_build_reward_takes_the_tasks_recipe_unless_told(monkeypatch, tmp_path):
    import experiments.reward_recipe as recipe_module

    recipes = []

    def record(task, out, recipe, workers, device):
        recipes.append(recipe)
        return {"reward": {"table": "| table |"}}

    monkeypatch.setattr(recipe_module, "build_reward", record)
    main(["build-reward", "--out", str(tmp_path), "--task", "walker-walk", "--expert", "agent:runs/walker"])
    main(["build-reward", "--out", str(tmp_path), "--task", "reacher-easy", "--video-steps", "20"])
    main(["build-reward", "--out", str(tmp_path), "--task", "reacher-easy", "--episodes", "30",
          "--graded-noise", "0.5,2", "--probes", "held:10"])
    main(["build-reward", "--out", str(tmp_path), "--task", "reacher-easy", "--probes", ""])
    assert [(r.expert, r.episodes, r.random_episodes, r.episode_steps, r.graded_noise, r.video_steps, r.probes)
            for r in recipes] == [
        ("agent:runs/walker", 40, 40, None, (0.3, 1.0), 500, ("still", "held:25")),
        ("expert", 400, 400, 50, (1.0, 3.0, 10.0), 20, ("still", "held:25")),
        ("expert", 30, 400, 50, (0.5, 2.0), 500, ("held:10",)),
        ("expert", 400, 400, 50, (1.0, 3.0, 10.0), 500, ()),
    ]
    labels = [p.label for p in recipes[0].graded_policies()]
    assert labels == ["agent-walker", "noisy0.3-agent-walker", "noisy1-agent-walker", "random", "still", "held25"]
    spread = recipe_module.RewardRecipe(expert="spread:0.8")
    assert [p.label for p in spread.graded_policies()][:3] == ["spread0.8", "noisy0.3", "noisy1"]
    with pytest.raises(SystemExit, match="expert must be 'expert', 'spread:FRACTION' or 'agent:RUN'"):
        main(["build-reward", "--out", str(tmp_path), "--task", "walker-walk", "--expert", "random"])
    with pytest.raises(SystemExit, match="probes must be play policies"):
        main(["build-reward", "--out", str(tmp_path), "--task", "walker-walk", "--probes", "still,noisy:1"])

import argparse
import json
import re

import pytest

from experiments.cli import build_parser, main

SUBCOMMANDS = sorted(  # every registered subcommand, so a new one cannot skip this test
    next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"wm {command}" in text and len(text) > 400


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
                     "| cartpole-balance | 4 |", "## DrQ-v2 on the VIPER reward alone", "observes the state vector",
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
    main(args)  # everything on disk: collection skips, training resumes past its budget
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
    with pytest.raises(SystemExit, match="no checkpoint directory"):
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
    out = tmp_path / "cmp.png"
    main(["compare-runs", "--run", f"VIPER={tmp_path / 'viper'}", "--run", f"true={tmp_path / 'true'}",
          "--out", str(out), "--smooth", "2", "--baseline", "random=1.5"])
    table = capsys.readouterr().out
    assert "| VIPER | 60 | 6.0 | 5.5 |" in table and "| true | 60 | 12.0 | 11.0 |" in table
    assert "| random | - | 1.5 | - |" in table
    assert out.stat().st_size > 0 and out.with_suffix(".md").read_text().strip() == table.strip()
    with pytest.raises(SystemExit, match="LABEL=RUN_DIR"):
        main(["compare-runs", "--run", str(tmp_path / "viper"), "--out", str(out)])
    with pytest.raises(SystemExit, match="a number"):
        main(["compare-runs", "--run", f"x={tmp_path / 'viper'}", "--out", str(out), "--baseline", "random=low"])
    with pytest.raises(SystemExit, match="no returns.json"):
        main(["compare-runs", "--run", f"x={tmp_path}", "--out", str(out)])
    imagined = tmp_path / "imagination"  # a train-imagination run's progress.json reads as a returns log
    imagined.mkdir()
    history = [{"agent_steps": 100 * i, "eval_return": 10.0 * i, "collect_return": 5.0 * i} for i in (1, 2)]
    (imagined / "progress.json").write_text(json.dumps({"iteration": 2, "history": history}))
    main(["compare-runs", "--run", f"imagined={imagined}", "--out", str(out), "--smooth", "2"])
    assert "| imagined | 200 | 20.0 | 7.5 |" in capsys.readouterr().out


def test_quickstart_takes_the_tasks_data_recipe_unless_told(monkeypatch, tmp_path):
    import experiments.quickstart as quickstart_module

    budgets = []
    monkeypatch.setattr(quickstart_module, "quickstart",
                        lambda out, task, budget, workers: budgets.append(budget) or out / "report.md")
    main(["quickstart", "--out", str(tmp_path), "--task", "cartpole-swingup"])
    main(["quickstart", "--out", str(tmp_path), "--task", "reacher-easy"])
    main(["quickstart", "--out", str(tmp_path), "--task", "reacher-easy", "--episodes", "30",
          "--data-episode-steps", "80", "--max-steps", "20"])
    recipes = [(b.episodes, b.random_episodes, b.data_episode_steps, b.max_steps, b.graded_policies[1])
               for b in budgets]
    assert recipes == [(12, 12, None, None, "noisy:0.3"), (240, 240, 50, None, "noisy:1.0"),
                       (30, 240, 80, 20, "noisy:1.0")]

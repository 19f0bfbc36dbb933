import pytest

from experiments.cli import build_parser, main

SUBCOMMANDS = [
    "collect", "train-tokenizer", "train-video", "eval-tokenizer", "eval-video", "calibrate-reward", "eval-reward",
    "train-drq", "quickstart",
]


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
            "--graded-episodes", "1", "--max-steps", "20", "--tokenizer-minutes", "0.02", "--video-minutes", "0.02",
            "--agent-minutes", "0.02", "--workers", "1"]
    main(args)
    report = (tmp_path / "report.md").read_text()
    for expected in ("| cartpole-balance | expert | 3 |", "PSNR", "bits per code", "| cartpole-balance | 4 |",
                     "## DrQ on the VIPER reward alone", "true return"):
        assert expected in report
    for figure in ("tokenizer/reconstructions.png", "reward/likelihood_heatmap.png", "drq/true_return.png"):
        assert (tmp_path / figure).exists()
    assert list((tmp_path / "drq" / "videos").glob("*.gif"))
    main(args)  # everything on disk: collection skips, training resumes past its budget
    again = (tmp_path / "report.md").read_text()
    assert again.split("## Tokenizer")[0].splitlines()[3:] == report.split("## Tokenizer")[0].splitlines()[3:]


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

import json
import math
from dataclasses import asdict

import numpy as np
import pytest

from experiments.eval_reward import ScoredEpisode, _by_policy, _correlations, _tables
from experiments.plots import compare_runs
from experiments.quickstart import QuickstartBudget, write_report
from experiments.reports import format_number, format_ratio, format_share, ratio
from experiments.reward_recipe import default_recipe, probe_warnings, reward_sections

RANDOM = "the random policy's"


@pytest.mark.parametrize(
    "value, spec, text",
    [(3.14159, ".2f", "3.14"), (-2.0, ".1f", "-2.0"), (None, ".1f", "n/a"), (math.nan, ".3f", "nan"),
     (math.inf, ".1f", "inf"), (-math.inf, ".1f", "-inf"), (np.float32(0.5), ".1f", "0.5")],
)
def test_format_number(value, spec, text):
    assert format_number(value, spec) == text


def test_a_ratio_exists_only_to_a_positive_known_baseline():
    assert ratio(5.0, 2.0) == 2.5
    for value, baseline in [(5.0, 0.0), (5.0, -1.0), (None, 2.0), (5.0, None), (math.nan, 2.0), (5.0, math.inf)]:
        assert ratio(value, baseline) is None
    assert format_ratio(31.5, 10.5, RANDOM) == "3.0x the random policy's 10.5"
    assert format_ratio(5.0, 0.0, RANDOM) == "no ratio to the random policy's 0.0"
    assert format_ratio(5.0, None, RANDOM) == "no ratio to the random policy's n/a"
    assert format_ratio(math.nan, 4.0, RANDOM) == "no ratio to the random policy's 4.0"
    assert format_share(85.0, 100.0) == "85 %"
    assert format_share(85.0, 0.0) == "n/a (reference 0.0)"


def _episode(policy: str, true_return: float, viper_return: float) -> ScoredEpisode:
    return ScoredEpisode("pendulum-swingup", policy, f"{policy}.npz", true_return, np.array([viper_return]))


def _stages(reward_episodes: list[ScoredEpisode], eval_true_return: float | None) -> dict:
    """The summaries of a quickstart run's reward recipe and agent, as each returns them."""
    tasks = ["pendulum-swingup"]
    correlations = {"pendulum-swingup": _correlations(reward_episodes)}
    by_policy = _by_policy(reward_episodes, tasks)
    reward = {
        "recipe": asdict(QuickstartBudget().reward_recipe()),
        "expert_episodes": {
            f"train/{i}.npz": {"task": "pendulum-swingup", "policy": "expert", "return": r}
            for i, r in enumerate([0.0, 120.0, 80.0])
        },
        "tokenizer": {"eval_frames": 64, "psnr": 31.234, "ssim": 0.9, "codebook_usage": 0.5, "perplexity": 40.0,
                      "code_shape": [8, 8]},
        "video": {"step": 280, "bits_per_code": None, "log_prob_per_frame": -120.0},
        "baseline": {"step": 120, "bits_per_code": 2.5, "log_prob_per_frame": math.nan},
        "reward": {"table": _tables(correlations, by_policy), "by_policy": by_policy},
    }
    return {
        "reward": reward,
        "agent": {"env_steps": 1000, "updates": 500, "elapsed_s": 420.0, "eval_true_return": eval_true_return,
                  "eval_return": None if eval_true_return is None else 3.5},
    }


def test_report_on_a_sparse_task_says_what_it_cannot_compute(tmp_path):
    # Pendulum's reward is sparse: every graded episode here returned 0, random play too.
    graded = [_episode("expert", 0.0, 5.0), _episode("noisy:1.0", 0.0, 2.0), _episode("random", 0.0, -1.0)]
    path = write_report(tmp_path, "pendulum-swingup", QuickstartBudget(), 31.0, **_stages(graded, 12.5))
    report = path.read_text()
    assert path == tmp_path / "report.md"
    assert "| pendulum-swingup | 3 | nan | nan |" in report  # no ranking among equal true returns
    assert "true return **12.5** (no ratio to the random policy's 0.0), VIPER return 3.5" in report
    assert "| expert | 12 episodes of the scripted expert | 280 | n/a | -120.0 |" in report  # held-out bits never measured
    assert "| baseline | 12 random-policy episodes | 120 | 2.500 | nan |" in report
    assert "| pendulum-swingup | expert | 3 | 66.7 | 49.9 | 0.0 |" in report
    assert "Wall time of this invocation: 31.0 min." in report


def test_report_without_an_evaluation_and_with_a_ratio(tmp_path):
    graded = [_episode("expert", 150.0, 5.0), _episode("noisy:1.0", 40.0, 2.0), _episode("random", 10.0, -1.0)]
    unevaluated = write_report(tmp_path, "pendulum-swingup", QuickstartBudget(), 5.0, **_stages(graded, None))
    assert "updates; no evaluation ran, so there is no final return." in unevaluated.read_text()
    evaluated = write_report(tmp_path, "pendulum-swingup", QuickstartBudget(), 5.0, **_stages(graded, 35.0))
    text = evaluated.read_text()
    assert "true return **35.0** (3.5x the random policy's 10.0), VIPER return 3.5" in text
    assert "| pendulum-swingup | 3 | 1.000 | 0.950 |" in text


@pytest.mark.filterwarnings("ignore:No artists with labels")  # the one run has no evaluation to label
def test_run_comparison_table_with_a_missing_baseline_and_no_evaluation(tmp_path):
    run = tmp_path / "agent"
    run.mkdir()
    (run / "returns.json").write_text(json.dumps({"train": [{"env_step": 10, "true_return": 0.0}], "eval": []}))
    table = compare_runs({"agent": run}, tmp_path / "curve.png", "sparse", baselines={"random play": 0.0, "expert": None})
    assert table.splitlines()[2:] == [
        "| agent | 0 | nan | 0.0 | - |",  # no evaluation yet
        "| random play | - | 0.0 | - | - |",
        "| expert | - | n/a | - | - |",
    ]
    assert (tmp_path / "curve.png").is_file()


def test_run_comparison_leaves_out_episodes_a_resume_cut_short(tmp_path):
    run = tmp_path / "agent"
    run.mkdir()
    train = [
        {"env_step": 20, "true_return": 10.0, "length": 20},
        {"env_step": 30, "true_return": 1.0, "length": 10, "cut": True},  # recorded by train_agent on resume
        {"env_step": 50, "true_return": 20.0, "length": 20},
    ]
    (run / "returns.json").write_text(json.dumps({"train": train, "eval": [{"env_step": 50, "true_return": 30.0}]}))
    table = compare_runs({"agent": run}, tmp_path / "curve.png", "cut", smooth=3)
    assert table.splitlines()[2] == "| agent | 50 | 30.0 | 15.0 | - |"


def _rows(task: str, returns: dict[str, tuple[float, float]]) -> list[dict]:
    return [{"task": task, "policy": policy, "episodes": 5, "true_return": true, "viper_return": viper}
            for policy, (true, viper) in returns.items()]


def test_probes_paid_like_the_noisiest_expert_are_flagged_in_the_recipe_report():
    # reacher-easy's measured means: holding still out-earns the expert under noise 10 (its noisiest grade)
    reacher = _rows("reacher-easy", {
        "expert": (988.4, 1372.2), "noisy1": (913.0, 1050.7), "noisy3": (661.2, 871.9), "noisy10": (134.8, 565.8),
        "random": (77.6, 625.3), "still": (0.0, 856.1), "held25": (41.2, 533.3),
    })
    warnings = probe_warnings(default_recipe("reacher-easy"), reacher)
    assert warnings == ["still (true return 0.0) earns VIPER return 856.1, 62 % of the expert's, at least the "
                        "expert's under action noise 10 (565.8)"]
    summary = _stages([_episode("expert", 150.0, 5.0), _episode("random", 10.0, -1.0)], None)["reward"]
    assert "Hack risk" not in reward_sections(summary)
    report = reward_sections({**summary, "probe_warnings": warnings})
    assert "**Hack risk.**" in report and f"- {warnings[0]}\n" in report
    # cartpole-swingup's: every probe below the noisy expert
    cartpole = _rows("cartpole-swingup", {
        "expert": (863.5, 5558.3), "noisy0.3": (836.9, 5079.8), "noisy1": (636.3, 3335.5), "random": (68.8, -346.8),
        "still": (0.0, -277.2), "held25": (185.7, 62.9),
    })
    assert probe_warnings(default_recipe("cartpole-swingup"), cartpole) == []
    assert probe_warnings(default_recipe("cartpole-swingup"), cartpole[:1]) == []  # no noisy grade scored
    assert probe_warnings(default_recipe("cartpole-swingup", graded_noise=()), cartpole) == []  # no noisy grade

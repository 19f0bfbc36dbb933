import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from agents.workspace import load_agent
from experiments.dmc_benchmark import (
    GridRun, GridSettings, final_evaluation, physics_steps_per_agent_step, plan_grid, run_each_in_a_process, run_grid,
    run_one, run_plan, write_results,
)
from experiments.train_agent import agent_config, evaluate_run


def test_plan_checks_the_grid_before_anything_runs(tmp_path):
    assert physics_steps_per_agent_step("cartpole-swingup") == 8 and physics_steps_per_agent_step("reacher-easy") == 4
    assert physics_steps_per_agent_step("walker-walk") == 2 and physics_steps_per_agent_step("cheetah-run") == 4
    runs = plan_grid(["cartpole-swingup"], ["drqv2"], ["pixels", "state"], ["env"], [0, 1], {})
    assert len(runs) == 4 and runs[0].directory(tmp_path) == tmp_path / "cartpole-swingup/drqv2-pixels-env/seed0"
    assert physics_steps_per_agent_step("pendulum-swingup") == 4  # outside DMC-100k: PlaNet's common repeat
    with pytest.raises(ValueError, match="unknown DMC domain 'hoppr'"):
        plan_grid(["hoppr-hop"], ["drqv2"], ["pixels"], ["env"], [0], {})
    with pytest.raises(ValueError, match="unknown task 'jump' for DMC domain 'hopper'"):
        plan_grid(["hopper-jump"], ["drqv2"], ["pixels"], ["env"], [0], {})
    with pytest.raises(ValueError, match="no --model for"):
        plan_grid(["cartpole-swingup"], ["drqv2"], ["pixels"], ["viper"], [0], {})
    with pytest.raises(FileNotFoundError, match="not found"):
        plan_grid(["cartpole-swingup"], ["drqv2"], ["pixels"], ["viper"], [0], {"cartpole-swingup": tmp_path / "x"})
    with pytest.raises(ValueError, match="state observations run with drqv2"):
        plan_grid(["cartpole-swingup"], ["drq", "drqv2"], ["state"], ["env"], [0], {})
    with pytest.raises(ValueError, match="ratio runs need a baseline per task: no --baseline-model for"):
        plan_grid(["cartpole-swingup"], ["drqv2"], ["pixels"], ["ratio"], [0], {"cartpole-swingup": tmp_path})
    with pytest.raises(FileNotFoundError, match="baseline for cartpole-swingup not found"):
        plan_grid(["cartpole-swingup"], ["drqv2"], ["pixels"], ["ratio"], [0], {"cartpole-swingup": tmp_path},
                  {"cartpole-swingup": tmp_path / "x"})
    assert len(plan_grid(["cartpole-swingup"], ["drqv2"], ["pixels"], ["viper", "ratio"], [0],
                         {"cartpole-swingup": tmp_path}, {"cartpole-swingup": tmp_path})) == 2
    with pytest.raises(ValueError, match="unknown reward"):
        plan_grid(["cartpole-swingup"], ["drqv2"], ["pixels"], ["sparse"], [0], {})
    with pytest.raises(ValueError, match="a grid label takes letters"):
        plan_grid(["cartpole-swingup"], ["drqv2"], ["pixels"], ["env"], [0], {}, label="a/b")


def test_a_ratio_run_gets_the_agent_a_viper_run_gets():
    settings = GridSettings()
    ratio, training, reward = run_plan(GridRun("cartpole-swingup", "drqv2", "pixels", "ratio", 0), settings)
    assert reward == "viper" and ratio == agent_config("drqv2", "cpu", "viper", "pixels")
    assert ratio.rnd_weight == 1.0 and ratio.standardize_reward
    assert (training.total_steps, training.eval_every) == (12_500, 1250)  # 100k and 10k physics steps
    env, training, reward = run_plan(GridRun("reacher-easy", "drqv2", "state", "env", 0),
                                     GridSettings(updates_per_step=2))
    assert reward == "env" and not env.standardize_reward and env.rnd_weight == 0.0
    assert training.updates_per_step == 2 and training.total_steps == 25_000


def test_grid_runs_in_parallel_processes_then_skips_finished_runs(tmp_path, capsys):
    runs = plan_grid(["cartpole-swingup"], ["drqv2"], ["state"], ["env"], [0, 1], {})
    settings = GridSettings(physics_steps=160, preset="cpu", eval_every_physics=160, eval_episodes=1,
                            update_every=1, agent_options={"std_steps": "7"}, final_eval_episodes=2)
    table = run_grid(tmp_path, runs, settings, {}, workers=2, reward_quality={"cartpole-swingup": 0.9741},
                     threads_per_run=1)
    for run in runs:
        summary = json.loads((run.directory(tmp_path) / "summary.json").read_text())
        assert summary["torch_threads"] == 1
        assert summary["env_steps"] == 20 and summary["physics_steps"] == 160 and summary["agent"] == "drqv2"
        assert summary["updates"] == 4 * 19  # 4 per agent step (states) from the last of 2 seed steps on
        assert load_agent(run.directory(tmp_path) / "checkpoint").config.std_steps == 7
        recorded = json.loads((run.directory(tmp_path) / "run.json").read_text())
        assert (recorded["physics_steps_per_agent_step"], recorded["env_steps_per_agent_step"]) == (8, 4)
        final = json.loads((run.directory(tmp_path) / "final_eval.json").read_text())
        assert final["episodes"] == len(final["true_returns"]) == 2 and final["seed"] == run.seed + 10_000
        assert final["env_steps"] == summary["env_steps"]  # of this agent: a longer rerun evaluates again
        # The run's own seed replays its last evaluation: the final evaluation's env is the run's.
        assert evaluate_run(run.directory(tmp_path), 1, run.seed)["true_return"] == summary["eval_true_return"]
    assert "| cartpole-swingup | 0.974 | drqv2 | state | env | 2 |" in table
    assert "| 2 | - | 160 |" in table  # the final evaluation's 2 episodes per run behind the figure
    assert (tmp_path / "cartpole-swingup_curves.png").is_file()
    capsys.readouterr()
    run_grid(tmp_path, runs, settings, {}, workers=2)
    assert "2 already done" in capsys.readouterr().out


def test_a_final_evaluation_needs_a_finished_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run.json is missing"):
        evaluate_run(tmp_path, 20)
    with pytest.raises(FileNotFoundError, match="the run has not finished"):
        final_evaluation(GridRun("cartpole-swingup", "drqv2", "state", "env", 0), tmp_path, 20)
    with pytest.raises(ValueError, match="final_eval_episodes must be >= 0"):
        GridSettings(final_eval_episodes=-1)


def _write_finished_run(out: Path, run: GridRun, true_return: float, elapsed_s: float) -> None:
    """What a finished grid run leaves for the table: its summary (100k physics steps) and 3-episode evaluations."""
    run.directory(out).mkdir(parents=True)
    (run.directory(out) / "summary.json").write_text(json.dumps(
        {**asdict(run), "eval_true_return": true_return, "elapsed_s": elapsed_s, "physics_steps": 100_000}))
    (run.directory(out) / "settings.json").write_text(json.dumps({"eval_episodes": 3}))


def test_results_give_viper_as_a_share_of_the_true_reward_agent(tmp_path):
    runs = [GridRun("cartpole-swingup", "drqv2", "pixels", reward, seed)
            for reward in ("viper", "ratio", "env") for seed in (0, 1)]
    returns = {("viper", 0): 200.0, ("viper", 1): 400.0, ("ratio", 0): 450.0, ("ratio", 1): 450.0,
               ("env", 0): 500.0, ("env", 1): 700.0}
    for run in runs:
        _write_finished_run(tmp_path, run, returns[(run.reward, run.seed)], elapsed_s=120.0)
    # A final evaluation over more episodes replaces the last evaluation's figure of its run.
    (runs[1].directory(tmp_path) / "final_eval.json").write_text(json.dumps(
        {"true_return": 600.0, "true_returns": [600.0] * 20, "episodes": 20, "seed": 10_001}))
    labelled = GridRun("cartpole-swingup", "drqv2", "pixels", "ratio", 0, "disagreement")
    assert labelled.directory(tmp_path) == tmp_path / "cartpole-swingup/drqv2-pixels-ratio+disagreement/seed0"
    _write_finished_run(tmp_path, labelled, 540.0, elapsed_s=60.0)
    table = write_results(tmp_path)
    assert "| cartpole-swingup | n/a | drqv2 | pixels | viper | 2 |" in table  # no reward quality recorded
    assert "| drqv2 | pixels | ratio (disagreement) | 1 | 540.0 +- 0.0 | 3 | 90 % | 100000 | 1.0 | - |" in table
    assert "| drqv2 | pixels | viper | 2 | 400.0 +- 200.0 | 3, 20 | 67 % | 100000 | 2.0 | - |" in table
    assert "| drqv2 | pixels | env | 2 | 600.0 +- 100.0 | 3 | - | 100000 | 2.0 | 759 +- 92 |" in table
    assert "| drqv2 | pixels | ratio | 2 | 450.0 +- 0.0 | 3 | 75 % | 100000 | 2.0 | - |" in table


def test_a_labelled_grid_with_its_own_reward_keeps_the_plain_rows_spearman(tmp_path):
    plain = GridRun("point_mass-easy", "drqv2", "state", "ratio", 0)
    spread = GridRun("point_mass-easy", "drqv2", "state", "ratio", 0, "spread")
    bonus = GridRun("point_mass-easy", "drqv2", "state", "ratio", 0, "bonus")
    for run in (plain, spread, bonus):
        _write_finished_run(tmp_path, run, 800.0, elapsed_s=60.0)
    settings = GridSettings(final_eval_episodes=0)  # finished runs: the grid only writes the table
    run_grid(tmp_path, [plain], settings, {}, reward_quality={"point_mass-easy": 0.952})
    table = run_grid(tmp_path, [spread], settings, {}, reward_quality={"point_mass-easy": 0.868})
    assert "| point_mass-easy | 0.952 | drqv2 | state | ratio | 1 |" in table
    assert "| point_mass-easy | 0.868 | drqv2 | state | ratio (spread) | 1 |" in table
    assert "| point_mass-easy | 0.952 | drqv2 | state | ratio (bonus) | 1 |" in table  # the plain task's reward


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process parents from /proc (Linux)")
def test_stopping_the_grid_stops_its_worker_processes(tmp_path):
    command = [sys.executable, "-m", "experiments.cli", "benchmark-dmc", "--out", str(tmp_path), "--tasks",
               "cartpole-swingup", "--obs", "state", "--rewards", "env", "--seeds", "0", "--physics-steps", "800000"]
    grid = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_file = tmp_path / "cartpole-swingup" / "drqv2-state-env" / "seed0" / "run.json"
    deadline = time.monotonic() + 60
    while not run_file.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run_file.is_file(), "the worker never started its run"
    workers = _children(grid.pid)
    assert workers
    grid.send_signal(signal.SIGTERM)
    grid.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers), "a worker outlived the grid"


def _killed_the_first_time(marker: str, out: str) -> None:
    """A job whose process is killed by SIGKILL the first time it runs, as a renderer's segfault kills a run."""
    if not Path(marker).exists():
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    Path(out).write_text("done")


def _fails(marker: str, out: str) -> None:
    with open(marker, "a") as starts:
        starts.write("started\n")
    raise ValueError("a bad setting")


def test_a_run_killed_by_a_signal_starts_again_and_an_error_stops_the_grid(tmp_path, capsys):
    jobs = [(str(tmp_path / f"marker{i}"), str(tmp_path / f"out{i}")) for i in range(2)]
    done = []
    run_each_in_a_process(_killed_the_first_time, jobs, 2, done.append)
    assert sorted(done) == jobs and all(Path(out).read_text() == "done" for _, out in jobs)
    assert capsys.readouterr().out.count("killed by signal 9; starting it again (restart 1 of 2)") == 2

    marker = tmp_path / "failures"
    with pytest.raises(RuntimeError, match="failed \\(exit code 1\\); the error is above"):
        run_each_in_a_process(_fails, [(str(marker), "unused")], 2, done.append)
    assert marker.read_text() == "started\n"  # an error is not retried

    Path(jobs[0][0]).unlink()
    with pytest.raises(RuntimeError, match="exit code -9\\); killed by signal 9 on each of its 1 starts"):
        run_each_in_a_process(_killed_the_first_time, jobs[:1], 1, done.append, restarts=0)


def test_a_reward_dir_gives_the_grid_its_models_and_its_held_out_spearman(tmp_path, monkeypatch):
    import experiments.dmc_benchmark as benchmark_module
    from experiments.cli import main

    reward_dir = tmp_path / "reward"
    for model in ("video/model", "video-random/model"):
        (reward_dir / model).mkdir(parents=True)
    calls = []
    monkeypatch.setattr(benchmark_module, "run_grid", lambda *args: calls.append(args) or "table")
    args = ["benchmark-dmc", "--out", str(tmp_path / "grid"), "--tasks", "pendulum-swingup", "--rewards", "ratio",
            "--reward-dir", f"pendulum-swingup={reward_dir}"]
    with pytest.raises(SystemExit, match="no finished `wm build-reward` in"):
        main(args)
    summary = {"task": "pendulum-swingup",
               "reward": {"correlations": {"pendulum-swingup": {"spearman": 0.91, "pearson": 0.8}}}}
    (reward_dir / "reward_recipe.json").write_text(json.dumps(summary))
    main(args)
    (_, runs, _, models, _, baselines, quality, threads, baseline_tasks), = calls
    assert threads is None  # the default: the CPUs shared among the workers
    assert [run.reward for run in runs] == ["ratio", "ratio"]
    assert models == {"pendulum-swingup": reward_dir / "video/model"}
    assert baselines == {"pendulum-swingup": reward_dir / "video-random/model"} and baseline_tasks == {}
    assert quality == {"pendulum-swingup": 0.91}
    # a one-model recipe: its one model is also the baseline, conditioned on the play's task
    one_model = {**summary, "baseline_model": str(reward_dir / "video/model"), "baseline_task": "pendulum-swingup@play"}
    (reward_dir / "reward_recipe.json").write_text(json.dumps(one_model))
    main(args)
    (*_, baselines, _, _, baseline_tasks) = calls[-1]
    assert baselines == {"pendulum-swingup": reward_dir / "video/model"}
    assert baseline_tasks == {"pendulum-swingup": "pendulum-swingup@play"}


def test_a_one_model_ratio_run_scores_the_task_against_its_play(tmp_path, monkeypatch):
    import experiments.dmc_benchmark as benchmark_module

    calls = []
    monkeypatch.setattr(benchmark_module, "run_agent", lambda *args, **kwargs: calls.append(kwargs) or {"env_steps": 1})
    run = GridRun("cartpole-balance", "drqv2", "state", "ratio", 0)
    model = {"cartpole-balance": tmp_path / "video/model"}
    run_one(run, tmp_path, GridSettings(), model, model, threads=1,
            baseline_tasks={"cartpole-balance": "cartpole-balance@play"})
    assert (calls[0]["task"], calls[0]["baseline_task"]) == ("cartpole-balance", "cartpole-balance@play")

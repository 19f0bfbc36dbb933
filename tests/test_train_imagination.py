import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from agents.actor_critic import ActorCritic, ActorCriticConfig
from experiments.train_imagination import (
    ImaginationRun, ImaginationSettings, _imagine, check_world_model, evaluate_run, make_real_env,
    train_in_imagination,
)
from worldmodel.video_model import VideoModel


def _settings(physics_steps: int) -> ImaginationSettings:
    """Cartpole episodes of 12 agent steps (96 physics steps): 2 random, then 1 per iteration; imagination
    starts at any frame (the non-default path: the default, whole-window clips, is plain sampling)."""
    return ImaginationSettings(
        env="dmc:cartpole-balance", episode_steps=12, physics_steps=physics_steps, seed_episodes=2,
        tokenizer_steps=3, first_world_model_steps=4, world_model_steps=2, world_model_batch=2, world_model_clip=8,
        imagination_updates=2, imagined_envs=3, imagine_from="any_frame", eval_episodes=1,
        agent=ActorCriticConfig(horizon=3, feature_dim=16, hidden_dim=16),
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run of one iteration, resumed for a second with a larger budget and the other decoding (both may
    change; both decodings sample the same frames): the run directory and both progress records."""
    run = tmp_path_factory.mktemp("imagination") / "run"
    first = train_in_imagination(run, _settings(physics_steps=8 * 36))  # stops after one iteration
    resumed = train_in_imagination(run, replace(_settings(physics_steps=8 * 48), decoding="jacobi"))
    return run, first, resumed


def test_loop_runs_resumes_and_records_everything(trained_run):
    run, first, resumed = trained_run
    assert first["iteration"] == 1 and first["agent_steps"] == 36 and len(first["random_returns"]) == 2
    assert resumed["iteration"] == 2 and [row["iteration"] for row in resumed["history"]] == [0, 1]
    row = resumed["history"][-1]
    assert row["physics_steps"] == 8 * 48 and np.isfinite(row["eval_return"]) and row["imagined_psnr_first_15"] > 0
    assert row["imagined_reward_error_first_15"] >= 0
    phases = ["world_model", "imagination", "evaluation", "imagined_beside_real", "collection"]
    assert all(row[f"seconds_{phase}"] >= 0 for phase in phases)
    assert json.loads((run / "world_model" / "eval.json").read_text())["step"] == 4 + 2
    assert sorted(p.name for p in (run / "data" / "train").glob("*.npz")) == [f"episode{i:05d}.npz" for i in range(1, 4)]
    assert (run / "agent" / "agent.safetensors").exists() and list((run / "tb").glob("events.*"))
    assert (run / "videos" / "iteration001.gif").exists() and (run / "learning_curve.png").stat().st_size > 0
    with pytest.raises(ValueError, match="decoding must be one of"):
        replace(_settings(8 * 48), decoding="parallel")
    with pytest.raises(ValueError, match="imagine_from must be one of"):
        replace(_settings(8 * 48), imagine_from="anywhere")
    with pytest.raises(ValueError, match="imagined_envs"):
        train_in_imagination(run, ImaginationSettings(**{**_settings(8 * 48).__dict__, "imagined_envs": 4}))


def test_evaluation_plays_the_saved_agent_and_random_play_from_the_same_starts(trained_run, tmp_path):
    run = trained_run[0]
    result = evaluate_run(run, episodes=2)
    assert result["iterations"] == 2 and result["physics_steps"] == 8 * 48
    assert len(result["agent_returns"]) == len(result["random_returns"]) == 2 and len(set(result["seeds"])) == 2
    assert result["agent_mean"] == pytest.approx(np.mean(result["agent_returns"]))
    assert result["ratio_to_random"] == pytest.approx(result["agent_mean"] / result["random_mean"])
    assert json.loads((run / "evaluation.json").read_text()) == result
    assert (run / "videos" / "evaluation.gif").exists()
    # the same seeds: the policy's mode is deterministic, and random play replays exactly
    again = evaluate_run(run, episodes=2)
    assert again["agent_returns"] == result["agent_returns"] and again["random_returns"] == result["random_returns"]
    # sampled actions, seeded per episode: a rerun replays them; the mode's record stays; random play is the same
    sampled = evaluate_run(run, episodes=2, sample=True)
    assert sampled["policy"] == "sampled" and result["policy"] == "mode"
    assert evaluate_run(run, episodes=2, sample=True)["agent_returns"] == sampled["agent_returns"]
    assert sampled["random_returns"] == result["random_returns"]
    assert json.loads((run / "evaluation_sampled.json").read_text()) == sampled
    assert json.loads((run / "evaluation.json").read_text()) == result
    assert (run / "videos" / "evaluation_sampled.gif").exists()
    saved = json.loads((run / "settings.json").read_text())
    assert ImaginationSettings.from_dict(saved) == replace(_settings(8 * 48), decoding="jacobi")
    with pytest.raises(ValueError, match="episodes must be a positive int"):
        evaluate_run(run, episodes=0)
    with pytest.raises(FileNotFoundError, match="no agent trained by train-imagination"):
        evaluate_run(tmp_path, episodes=1)


def test_episode_start_imagines_episodes_of_the_real_length_carried_on_across_updates(trained_run, tmp_path, monkeypatch):
    shutil.copytree(trained_run[0], tmp_path / "run")
    (tmp_path / "run" / "settings.json").unlink()
    settings = replace(_settings(8 * 48), imagine_from="episode_start", imagination_updates=5)  # 5 x 3 steps
    run = ImaginationRun(tmp_path / "run", settings)
    env = make_real_env(settings)
    agent = ActorCritic(env.observation_space, env.action_space, settings.agent)
    rollouts, rollout = [], agent.rollout
    monkeypatch.setattr(agent, "rollout", lambda env, seed=None: rollouts.append(rollout(env, seed)) or rollouts[-1])
    _imagine(run, agent, VideoModel.load(run.world_model_run / "model"), iteration=0, terminations=False)
    truncated = np.concatenate([batch["truncated"].numpy() for batch in rollouts])
    valid = np.concatenate([batch["valid"].numpy() for batch in rollouts])
    assert truncated.shape == (15, 3)
    assert truncated[11].all() and truncated.sum() == 3  # the real episodes' 12 agent steps, then a reset step
    assert not valid[12].any() and valid[:12].all() and valid[13:].all()


def test_world_model_check_imagines_expert_and_random_episodes_from_their_first_frame(trained_run):
    run = trained_run[0]
    result = check_world_model(run, episodes=2)
    for name in ("expert", "random"):
        part = result[name]
        assert len(part["real_returns"]) == len(part["imagined_returns"]) == 2
        assert part["imagined_mean"] == pytest.approx(np.mean(part["imagined_returns"]))
    assert result["expert"]["real_mean"] > result["random"]["real_mean"]  # the expert keeps the pole up
    assert json.loads((run / "world_model_check.json").read_text()) == result
    assert (run / "videos" / "world_model_check.gif").exists()
    assert check_world_model(run, episodes=2) == result  # seeded: the same episodes, the same imagination
    with pytest.raises(FileNotFoundError, match="holds no world model"):
        check_world_model(run / "missing")

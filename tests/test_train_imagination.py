import json
import shutil
from dataclasses import replace
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from agents.actor_critic import ActorCritic, ActorCriticConfig
from envs.collect import PolicySpec, collect
from envs.experts import make_expert
from experiments import train_imagination
from experiments.diagnose_imagination import DiagnosisSettings, diagnose_imagination
from experiments.train_imagination import (
    ImaginationRun, ImaginationSettings, _imagined_beside_real, check_world_model, evaluate_run,
    imagine, make_real_env, train_in_imagination,
)
from worldmodel.checkpoint import load_checkpoint
from worldmodel.video_model import VideoModel


def _settings(physics_steps: int) -> ImaginationSettings:
    """Cartpole episodes of 12 agent steps (96 physics steps): 2 random, then 1 per iteration; imagination
    starts at any frame (the non-default path: the default, whole-window clips, is plain sampling)."""
    return ImaginationSettings(
        env="dmc:cartpole-balance", episode_steps=12, physics_steps=physics_steps, seed_episodes=2,
        tokenizer_steps=3, first_world_model_steps=4, world_model_steps=2, world_model_batch=2, world_model_clip=8,
        imagination_updates=2, imagined_envs=3, imagine_from="any_frame", eval_episodes=1,
        agent=ActorCriticConfig(horizon=3, feature_dim=16, hidden_dim=16, epochs=2, minibatches=2),
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
    assert json.loads((run / "world_model" / "eval.json").read_text())["step"] == 4 + 2
    assert sorted(p.name for p in (run / "data" / "train").glob("*.npz")) == [f"episode{i:05d}.npz" for i in range(1, 4)]
    assert (run / "checkpoint" / "model.safetensors").exists() and list((run / "tb").glob("events.*"))
    assert (run / "videos" / "iteration001.gif").exists() and (run / "learning_curve.png").stat().st_size > 0
    with pytest.raises(ValueError, match="decoding must be one of"):
        replace(_settings(8 * 48), decoding="parallel")
    with pytest.raises(ValueError, match="imagine_from must be one of"):
        replace(_settings(8 * 48), imagine_from="anywhere")
    with pytest.raises(ValueError, match="imagined_envs"):
        train_in_imagination(run, ImaginationSettings(**{**_settings(8 * 48).__dict__, "imagined_envs": 4}))


def test_expert_episodes_join_the_world_models_batches_and_the_check_reports_before_imagining(tmp_path, capsys):
    experts = tmp_path / "experts"
    collect("dmc:cartpole-balance", [PolicySpec("expert")], 3, experts, test_fraction=0.34, max_steps=12,
            env_options={"action_repeat": 8})  # the run's rate: a frame every 8 physics steps
    settings = replace(_settings(8 * 36), expert_data=str(experts), expert_fraction=0.5, check_episodes=1)
    # a gate no world model passes: the run stops before any actor-critic training, and says why
    assert train_in_imagination(tmp_path / "run", replace(settings, check_gate=100.0))["iteration"] == 0
    assert "stopped before the actor-critic: the world model imagines the expert's actions" in capsys.readouterr().out
    assert train_in_imagination(tmp_path / "run", settings)["iteration"] == 1  # the gate may change on resume
    world_model = json.loads((tmp_path / "run" / "world_model" / "eval.json").read_text())
    # trained, with the expert episodes encoded, by the gated first invocation; the second took it as it was
    assert world_model["cache"]["mix"] == {"encoded": 3, "reused": 0}
    check = json.loads((tmp_path / "run" / "world_model_check.json").read_text())
    out = capsys.readouterr().out
    assert f"world model check: expert imagined {check['expert']['imagined_mean']:.1f}" in out
    assert out.index("world model check") < out.index('"iteration": 0')  # reported before the first row
    # every later world model is checked too, its shares logged beside the iteration's returns
    history = train_in_imagination(tmp_path / "run", replace(settings, physics_steps=8 * 48))["history"]
    later = json.loads((tmp_path / "run" / "checks" / "iteration001" / "world_model_check.json").read_text())
    assert history[1]["check_expert_share"] == later["expert"]["imagined_mean"] / later["expert"]["real_mean"]
    assert history[0]["check_random_share"] == check["random"]["imagined_mean"] / check["random"]["real_mean"]
    assert later["expert"]["real_returns"] == check["expert"]["real_returns"]  # the same episodes, a newer model
    with pytest.raises(ValueError, match="go together"):
        replace(settings, expert_fraction=0.0)
    with pytest.raises(ValueError, match="needs check_episodes"):
        replace(settings, check_episodes=0, check_gate=0.7)
    with pytest.raises(ValueError, match="8 env steps per frame"):
        train_in_imagination(tmp_path / "other", replace(settings, action_repeat=4, check_episodes=0))


def test_evaluation_plays_the_saved_agent_and_random_play_from_the_same_starts(trained_run, tmp_path):
    run = trained_run[0]
    result = evaluate_run(run, episodes=2)
    assert result["iterations"] == 2 and result["physics_steps"] == 8 * 48
    assert len(result["agent_returns"]) == len(result["random_returns"]) == 2 and len(set(result["seeds"])) == 2
    assert result["random_returns"] == pytest.approx([_random_return(_settings(8 * 48), s) for s in result["seeds"]])
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
    imagine(settings, run.data, agent, VideoModel.load(run.world_model_run / "model"), iteration=0, terminations=False)
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
    assert result["expert"]["real_mean"] > result["random"]["real_mean"]  # the expert keeps the pole up
    env = make_real_env(_settings(8 * 48))
    expert = make_expert("cartpole-balance", env)
    assert result["expert"]["real_returns"] == pytest.approx([_return(env, expert, s) for s in result["seeds"]])
    random_returns = [_random_return(_settings(8 * 48), seed) for seed in result["seeds"]]
    assert result["random"]["real_returns"] == pytest.approx(random_returns)
    assert json.loads((run / "world_model_check.json").read_text()) == result
    assert (run / "videos" / "world_model_check.gif").exists()
    assert check_world_model(run, episodes=2) == result  # seeded: the same episodes, the same imagination
    with pytest.raises(FileNotFoundError, match="holds no world model"):
        check_world_model(run / "missing")


def _return(env, policy, seed: int) -> float:
    """An episode's return, played with plain gymnasium calls (independent of the code under test; summed in
    float64, where the code under test sums float32 rewards)."""
    obs, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        total, done = total + float(reward), terminated or truncated
    return total


def _random_return(settings: ImaginationSettings, seed: int) -> float:
    env = make_real_env(settings)
    env.action_space.seed(seed)
    return _return(env, lambda obs: env.action_space.sample(), seed)


def test_each_phase_is_timed_and_imagined_errors_averaged_over_15_steps(trained_run, tmp_path, monkeypatch):
    """One more iteration on a fake clock that each phase advances by its own power of two."""
    shutil.copytree(trained_run[0], tmp_path / "run")
    clock = [1000.0]

    def advancing(function, seconds):
        def timed(*args, **kwargs):
            result = function(*args, **kwargs)
            clock[0] += seconds(*args, **kwargs) if callable(seconds) else seconds
            return result
        return timed

    step_psnr, reward_error = np.arange(20.0), np.arange(20.0) / 10
    monkeypatch.setattr(train_imagination, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(train_imagination, "_train_world_model", advancing(train_imagination._train_world_model, 1))
    monkeypatch.setattr(train_imagination, "imagine", advancing(train_imagination.imagine, 2))
    monkeypatch.setattr(
        train_imagination, "play", advancing(train_imagination.play, lambda *args, sample: 16 if sample else 4)
    )
    monkeypatch.setattr(
        train_imagination, "_imagined_beside_real",
        advancing(lambda *args: (step_psnr, reward_error), 8),
    )
    progress = train_in_imagination(tmp_path / "run", replace(_settings(8 * 60), decoding="jacobi"))
    row = progress["history"][-1]
    assert row["iteration"] == 2
    assert {phase: row[f"seconds_{phase}"] for phase in ("world_model", "imagination", "evaluation",
                                                          "imagined_beside_real", "collection")} == {
        "world_model": 1, "imagination": 2, "evaluation": 4, "imagined_beside_real": 8, "collection": 16,
    }
    assert row["imagined_psnr_first_15"] == pytest.approx(7.0)  # mean of 0 .. 14
    assert row["imagined_reward_error_first_15"] == pytest.approx(0.7)


def test_imagined_beside_real_measures_the_reward_heads_absolute_error(trained_run, tmp_path):
    """A reward head that always says 0.25, against an episode of known rewards: the error per step is known."""
    run = trained_run[0]
    model = VideoModel.load(run / "world_model" / "model", "cpu")
    last = model.transformer.reward_head[-2]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.constant_(last.bias, float(np.log1p(0.25)))  # symlog(0.25): the head predicts in symlog space
    episode = dict(np.load(run / "data" / "train" / "episode00001.npz"))
    episode["rewards"] = np.linspace(0.0, 1.0, len(episode["actions"]))
    step_psnr, error = _imagined_beside_real(model, episode, tmp_path / "beside", 10.0, "sequential", False)
    context = max(1, model.window)
    steps = len(episode["actions"]) - context  # every real action but the padding, after the context
    np.testing.assert_allclose(error, np.abs(0.25 - episode["rewards"][context - 1 : context - 1 + steps]), atol=1e-6)
    assert step_psnr.shape == (steps,) and (tmp_path / "beside.gif").exists()


def test_evaluation_summary_of_known_returns(trained_run, tmp_path, monkeypatch):
    """Agent returns 1 and 3, random play 0.5 and 1.5: means 2 and 1, ratio 2; a zero random mean gives no ratio."""
    shutil.copytree(trained_run[0], tmp_path / "run")
    video = np.zeros((3, 64, 64, 3), np.uint8)
    agent_returns, random_returns = iter([1.0, 3.0, 1.0, 3.0]), iter([0.5, 1.5])

    def play(*args, sample):
        return {"video": video, "rewards": np.array([next(agent_returns), 0.0])}

    monkeypatch.setattr(train_imagination, "play", play)
    monkeypatch.setattr(train_imagination, "_play_random", lambda env, seed: {"rewards": np.array([next(random_returns)])})
    result = evaluate_run(tmp_path / "run", episodes=2)
    summary = [result[key] for key in ("agent_mean", "agent_std", "random_mean", "random_std", "ratio_to_random")]
    assert summary == [2.0, 1.0, 1.0, 0.5, 2.0]
    monkeypatch.setattr(train_imagination, "_play_random", lambda env, seed: {"rewards": np.zeros(1)})
    assert evaluate_run(tmp_path / "run", episodes=2)["ratio_to_random"] is None


def _without_timings(history):
    return [{k: v for k, v in row.items() if not k.startswith("seconds_")} for row in history]


def test_interrupted_and_budgeted_runs_resume_to_the_uninterrupted_run(trained_run, tmp_path):
    """A run stopped by its time budget before its first iteration, then resumed, ends exactly where a run of
    both iterations does. The fixture's run (stopped after one iteration by its physics budget, resumed with the
    other decoding, which samples the same frames through differently rounded logits) ends there too, to
    float rounding."""
    run, _, resumed = trained_run
    straight = train_in_imagination(tmp_path / "straight", _settings(physics_steps=8 * 48))
    budgeted = tmp_path / "budgeted"
    stopped = train_in_imagination(budgeted, replace(_settings(physics_steps=8 * 48), max_minutes=1e-9))
    assert stopped["iteration"] == 0 and stopped["episodes"] == 2  # random play, then the budget
    again = train_in_imagination(budgeted, _settings(physics_steps=8 * 48))
    assert _without_timings(again["history"]) == _without_timings(straight["history"])
    assert len(resumed["history"]) == len(straight["history"]) == 2
    for row, expected in zip(_without_timings(resumed["history"]), _without_timings(straight["history"])):
        assert row == pytest.approx(expected, rel=1e-5)
    weights = [load_checkpoint(path / "checkpoint")[0] for path in (tmp_path / "straight", budgeted, run)]
    for name, value in weights[0].items():
        assert torch.equal(weights[1][name], value), name
        torch.testing.assert_close(weights[2][name], value, rtol=1e-4, atol=1e-6, msg=name)


def test_episodes_written_after_the_last_checkpoint_are_dropped_on_resume(trained_run, tmp_path):
    """A crash between collecting an episode and the iteration's checkpoint leaves the episode (and its
    cached codes) on disk; the resumed run must not train its world model on it."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run[0], copy)
    stray = [copy / "data" / "train" / "episode00004.npz"]
    stray += [cache / "train" / "episode00004.npz" for cache in (copy / "data" / "token_cache").iterdir()]
    for path in stray:
        shutil.copy(min(path.parent.glob("episode*.npz")), path)
    settings = replace(_settings(8 * 48), decoding="jacobi")
    env = make_real_env(settings)
    ImaginationRun(copy, settings).restore(ActorCritic(env.observation_space, env.action_space, settings.agent))
    assert not any(path.exists() for path in stray)
    assert (copy / "data" / "train" / "episode00003.npz").exists()


def _viper_model(directory):
    """A random-weight expert video model of 64-pixel cartpole frames 2 physics steps apart, calibrated."""
    from tests.conftest import randomize_weights
    from worldmodel.tokenizer import FrameTokenizer, TokenizerConfig
    from worldmodel.transformer import VideoTransformer, VideoTransformerConfig
    from worldmodel.video_model import VideoModelInfo

    torch.manual_seed(0)
    tokenizer = FrameTokenizer(TokenizerConfig(image_size=64, base_channels=8, ch_mult=(1, 2, 2, 2), latent_dim=8,
                                               quantizer="vq", quantizer_kwargs={"codebook_size": 16}))
    transformer = VideoTransformer(VideoTransformerConfig(vocab_size=16, code_shape=(8, 8), window=2, embed_dim=16,
                                                          layers=1, heads=2))
    stats = {"mean": -150.0, "std": 10.0, "frames": 100}
    info = VideoModelInfo(frame_skip=2, tasks=["cartpole-balance"], reward_stats={"cartpole-balance": stats})
    VideoModel(tokenizer, randomize_weights(transformer.eval()), info).save(directory)
    return directory


def test_a_viper_run_learns_the_video_reward_and_reports_the_true_return(tmp_path):
    """VIPER's agent: the world model's data carry the VIPER reward of every frame, the returns reported are
    the env's own."""
    from envs.viper import ViperReward
    from envs.wrappers import ActionRepeat
    from worldmodel.episodes import DatasetManifest, read_episode

    model = _viper_model(tmp_path / "video")
    settings = replace(_settings(8 * 36), viper_model=str(model), viper_baseline_model=str(model))
    progress = train_in_imagination(tmp_path / "run", settings)
    assert DatasetManifest.load(tmp_path / "run" / "data").frame_skip == 8  # a frame per agent decision
    seed = train_imagination.episode_seed(settings, 1)  # the second random-play episode, in the train split
    assert progress["random_returns"][1] == pytest.approx(_random_return(settings, seed), rel=1e-5)
    # the same episode stepped by hand: 4 scored frames of 2 physics steps per agent step
    loaded = VideoModel.load(model)
    scored = ActionRepeat(ViperReward(envs.make("dmc:cartpole-balance"), loaded, loaded), 4)
    scored = gym.wrappers.TimeLimit(scored, 12)
    scored.action_space.seed(seed)
    rewards = []
    obs, _ = scored.reset(seed=seed)
    for _ in range(12):
        rewards.append(scored.step(scored.action_space.sample())[1])
    written = read_episode(tmp_path / "run" / "data" / "train" / "episode00001.npz")
    assert written.rewards[:-1] == pytest.approx(rewards, rel=1e-4, abs=1e-4)
    assert abs(sum(rewards) - progress["random_returns"][1]) > 1.0  # a reward apart from the env's
    assert "collect_viper_return" in progress["history"][0]
    check = check_world_model(tmp_path / "run", episodes=1)
    assert check["random"]["true_returns"] == pytest.approx([_random_return(settings, check["seeds"][0])], rel=1e-5)
    with pytest.raises(ValueError, match="give viper_model too"):
        replace(settings, viper_model=None)
    with pytest.raises(ValueError, match="give viper_baseline_model too"):
        replace(settings, viper_baseline_model=None, viper_baseline_task="cartpole-balance@play")


def test_an_agent_on_code_vectors_learns_in_imagination_and_plays_the_real_env(tmp_path):
    run = tmp_path / "run"
    settings = replace(_settings(physics_steps=8 * 36), agent_observes="codes", tokenizer_preset="fast")
    progress = train_in_imagination(run, settings)
    assert progress["iteration"] == 1 and np.isfinite(progress["history"][0]["eval_return"])
    agent_weights = load_checkpoint(run / "checkpoint")[0]
    first_layer = next(value for key, value in agent_weights.items() if key.endswith("trunk.0.weight"))
    assert first_layer.shape[1] == 3 * 4 * 4 * 5  # 3 stacked grids of 4x4 code vectors of 5 FSQ values
    result = evaluate_run(run, episodes=1)
    assert len(result["agent_returns"]) == 1 and np.isfinite(result["agent_returns"][0])
    with pytest.raises(ValueError, match="agent_observes must be one of"):
        replace(settings, agent_observes="pixels")


def _tree(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_diagnosis_trains_the_runs_agent_on_in_its_frozen_world_model_and_resumes_exactly(trained_run, tmp_path):
    run = trained_run[0]
    before = _tree(run)
    settings = DiagnosisSettings(run=str(run), updates=2, eval_every=1, eval_episodes=2, imagine_from="episode_start")
    whole = diagnose_imagination(tmp_path / "whole", replace(settings, updates=4))
    assert [row["updates"] for row in whole["rows"]] == [0, 1, 2, 3, 4]
    assert all(len(row["real_returns"]) == 2 and np.isfinite(row["real_mean"]) for row in whole["rows"])
    assert "imagination_reward" in whole["rows"][1] and whole["imagine_from"] == "episode_start"
    assert whole["random_returns"] == json.loads((run / "progress.json").read_text())["random_returns"]
    assert _tree(run) == before  # the diagnosed run is only read
    assert json.loads((tmp_path / "whole" / "diagnosis.json").read_text()) == whole
    assert (tmp_path / "whole" / "diagnosis.png").stat().st_size > 0
    # the run's last agent is where it starts, unless a fresh one is asked for
    fresh = diagnose_imagination(tmp_path / "fresh", replace(settings, updates=1, fresh_agent=True))
    assert fresh["seeds"] == whole["seeds"] and fresh["rows"][0]["real_returns"] != whole["rows"][0]["real_returns"]
    # stopped after 2 updates and resumed with a larger budget: the uninterrupted diagnosis
    diagnose_imagination(tmp_path / "split", settings)
    assert diagnose_imagination(tmp_path / "split", replace(settings, updates=4)) == whole
    with pytest.raises(ValueError, match="eval_every"):
        replace(settings, updates=3, eval_every=2)
    with pytest.raises(ValueError, match="imagine_from must be one of"):
        replace(settings, imagine_from="anywhere")
    with pytest.raises(FileNotFoundError, match="no world model and agent trained by train-imagination"):
        diagnose_imagination(tmp_path / "none", replace(settings, run=str(tmp_path / "missing")))


def test_the_control_learns_from_real_envs_seen_through_the_tokenizer_and_resumes_exactly(trained_run, tmp_path):
    settings = DiagnosisSettings(run=str(trained_run[0]), updates=1, eval_every=1, eval_episodes=1,
                                 rollouts="real_env", imagined_envs=2)
    whole = diagnose_imagination(tmp_path / "whole", replace(settings, updates=2))
    assert whole["rollouts"] == "real_env" and [row["updates"] for row in whole["rows"]] == [0, 1, 2]
    # cartpole's true reward is in [0, 1] per physics step, 8 of them per agent step
    assert all(0 <= row["imagination_reward"] <= 8 for row in whole["rows"][1:])
    diagnose_imagination(tmp_path / "split", settings)
    assert diagnose_imagination(tmp_path / "split", replace(settings, updates=2)) == whole
    with pytest.raises(ValueError, match="rollouts must be one of"):
        replace(settings, rollouts="elsewhere")


def test_world_model_check_plays_saved_agents_real_and_closed_loop_and_can_write_elsewhere(trained_run, tmp_path):
    run = trained_run[0]
    before = (run / "world_model_check.json").read_bytes() if (run / "world_model_check.json").exists() else None
    result = check_world_model(run, episodes=2, agents={"own": run, "again": run}, out=tmp_path / "check")
    own, again = result["agents"]["own"], result["agents"]["again"]
    assert len(own["real_returns"]) == len(own["imagined_returns"]) == 2
    assert own == again  # the same agent from the same start states, the model reset with the same seed
    assert own["real_returns"] != pytest.approx(result["random"]["real_returns"])  # its own actions, not random
    assert json.loads((tmp_path / "check" / "world_model_check.json").read_text()) == result
    assert (tmp_path / "check" / "videos" / "world_model_check.gif").exists()
    after = (run / "world_model_check.json").read_bytes() if (run / "world_model_check.json").exists() else None
    assert after == before  # the run's own check, on which its loop gates, is left alone

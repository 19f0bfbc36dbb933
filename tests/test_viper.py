import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import envs
from envs.atari import scoreboard_mask
from envs.viper import ViperReward, ViperRewardVector
from envs.wrappers import ActionRepeat, StateObservation, env_frame_skip
from tests.conftest import randomize_weights
from worldmodel.reward import VideoLikelihoodReward
from worldmodel.tokenizer import FrameTokenizer, TokenizerConfig
from worldmodel.transformer import VideoTransformer, VideoTransformerConfig
from worldmodel.video_model import VideoModel, VideoModelInfo

TOKENIZER = TokenizerConfig(
    image_size=32, base_channels=8, ch_mult=(1, 2, 2, 2), latent_dim=8, quantizer="vq",
    quantizer_kwargs={"codebook_size": 16},
)
TRANSFORMER = VideoTransformerConfig(vocab_size=16, code_shape=(4, 4), window=2, embed_dim=24, layers=2, heads=2)
STATS = {"mean": -40.0, "std": 4.0, "entropy_adjusted_mean": -5.0, "entropy_adjusted_std": 2.0, "frames": 100}


def _model(frame_skip: int = 2, num_tasks: int = 0, stats: bool = True, seed: int = 0) -> VideoModel:
    torch.manual_seed(seed)
    tasks = ["cartpole-swingup", "cartpole-balance"][: max(1, num_tasks)]
    info = VideoModelInfo(
        frame_skip=frame_skip, tasks=tasks, reward_stats={t: dict(STATS) for t in tasks} if stats else {}
    )
    transformer = VideoTransformer(VideoTransformerConfig(**{**TRANSFORMER.__dict__, "num_tasks": num_tasks}))
    # Perturbed weights: every frame of context moves the scores far beyond the tolerances.
    return VideoModel(FrameTokenizer(TOKENIZER), randomize_weights(transformer.eval()), info)


def _env(length: int | None = None) -> gym.Env:
    env = envs.make("dmc:cartpole-swingup", size=32)
    return env if length is None else gym.wrappers.TimeLimit(env, length)


def _run(env: gym.Env, steps: int, seed: int = 0) -> tuple[np.ndarray, list[float], list[dict]]:
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    frames, rewards, infos = [obs], [], []
    for _ in range(steps):
        obs, reward, _, _, info = env.step(env.action_space.sample())
        frames.append(obs)
        rewards.append(reward)
        infos.append(info)
    return np.stack(frames), rewards, infos


def _batch_log_prob(model: VideoModel, frames: np.ndarray, stride: int = 1) -> np.ndarray:
    """Per-frame log-likelihoods from the model's full-sequence forward, each phase a clip."""
    out = np.zeros(len(frames))
    for phase in range(stride):
        out[phase::stride] = model.log_prob(frames[None, phase::stride])[0].numpy()
    return out


@pytest.mark.parametrize("stride", [1, 2])
def test_rewards_equal_the_models_batch_log_prob(stride):
    model = _model(frame_skip=2 * stride)  # the env skips 2, so the context stride is `stride`
    frames, rewards, infos = _run(ViperReward(_env(), model, standardize=False), 12)
    assert model.info.frame_skip // 2 == stride
    np.testing.assert_allclose(rewards, _batch_log_prob(model, frames, stride)[1:], rtol=1e-5, atol=1e-3)
    assert all(info["viper_reward"] == r for info, r in zip(infos, rewards))


def test_standardisation_mix_and_task_reward():
    model = _model()
    plain_frames, plain_rewards, _ = _run(_env(), 8)
    wrapped = ViperReward(_env(), model, env_reward_weight=0.5, viper_weight=2.0)
    frames, rewards, infos = _run(wrapped, 8)
    np.testing.assert_array_equal(frames, plain_frames)
    task_rewards = np.array([info["task_reward"] for info in infos])
    np.testing.assert_array_equal(task_rewards, plain_rewards)
    standardised = (_batch_log_prob(model, frames)[1:] - STATS["mean"]) / STATS["std"]
    np.testing.assert_allclose([info["viper_reward"] for info in infos], standardised, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(rewards, 2.0 * standardised + 0.5 * task_rewards, rtol=1e-5, atol=1e-4)


def test_joint_reward_sums_the_last_frames_and_offline_scoring_matches():
    model = _model()
    wrapped = ViperReward(_env(), model, mode="joint", joint_frames=3, standardize=False)
    frames, rewards, _ = _run(wrapped, 10)
    scores = _batch_log_prob(model, frames)
    expected = [scores[max(0, t - 2) : t + 1].sum() for t in range(1, len(frames))]
    np.testing.assert_allclose(rewards, expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(wrapped.reward_fn.episode_rewards(frames), rewards, rtol=1e-5, atol=1e-3)


def _batch_scores(model: VideoModel, frames: np.ndarray, stride: int, score: str) -> np.ndarray:
    """Per-frame scores from the transformer's full-sequence pass over each phase's codes."""
    out = np.zeros(len(frames))
    for phase in range(stride):
        scores = model.transformer.code_scores(model.tokenizer.encode(frames[None, phase::stride]))
        value = scores.log_prob + (scores.entropy if score == "entropy_adjusted" else 0)
        out[phase::stride] = value[0].sum((1, 2)).detach().numpy()
    return out


@pytest.mark.parametrize(
    "score, mode, stride",
    [("log_prob", "conditional", 2), ("log_prob", "joint", 2), ("log_prob", "joint", 1),
     ("entropy_adjusted", "conditional", 2), ("entropy_adjusted", "joint", 1)],
)
def test_standardised_strided_and_joint_rewards_match_the_offline_scorer(score, mode, stride):
    model = _model(frame_skip=2 * stride)
    wrapped = ViperReward(_env(), model, score=score, mode=mode, joint_frames=3)
    frames, rewards, infos = _run(wrapped, 11)
    # Independently: batch scores per phase, standardised, summed over the joint window of that phase.
    mean, std = (STATS["mean"], STATS["std"]) if score == "log_prob" else (-5.0, 2.0)
    scores = (_batch_scores(model, frames, stride, score) - mean) / std
    window = 3 if mode == "joint" else 1
    expected = [sum(scores[t - k * stride] for k in range(window) if t - k * stride >= 0) for t in range(1, len(frames))]
    np.testing.assert_allclose(rewards, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(wrapped.reward_fn.episode_rewards(frames), rewards, rtol=1e-5, atol=1e-4)
    # The context matters: scored without it (each frame alone), the rewards are far off.
    alone = np.array([_batch_scores(model, f[None], 1, score)[0] for f in frames])
    assert np.abs((alone[1:] - mean) / std - scores[1:]).max() > 100 * 1e-4 * np.abs(scores[1:]).max()


@pytest.mark.parametrize("mode", ["conditional", "joint"])
def test_ratio_reward_is_the_expert_score_minus_the_baselines_on_the_experts_scale(mode):
    expert, baseline = _model(), _model(seed=1)
    wrapped = ViperReward(_env(), expert, baseline, mode=mode, joint_frames=3)
    frames, rewards, _ = _run(wrapped, 11)
    ratio = (_batch_log_prob(expert, frames) - _batch_log_prob(baseline, frames)) / STATS["std"]
    window = 3 if mode == "joint" else 1
    expected = [ratio[max(0, t - window + 1) : t + 1].sum() for t in range(1, len(frames))]
    np.testing.assert_allclose(rewards, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(wrapped.reward_fn.episode_rewards(frames), rewards, rtol=1e-5, atol=1e-4)
    assert np.abs(ratio[1:]).min() > 0.1  # the baseline really differs from the expert model
    # Scored against itself, a model leaves nothing: the ratio is exactly zero, across episode ends too.
    vector = ViperRewardVector(SyncVectorEnv([lambda n=n: _env(n) for n in (3, 4)]), expert, expert)
    vector.reset(seed=0)
    for _ in range(9):
        _, zeros, _, _, _ = vector.step(vector.action_space.sample())
        assert zeros.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("stride, score", [(1, "log_prob"), (2, "entropy_adjusted")])
def test_frame_weight_adds_the_ratio_of_each_frame_scored_alone(stride, score):
    expert, baseline = _model(frame_skip=2 * stride), _model(frame_skip=2 * stride, seed=1)
    wrapped = ViperReward(_env(), expert, baseline, frame_weight=0.5, score=score, standardize=False)
    frames, rewards, _ = _run(wrapped, 9)
    conditional = _batch_scores(expert, frames, stride, score) - _batch_scores(baseline, frames, stride, score)
    alone = np.array([_batch_scores(expert, f[None], 1, score)[0] - _batch_scores(baseline, f[None], 1, score)[0]
                      for f in frames])
    np.testing.assert_allclose(rewards, (conditional + 0.5 * alone)[1:], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(wrapped.reward_fn.episode_rewards(frames), rewards, rtol=1e-5, atol=1e-3)
    assert np.abs(alone[1:]).min() > 0.1 and np.abs(alone[stride:] - conditional[stride:]).min() > 0.1
    with pytest.raises(ValueError, match="needs a baseline"):
        ViperReward(_env(), expert, frame_weight=0.5)
    with pytest.raises(ValueError, match="frame_weight must be >= 0"):
        ViperReward(_env(), expert, baseline, frame_weight=-1.0)


def test_a_baseline_on_the_experts_tokenizer_shares_its_encode_and_scores_the_same():
    expert, other = _model(), _model(seed=1)
    baseline = VideoModel(copy.deepcopy(expert.tokenizer), other.transformer, other.info)  # equal weights, own copy
    wrapped = ViperReward(_env(), expert, baseline)
    assert wrapped.reward_fn.shared_tokenizer and not ViperReward(_env(), expert, other).reward_fn.shared_tokenizer
    frames, rewards, _ = _run(wrapped, 9)
    ratio = (_batch_log_prob(expert, frames) - _batch_log_prob(baseline, frames)) / STATS["std"]
    np.testing.assert_allclose(rewards, ratio[1:], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(wrapped.reward_fn.episode_rewards(frames), rewards, rtol=1e-5, atol=1e-4)


def test_a_task_conditioned_baseline_scores_the_experts_task_and_a_mismatched_one_is_refused():
    expert, baseline = _model(), _model(num_tasks=2, seed=1)
    frames, rewards, _ = _run(ViperReward(_env(), expert, baseline, standardize=False), 5)
    expected = _batch_log_prob(expert, frames) - baseline.log_prob(frames[None], task=torch.tensor([0]))[0].numpy()
    np.testing.assert_allclose(rewards, expected[1:], rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="likelihood ratio needs them equal"):
        ViperReward(_env(), expert, _model(frame_skip=4))


def test_one_model_of_two_sources_is_its_own_baseline():
    """Conditioned on the data's source as a task, one model gives log p(x | expert) - log p(x | play)."""
    model = _model(num_tasks=2)  # tasks: cartpole-swingup (the expert's source), cartpole-balance (the play's)
    wrapped = ViperReward(_env(), model, model, task="cartpole-swingup", baseline_task="cartpole-balance")
    frames, rewards, _ = _run(wrapped, 9)
    scores = [model.log_prob(frames[None], task=torch.tensor([i]))[0].numpy() for i in (0, 1)]
    np.testing.assert_allclose(rewards, ((scores[0] - scores[1]) / STATS["std"])[1:], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(wrapped.reward_fn.episode_rewards(frames), rewards, rtol=1e-5, atol=1e-4)
    assert np.abs(scores[0] - scores[1])[1:].min() > 0.1  # the two sources really differ
    with pytest.raises(ValueError, match="unknown task"):
        ViperReward(_env(), model, model, task="cartpole-swingup", baseline_task="cartpole-swingup@play")
    with pytest.raises(ValueError, match="there is no baseline"):
        ViperReward(_env(), model, task="cartpole-swingup", baseline_task="cartpole-balance")
    with pytest.raises(ValueError, match="not conditioned on tasks"):
        ViperReward(_env(), _model(), _model(seed=1), baseline_task="cartpole-balance")


def test_task_conditioning_picks_the_tasks_statistics_and_ids():
    model = _model(num_tasks=2)
    with pytest.raises(ValueError, match="pass task="):
        ViperReward(_env(), model)
    with pytest.raises(ValueError, match="unknown task"):
        ViperReward(_env(), model, task="walker-walk")
    frames, rewards, _ = _run(ViperReward(_env(), model, task="cartpole-balance", standardize=False), 5)
    expected = model.log_prob(frames[None], task=torch.tensor([1]))[0].numpy()[1:]
    np.testing.assert_allclose(rewards, expected, rtol=1e-5, atol=1e-3)


def test_vector_wrapper_resets_each_envs_context_at_its_own_episode_end():
    model = _model()
    lengths = [3, 5, 7]
    vector = SyncVectorEnv([lambda n=n: _env(n) for n in lengths])
    wrapped = ViperRewardVector(vector, model, standardize=False)
    obs, _ = wrapped.reset(seed=0)
    episodes = [[[frame]] for frame in obs]  # per env: episodes of frames
    rewards = [[[]] for _ in lengths]
    done = np.zeros(len(lengths), bool)
    for _ in range(16):
        obs, reward, terminated, truncated, info = wrapped.step(wrapped.action_space.sample())
        for i in range(len(lengths)):
            if done[i]:  # next-step autoreset: this frame starts a new episode, unrewarded
                assert reward[i] == 0.0 and info["task_reward"][i] == 0.0
                episodes[i].append([obs[i]])
                rewards[i].append([])
            else:
                episodes[i][-1].append(obs[i])
                rewards[i][-1].append(reward[i])
        done = terminated | truncated
    assert [len(e) for e in episodes] == [5, 3, 3]  # the envs really reset at different steps
    for env_episodes, env_rewards in zip(episodes, rewards):
        for frames, got in zip(env_episodes, env_rewards):
            expected = _batch_log_prob(model, np.stack(frames))[1:]
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


def test_vector_wrapper_refuses_same_step_autoreset():
    vector = SyncVectorEnv([_env, _env], autoreset_mode=AutoresetMode.SAME_STEP)
    with pytest.raises(ValueError, match="next-step autoreset"):
        ViperRewardVector(vector, _model())


def test_masked_pixels_do_not_change_the_reward():
    mask = np.zeros((32, 32), bool)
    mask[:6] = True
    reward_fn = VideoLikelihoodReward(_model(), 1, score_mask=mask)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    other = frames.copy()
    other[:, :6] = rng.integers(0, 256, (4, 6, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(reward_fn.episode_rewards(frames), reward_fn.episode_rewards(other))
    assert scoreboard_mask("Pong", 64)[:7].all() and not scoreboard_mask("Pong", 64)[8:].any()


def test_bad_inputs_are_named():
    model = _model(stats=False)
    with pytest.raises(ValueError, match="calibrate-reward"):
        ViperReward(_env(), model)
    with pytest.raises(ValueError, match="unknown VIPER reward mode"):
        ViperReward(_env(), model, mode="ratio", standardize=False)
    with pytest.raises(ValueError, match="unknown VIPER reward score"):
        ViperReward(_env(), model, score="ratio", standardize=False)
    old_bundle = _model()
    old_bundle.info.reward_stats = {"cartpole-swingup": {"mean": -40.0, "std": 4.0, "frames": 100}}
    with pytest.raises(ValueError, match="no entropy_adjusted reward statistics"):
        ViperReward(_env(), old_bundle, score="entropy_adjusted")
    with pytest.raises(ValueError, match="image size"):
        ViperReward(envs.make("dmc:cartpole-swingup", size=48), model, standardize=False).reset(seed=0)
    with pytest.raises(ValueError, match="no multiple"):
        ViperReward(_env(), _model(frame_skip=3), standardize=False)


def test_stable_baselines3_sac_trains_on_the_wrapped_env():
    from stable_baselines3 import SAC

    torch.manual_seed(0)  # NatureCNN needs frames of at least 36 pixels: a 64-pixel model and env
    tokenizer = FrameTokenizer(TokenizerConfig(**{**TOKENIZER.__dict__, "image_size": 64}))
    transformer = VideoTransformer(VideoTransformerConfig(**{**TRANSFORMER.__dict__, "code_shape": (8, 8)}))
    model = VideoModel(tokenizer, randomize_weights(transformer.eval()), VideoModelInfo(frame_skip=2))
    env = ViperReward(gym.wrappers.TimeLimit(envs.make("dmc:cartpole-swingup"), 50), model, standardize=False)
    agent = SAC("CnnPolicy", env, buffer_size=500, learning_starts=150, batch_size=16, seed=0, verbose=0,
                policy_kwargs={"features_extractor_kwargs": {"features_dim": 32}})
    before = [p.detach().clone() for p in agent.policy.actor.parameters()]
    agent.learn(total_timesteps=200)
    assert agent.num_timesteps == 200
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.policy.actor.parameters()))
    # The rewards SB3 stored are the video model's scores of the frames it stored, episode by episode.
    buffer = agent.replay_buffer
    frames = buffer.observations[:200, 0].transpose(0, 2, 3, 1)  # SB3 keeps images channels first
    next_frames = buffer.next_observations[:200, 0].transpose(0, 2, 3, 1)
    rewards = buffer.rewards[:200, 0]
    for start in range(0, 200, 50):  # four whole episodes of 50 steps
        episode = np.concatenate([frames[start : start + 1], next_frames[start : start + 50]])
        np.testing.assert_allclose(rewards[start : start + 50], _batch_log_prob(model, episode)[1:], rtol=1e-4, atol=1e-2)
    assert rewards.std() > 1.0


def test_action_repeat_outside_the_wrapper_sums_every_scored_frame():
    model = _model()
    actions = [np.array([a], np.float32) for a in (0.9, -0.4)]
    plain = ViperReward(_env(), model)
    plain.reset(seed=0)
    singles = [plain.step(action)[1:5:3] for action in actions for _ in range(3)]  # (reward, info) per step
    repeated = ActionRepeat(ViperReward(_env(), model), 3)
    repeated.reset(seed=0)
    for k, action in enumerate(actions):
        _, reward, _, _, info = repeated.step(action)
        group = singles[3 * k : 3 * k + 3]
        assert reward == pytest.approx(sum(r for r, _ in group), rel=1e-6)
        assert info["task_reward"] == pytest.approx(sum(i["task_reward"] for _, i in group), rel=1e-6)
        assert info["viper_reward"] == pytest.approx(reward, rel=1e-6)
    # its observations come 3 env steps (6 physics steps) apart, and a dataset of them says so
    assert env_frame_skip(repeated.get_wrapper_attr) == 6 == env_frame_skip(plain.get_wrapper_attr) * 3
    assert repeated.metadata["render_fps"] == plain.metadata["render_fps"] / 3
    with pytest.raises(ValueError, match="repeat"):
        ActionRepeat(_env(), 0)


def test_state_observation_outside_the_wrapper_keeps_the_frames_reward():
    """The state-observation control: the agent sees the state vector, the video model still
    scores the rendered frames, exactly as it would for a pixel agent."""
    model = _model()
    pixels = ViperReward(_env(), model)
    states = StateObservation(ViperReward(_env(), model))
    assert states.observation_space.shape == (5,) and states.observation_space.dtype == np.float32
    state, _ = states.reset(seed=3)
    pixels.reset(seed=3)
    physics = states.unwrapped.physics
    np.testing.assert_allclose(state[:1], [physics.named.data.qpos["slider"][0]], rtol=1e-6)
    for action in (0.7, -0.2, 0.4):
        frame, reward, *_ = pixels.step(np.array([action], np.float32))
        state, state_reward, *_ = states.step(np.array([action], np.float32))
        assert state_reward == reward
        assert state.shape == (5,) and state.dtype == np.float32
        np.testing.assert_array_equal(states.render(), frame)
    np.testing.assert_allclose(state[3:], physics.velocity(), rtol=1e-6)
    with pytest.raises(ValueError, match="no state"):
        StateObservation(envs.make("atari:Pong"))


def test_agents_on_states_render_frames_only_where_a_video_model_scores_them():
    from experiments.train_agent import env_factory

    on_viper = env_factory("dmc:cartpole-swingup", "viper", _model(), observation="state", action_repeat=2)(0)
    assert on_viper.unwrapped.observation == "pixels"  # the video model scores every frame
    env = env_factory("dmc:cartpole-swingup", "env", observation="state", action_repeat=2)(0)
    assert env.unwrapped.observation == "state"  # frames only for GIFs, on request
    state, _ = env.reset(seed=1)
    assert env.observation_space.shape == state.shape == (5,)
    state, *_ = env.step(np.array([0.3], np.float32))
    np.testing.assert_array_equal(state, env.unwrapped.state())
    assert env.render().shape == (64, 64, 3)

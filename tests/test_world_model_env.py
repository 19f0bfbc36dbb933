import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest
import torch

from envs.world_model import WorldModelEnv, WorldModelVectorEnv
from tests.conftest import moving_square_video, randomize_weights
from worldmodel.tokenizer import FrameTokenizer, TokenizerConfig
from worldmodel.transformer import VideoTransformer, VideoTransformerConfig
from worldmodel.video_model import VideoModel, VideoModelInfo

TOKENIZER = TokenizerConfig(
    image_size=32, base_channels=8, ch_mult=(1, 2, 2, 2), latent_dim=8, quantizer="vq",
    quantizer_kwargs={"codebook_size": 16},
)
TRANSFORMER = VideoTransformerConfig(
    vocab_size=16, code_shape=(4, 4), window=3, embed_dim=24, layers=2, heads=2, num_actions=3,
    reward_head=True, continue_head=True,
)


def _model(image_size: int = 32, **overrides) -> VideoModel:
    torch.manual_seed(0)
    tokenizer = FrameTokenizer(TokenizerConfig(**{**TOKENIZER.__dict__, "image_size": image_size}))
    code_shape = (image_size // 8, image_size // 8)
    transformer = VideoTransformer(VideoTransformerConfig(**{**TRANSFORMER.__dict__, "code_shape": code_shape, **overrides}))
    model = VideoModel(tokenizer, randomize_weights(transformer.eval()), VideoModelInfo())
    model.transformer.continue_head[-2].bias.data.fill_(20.0)  # episodes go on unless a test says otherwise
    return model


def _contexts(image_size: int = 32, frames: int = 4):
    """A context source of moving-square clips, each drawn from the rng it is given."""

    def source(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        seeds = rng.integers(1000, size=n)
        return {
            "video": np.stack([moving_square_video(frames, image_size, int(s)) for s in seeds]),
            "actions": rng.integers(3, size=(n, frames)),
        }

    return source


class FixedContinue(torch.nn.Module):
    """A continue head that says 'go on' to some streams and 'stop' to the others, whatever it sees."""

    def __init__(self, go_on: list[bool]) -> None:
        super().__init__()
        self.logits = torch.tensor([20.0 if g else -20.0 for g in go_on])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits.to(features)


def _run(env: WorldModelVectorEnv, seed: int, steps: int):
    obs, _ = env.reset(seed=seed)
    actions = np.random.default_rng(seed).integers(3, size=(steps, env.num_envs))
    trajectory = [obs]
    for a in actions:
        trajectory.append(env.step(a))
    return trajectory


def test_vector_env_contract_and_first_frame_is_the_decoded_context():
    model = _model()
    env = WorldModelVectorEnv(model, _contexts(), 3, horizon=5)
    obs, info = env.reset(seed=1)
    context = _contexts()(3, np.random.default_rng(1))["video"]
    expected = model.tokenizer.decode(model.tokenizer.encode(context[:, -1])).numpy()
    np.testing.assert_array_equal(obs, expected)
    assert env.observation_space.contains(obs) and obs.shape == (3, 32, 32, 3)
    assert env.single_action_space == gym.spaces.Discrete(3)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert obs.dtype == np.uint8 and obs.shape == (3, 32, 32, 3)
    assert reward.dtype == np.float32 and reward.shape == (3,)
    assert terminated.dtype == truncated.dtype == bool and not terminated.any() and not truncated.any()
    expected_reward, _ = model.transformer.predict_outcome(env.sampler.sampler.features)
    np.testing.assert_allclose(reward, expected_reward.numpy(), rtol=1e-6)


def test_a_padded_context_starts_as_its_real_frames_alone():
    """Contexts with ``lengths`` (an episode's first frames, padded) start streams as the shorter clips would."""
    model, full = _model(), _contexts(frames=4)
    lengths = np.array([1, 2, 3, 4, 2])

    def padded(n, rng):
        clips = full(n, rng)
        for i, length in enumerate(lengths):
            clips["video"][i, : 4 - length] = 255  # the padding must not matter
        return {**clips, "lengths": lengths}

    env = WorldModelVectorEnv(model, padded, 5)
    obs, _ = env.reset(seed=2)
    clips = full(5, np.random.default_rng(2))  # the clips that reset drew, before padding
    for i, length in enumerate(lengths):
        alone = WorldModelVectorEnv(model, lambda n, rng: {k: v[i : i + 1, 4 - length :] for k, v in clips.items()}, 1)
        alone_obs, _ = alone.reset(seed=0)
        np.testing.assert_array_equal(obs[i], alone_obs[0])
        torch.testing.assert_close(env.sampler.sampler.features[i], alone.sampler.sampler.features[0])
        assert env.sampler.sampler.cache.time[i] == alone.sampler.sampler.cache.time[0]
    with pytest.raises(ValueError, match="lengths"):
        WorldModelVectorEnv(model, lambda n, rng: {**full(n, rng), "lengths": np.zeros(n, int)}, 2).reset(seed=0)


def test_truncation_at_the_horizon_then_next_step_autoreset():
    env = WorldModelVectorEnv(_model(), _contexts(), 2, horizon=3)
    env.reset(seed=0)
    for _ in range(2):
        assert not env.step(np.array([0, 1]))[3].any()
    obs, reward, terminated, truncated, _ = env.step(np.array([0, 1]))
    assert truncated.all() and not terminated.any()
    obs, reward, terminated, truncated, _ = env.step(np.array([2, 2]))  # the action is ignored: a new episode starts
    assert (reward == 0).all() and not (terminated | truncated).any()
    assert (env.steps == 0).all()
    assert not env.step(np.array([0, 1]))[3].any()


def test_a_terminating_sub_env_restarts_without_disturbing_the_others():
    steps = 6
    always = _run(WorldModelVectorEnv(_model(), _contexts(), 2, top_k=1), seed=3, steps=steps)
    model = _model()
    model.transformer.continue_head = FixedContinue([True, False])
    mixed = _run(WorldModelVectorEnv(model, _contexts(), 2, top_k=1), seed=3, steps=steps)
    for t in range(1, steps + 1):
        _, reward, terminated, truncated, _ = mixed[t]
        assert terminated.tolist() == [False, t % 2 == 1] and not truncated.any()
        np.testing.assert_array_equal(mixed[t][0][0], always[t][0][0])  # sub-env 0 never notices
        if t % 2 == 0:  # sub-env 1 restarted from a fresh context, with no reward
            assert reward[1] == 0
            assert not np.array_equal(mixed[t][0][1], always[t][0][1])
    # terminations=False: the head that says "stop" is not heeded, and the run is the one that never stops
    heedless = _run(WorldModelVectorEnv(model, _contexts(), 2, top_k=1, terminations=False), seed=3, steps=steps)
    for t in range(1, steps + 1):
        assert not heedless[t][2].any()
        np.testing.assert_array_equal(heedless[t][0], always[t][0])


def test_seeded_runs_are_identical_and_other_seeds_differ():
    first = _run(WorldModelVectorEnv(_model(), _contexts(), 2, horizon=4), seed=5, steps=6)
    again = _run(WorldModelVectorEnv(_model(), _contexts(), 2, horizon=4), seed=5, steps=6)
    other = _run(WorldModelVectorEnv(_model(), _contexts(), 2, horizon=4), seed=6, steps=6)
    for a, b in zip(first[1:], again[1:]):
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y)
    assert not np.array_equal(first[1][0], other[1][0])


def test_reward_from_a_function_of_the_frames_and_no_reward():
    seen = []

    def brightness(frames: np.ndarray, starting: np.ndarray) -> np.ndarray:
        seen.append(starting.copy())
        return frames.mean(axis=(1, 2, 3))

    env = WorldModelVectorEnv(_model(), _contexts(), 2, reward=brightness, horizon=2)
    env.reset(seed=0)
    for _ in range(3):
        obs, reward, *_ = env.step(np.array([1, 1]))
    assert [s.tolist() for s in seen] == [[True, True], [False, False], [False, False], [True, True]]
    np.testing.assert_array_equal(reward, 0.0)  # the step that starts new episodes earns nothing
    quiet = WorldModelVectorEnv(_model(reward_head=False), _contexts(), 2)
    quiet.reset(seed=0)
    assert (quiet.step(np.array([0, 0]))[1] == 0).all()


def test_continuous_actions_and_bad_inputs():
    model = _model(num_actions=0, action_dim=2)
    env = WorldModelVectorEnv(model, lambda n, rng: {**_contexts()(n, rng), "actions": rng.normal(size=(n, 4, 2))}, 2)
    assert env.single_action_space.shape == (2,)
    env.reset(seed=0)
    assert env.step(env.action_space.sample())[0].shape == (2, 32, 32, 3)
    with pytest.raises(ValueError, match=r"actions of shape \(2, 2\)"):
        env.step(np.zeros((2, 3), np.float32))
    discrete = WorldModelVectorEnv(_model(), _contexts(), 2)
    with pytest.raises(RuntimeError, match="reset"):
        discrete.step(np.array([0, 0]))
    discrete.reset(seed=0)
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        discrete.step(np.array([0, 3]))
    with pytest.raises(ValueError, match="no actions"):
        WorldModelVectorEnv(_model(num_actions=0), _contexts(), 2)
    with pytest.raises(ValueError, match="decoding must be one of"):
        WorldModelVectorEnv(_model(), _contexts(), 2, decoding="parallel")
    with pytest.raises(ValueError, match="reward_head=True"):
        WorldModelVectorEnv(_model(reward_head=False), _contexts(), 2, reward="head")
    with pytest.raises(ValueError, match="context source gave video"):
        WorldModelVectorEnv(_model(), lambda n, rng: {"video": np.zeros((n, 32, 32, 3), np.uint8),
                                                       "actions": np.zeros((n, 1))}, 2).reset(seed=0)


def test_single_env_view_runs_an_sb3_agent():
    from stable_baselines3 import PPO

    env = WorldModelEnv(_model(image_size=64), _contexts(image_size=64), horizon=8)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    agent = PPO("CnnPolicy", env, n_steps=32, batch_size=16, n_epochs=1, seed=0, verbose=0,
                policy_kwargs={"features_extractor_kwargs": {"features_dim": 16}})
    before = [p.detach().clone() for p in agent.policy.parameters()]
    agent.learn(total_timesteps=32)
    assert agent.num_timesteps == 32
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.policy.parameters()))
    assert [info["l"] for info in agent.ep_info_buffer] == [8, 8, 8, 8]


def _decoded_last_frames(model: VideoModel, clips: list[dict[str, np.ndarray]]) -> np.ndarray:
    """What a sub-env shows first after starting from each clip: its last context frame, encoded and decoded."""
    last = np.stack([clip["video"][0, -1] for clip in clips])
    return model.tokenizer.decode(model.tokenizer.encode(last)).numpy()


def test_a_list_of_seeds_gives_each_sub_env_its_own_contexts():
    model, source = _model(), _contexts()
    env = WorldModelVectorEnv(model, source, 2, horizon=1)
    obs, _ = env.reset(seed=[7, 8])
    streams = [np.random.default_rng(7), np.random.default_rng(8)]
    np.testing.assert_array_equal(obs, _decoded_last_frames(model, [source(1, rng) for rng in streams]))
    env.step(np.array([0, 0]))  # the horizon truncates both episodes
    restarted = env.step(np.array([0, 0]))[0]  # each restarts from the next clip of its own stream
    np.testing.assert_array_equal(restarted, _decoded_last_frames(model, [source(1, rng) for rng in streams]))
    other, _ = WorldModelVectorEnv(model, source, 2).reset(seed=[7, 9])
    np.testing.assert_array_equal(other[0], obs[0])  # sub-env 0 depends on its own seed alone
    assert not np.array_equal(other[1], obs[1])


def test_the_same_list_of_seeds_replays_the_same_run_and_a_wrong_list_is_refused():
    first = _run(WorldModelVectorEnv(_model(), _contexts(), 2, horizon=3), seed=[5, 6], steps=5)
    again = _run(WorldModelVectorEnv(_model(), _contexts(), 2, horizon=3), seed=[5, 6], steps=5)
    for a, b in zip(first[1:], again[1:]):
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y)
    env = WorldModelVectorEnv(_model(), _contexts(), 2)
    with pytest.raises(ValueError, match=r"one int per sub-env \(2\), got \[1, 2, 3\]"):
        env.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError, match=r"got \[1, None\]"):
        env.reset(seed=[1, None])


def test_single_env_renders_its_current_frame_for_the_workspace_gif(tmp_path):
    from agents.workspace import evaluate_agent

    env = WorldModelEnv(_model(), _contexts(), horizon=3)
    assert env.render_mode == "rgb_array"
    with pytest.raises(RuntimeError, match="reset"):
        env.render()
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.uint8 and obs.shape == (32, 32, 3)
    np.testing.assert_array_equal(env.render(), obs)
    obs = env.step(1)[0]
    np.testing.assert_array_equal(env.render(), obs)
    with pytest.raises(ValueError, match="render_mode"):
        WorldModelEnv(_model(), _contexts(), render_mode="human")

    class StillAgent:
        def act(self, obs: np.ndarray, sample: bool = False) -> int:
            return 0

    gif = tmp_path / "episode.gif"
    evaluate_agent(StillAgent(), env, episodes=1, frame_stack=1, video_path=gif)
    frames = iio.imread(gif)
    assert frames.shape == (4, 32, 32, 3)  # the first frame and one per step of the 3-step episode


def test_code_observations_are_the_sampled_codes_vectors_and_leave_the_dynamics_alone():
    model = _model()
    frames_env = WorldModelVectorEnv(model, _contexts(), 3, horizon=4)
    codes_env = WorldModelVectorEnv(model, _contexts(), 3, horizon=4, observations="codes")
    space = codes_env.single_observation_space
    assert space.shape == (4, 4, 8) and space.dtype == np.float32
    frames_obs, _ = frames_env.reset(seed=3)
    codes_obs, _ = codes_env.reset(seed=3)
    for actions in [None, *np.random.default_rng(3).integers(3, size=(6, 3))]:
        if actions is not None:
            frames_obs, *frames_outcome, _ = frames_env.step(actions)
            codes_obs, *codes_outcome, _ = codes_env.step(actions)
            for a, b in zip(frames_outcome, codes_outcome):
                np.testing.assert_array_equal(a, b)  # rewards and ends: the same episodes
        latest = codes_env.sampler.sampler.latest
        assert torch.equal(latest, frames_env.sampler.sampler.latest)
        np.testing.assert_array_equal(codes_obs, model.tokenizer.code_vectors(latest).numpy())
        np.testing.assert_array_equal(frames_obs, model.tokenizer.decode(latest).numpy())
    single = WorldModelEnv(model, _contexts(), observations="codes")
    single.reset(seed=0)
    latest = single.vector.sampler.sampler.latest[0]
    np.testing.assert_array_equal(single.render(), model.tokenizer.decode(latest).numpy())
    with pytest.raises(ValueError, match="observations must be one of"):
        WorldModelVectorEnv(model, _contexts(), 1, observations="pixels")
    with pytest.raises(ValueError, match="needs observations='frames'"):
        WorldModelVectorEnv(model, _contexts(), 1, reward=lambda frames, starting: np.zeros(1), observations="codes")

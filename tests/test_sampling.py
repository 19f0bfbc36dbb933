import pytest
import torch

from worldmodel.rollout import rollout, sample_frames, sample_frames_uncached
from worldmodel.sampling import sample_logits
from worldmodel.streaming import StreamingSampler
from worldmodel.transformer import VideoTransformer, VideoTransformerConfig

TINY = dict(vocab_size=16, code_shape=(2, 2), window=2, embed_dim=32, layers=2, heads=2, mlp_ratio=2.0)


def tiny(**overrides) -> VideoTransformer:
    """A tiny model with large random weights, so that samples depend visibly on the context."""
    torch.manual_seed(0)
    model = VideoTransformer(VideoTransformerConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def context_for(model, b=3, t=3):
    return torch.randint(model.config.vocab_size, (b, t, *model.config.code_shape), generator=seeded(1))


@pytest.mark.parametrize("top_k", [None, 3])
@pytest.mark.parametrize("overrides", [dict(num_actions=3, num_tasks=2), dict(vocab_size=2**6, factorized_groups=2)])
def test_cached_sampling_equals_uncached(top_k, overrides):
    model = tiny(**overrides)
    context = context_for(model)
    actions = torch.randint(3, (3, 8), generator=seeded(2)) if "num_actions" in overrides else None
    task = torch.tensor([0, 1, 1]) if "num_tasks" in overrides else None
    kwargs = dict(horizon=5, top_k=top_k)  # 8 frames: longer than the window
    cached = sample_frames(model, context, actions, task, generator=seeded(), **kwargs)
    uncached = sample_frames_uncached(model, context, actions, task, generator=seeded(), **kwargs)
    assert cached.shape == (3, 5, 2, 2) and cached.dtype == torch.long
    assert torch.equal(cached, uncached)
    assert 0 <= cached.min() and cached.max() < model.config.vocab_size
    assert not torch.equal(cached, sample_frames(model, context, actions, task, generator=seeded(1), **kwargs))


@pytest.mark.parametrize("sampling", [dict(), dict(top_k=3, temperature=0.8), dict(top_k=1)])
@pytest.mark.parametrize("overrides", [
    dict(num_actions=3),
    dict(vocab_size=2**6, factorized_groups=2, code_shape=(3, 3)),
    dict(vocab_size=60, code_levels=(3, 4, 5)),
])
def test_jacobi_decoding_gives_the_sequential_samplers_frames(sampling, overrides):
    model = tiny(**overrides)
    context = context_for(model)
    actions = torch.randint(3, (3, 12), generator=seeded(2)) if "num_actions" in overrides else None
    samplers = {decoding: StreamingSampler(model, 3) for decoding in ("sequential", "jacobi")}
    frames, steps = {}, []
    for decoding, sampler in samplers.items():
        sampler.push(context[:, 0])
        generator = seeded(5)
        frames[decoding] = []
        for t in range(1, 10):
            action = None if actions is None else actions[:, t - 1]
            frames[decoding].append(sampler.sample(action, generator=generator, decoding=decoding, **sampling))
            if decoding == "jacobi":
                steps.append(sampler.frame_steps)
    assert all(torch.equal(a, b) for a, b in zip(frames["sequential"], frames["jacobi"]))
    assert max(steps) <= model.config.codes_per_frame + 1
    torch.testing.assert_close(samplers["sequential"].features, samplers["jacobi"].features)
    # the caches hold the same history: the next real frame scores the same
    probe = context[:, 2]
    action = None if actions is None else actions[:, 9]
    torch.testing.assert_close(samplers["sequential"].push(probe, action), samplers["jacobi"].push(probe, action))
    with pytest.raises(ValueError, match="decoding must be one of"):
        samplers["jacobi"].sample(action, decoding="parallel")


def test_greedy_is_deterministic():
    model = tiny()
    context = context_for(model)
    greedy = sample_frames(model, context, horizon=4, top_k=1, generator=seeded(0))
    assert torch.equal(greedy, sample_frames(model, context, horizon=4, top_k=1, generator=seeded(1)))
    assert torch.equal(greedy, sample_frames(model, context, horizon=4, temperature=0.0))
    assert torch.equal(greedy, sample_frames_uncached(model, context, horizon=4, top_k=1))


def test_temperature_sharpens():
    logits = torch.tensor([[2.0, 1.0, 0.0]]).expand(4000, 3)
    hot = sample_logits(logits, 1.0, generator=seeded())
    cold = sample_logits(logits, 0.25, generator=seeded())
    expected = torch.softmax(logits[0], 0)[0]
    assert abs((hot == 0).float().mean() - expected) < 0.03
    assert (cold == 0).float().mean() > 0.95
    assert set(sample_logits(logits, top_k=2, generator=seeded()).tolist()) == {0, 1}


def test_samples_follow_the_softmax_and_never_a_code_without_mass():
    logits = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0])
    draws = sample_logits(logits.expand(20000, 5), generator=seeded())
    frequencies = torch.bincount(draws, minlength=5).float() / 20000
    assert torch.allclose(frequencies, logits.softmax(0), atol=0.012)
    masked = torch.tensor([[float("-inf"), 1.0, float("-inf"), 0.0, float("-inf")]]).expand(3, 5)
    extremes = torch.tensor([0.0, 0.5, 1.0 - 2**-24])  # the ends of torch.rand's range
    assert set(sample_logits(masked, uniform=extremes).tolist()) <= {1, 3}
    assert sample_logits(masked, uniform=extremes).tolist() == [1, 1, 3]


def test_rollout_with_an_action_sequence_matches_sample_frames():
    model = tiny(num_actions=3)
    context = context_for(model)
    actions = torch.randint(3, (3, 3 + 6), generator=seeded(2))
    expected = sample_frames(model, context, actions, horizon=6, generator=seeded())
    got = rollout(model, context, 6, actions=actions[:, 2:8], context_actions=actions[:, :2], generator=seeded())
    assert torch.equal(got, expected)


def test_rollout_with_a_policy():
    model = tiny(action_dim=2)
    context = context_for(model)
    seen = []

    def act(latest):
        return latest.flatten(1)[:, :2].float() / 8 - 1  # an action that depends on the frame

    def policy(latest):
        seen.append(latest.clone())
        return act(latest)

    frames = rollout(model, context, 5, policy=policy, context_actions=torch.zeros(3, 2, 2), generator=seeded())
    assert frames.shape == (3, 5, 2, 2) and len(seen) == 5
    assert torch.equal(seen[0], context[:, -1])
    for j in range(1, 5):
        assert torch.equal(seen[j], frames[:, j - 1])
    replay = torch.stack([act(s) for s in seen], dim=1)
    replayed = rollout(model, context, 5, actions=replay, context_actions=torch.zeros(3, 2, 2), generator=seeded())
    assert torch.equal(replayed, frames)
    with pytest.raises(ValueError, match="not both"):
        rollout(model, context, 5, actions=replay, policy=policy)


def test_long_rollout_keeps_the_cache_constant():
    model = tiny(num_actions=3)
    sampler = StreamingSampler(model, 2)
    sampler.push(torch.zeros(2, 2, 2, dtype=torch.long))
    cache = sampler.cache
    pointers = (cache.keys.data_ptr(), cache.values.data_ptr())

    def policy(latest):
        return latest[:, 0, 0] % 3

    sizes = []
    for horizon in (50, 150):
        frames = sampler.rollout(horizon, policy=policy, generator=seeded(horizon))
        assert frames.shape == (2, horizon, 2, 2)
        sizes.append((tuple(cache.keys.shape), tuple(cache.values.shape), tuple(cache.valid.shape)))
        assert (cache.keys.data_ptr(), cache.values.data_ptr()) == pointers
    assert sizes[0] == sizes[1] == ((2, 2, 2, 3 * 5, 16),) * 2 + ((2, 3),)
    assert cache.time.tolist() == [201, 201] and cache.valid.sum(1).tolist() == [2, 2]


def test_sampler_scores_and_samples_interleaved_with_resets():
    """Pushed, sampled and reset streams all match the full-sequence model."""
    model = tiny(num_actions=3)
    sampler = StreamingSampler(model, 2)
    video = [context_for(model, b=2, t=1)[:, 0]]
    sampler.push(video[0])
    actions = torch.randint(3, (2, 12), generator=seeded(3))
    for t in range(1, 12):
        if t == 6:
            sampler.reset([1])
        video.append(sampler.sample(actions[:, t - 1], generator=seeded(t)))
    video = torch.stack(video, dim=1)
    scorer = StreamingSampler(model, 2)
    streamed = []
    for t in range(12):
        if t == 6:
            scorer.reset(torch.tensor([False, True]))
        streamed.append(scorer.push(video[:, t], actions[:, t - 1] if t else None))
    streamed = torch.stack(streamed, dim=1)
    assert torch.allclose(streamed[0], model.log_prob(video[:1], actions[:1])[0], atol=1e-4)
    assert torch.allclose(streamed[1, 6:], model.log_prob(video[1:, 6:], actions[1:, 6:])[0], atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature=-1.0), "temperature must be >= 0"),
        (dict(top_k=0), "top_k must be a positive int"),
        (dict(horizon=0), "horizon must be a positive int"),
        (dict(actions=torch.zeros(3, 5)), "discrete actions must be integers"),
        (dict(actions=torch.zeros(3, 3, dtype=torch.long)), r"actions of shape \(3, 5\) or \(3, 4\), got \(3, 3\)"),
    ],
)
def test_bad_sampling_arguments_raise(kwargs, match):
    model = tiny(num_actions=3)
    args = {"horizon": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        sample_frames(model, context_for(model), **args)

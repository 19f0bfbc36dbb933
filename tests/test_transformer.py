import json
import math

import pytest
import torch

from tests.conftest import randomize_weights
from worldmodel.checkpoint import CheckpointError, save_checkpoint
from worldmodel.attention import KVCache
from worldmodel.quantizers import FSQ
from worldmodel.streaming import StreamingSampler, StreamingScorer
from worldmodel.transformer import VideoTransformer, VideoTransformerConfig

TINY = dict(vocab_size=16, code_shape=(2, 2), window=2, embed_dim=32, layers=2, heads=2, mlp_ratio=2.0)


def tiny(seed: int = 0, random: bool = True, **overrides) -> VideoTransformer:
    torch.manual_seed(seed)
    model = VideoTransformer(VideoTransformerConfig(**{**TINY, **overrides})).eval()
    return randomize_weights(model) if random else model


def random_clip(b, t, model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(model.config.vocab_size, (b, t, *model.config.code_shape), generator=g)


def test_shapes_and_dtypes():
    model = tiny(num_actions=3, num_tasks=2)
    codes = random_clip(2, 5, model)
    actions, task = torch.randint(3, (2, 5)), torch.tensor([0, 1])
    logits = model(codes, actions, task)
    assert logits.shape == (2, 5, 4, 1, 16) and logits.dtype == torch.float32
    assert model.hidden(codes).shape == (2, 5, 4, 32)
    log_prob = model.log_prob(codes, actions, task)
    assert log_prob.shape == (2, 5) and log_prob.dtype == torch.float32
    # Each frame's log-likelihood is the sum of its codes' log-softmax entries, read off the logits.
    per_code = logits[..., 0, :].log_softmax(-1).gather(-1, codes.flatten(2)[..., None])[..., 0]
    torch.testing.assert_close(log_prob, per_code.sum(-1))
    assert torch.equal(model.log_prob(codes, actions[:, :4], task), log_prob)  # the last action is unused
    loss = model.loss(codes, actions, task)
    assert loss.ndim == 0 and torch.allclose(loss, -log_prob.sum() / codes.numel())
    scorer = StreamingScorer(model, 2)
    assert scorer.push(codes[:, 0], None, task).shape == (2,)


def test_config_expresses_viper_dmc_and_round_trips_through_json():
    config = VideoTransformerConfig(num_tasks=16)
    assert (config.code_shape, config.embed_dim, config.layers, config.heads) == ((8, 8), 256, 8, 8)
    assert round(config.mlp_ratio * config.embed_dim) == 1024 and config.window + 1 == 16
    assert VideoTransformerConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    model = VideoTransformer(config).eval()
    assert model.log_prob(torch.zeros(1, 2, 8, 8, dtype=torch.long), task=torch.tensor([3])).shape == (1, 2)
    with pytest.raises(ValueError, match="unknown VideoTransformerConfig keys"):
        VideoTransformerConfig.from_dict({"vocab": 3})


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(vocab_size=0), "vocab_size must be a positive int"),
        (dict(layers=1.5), "layers must be a positive int"),
        (dict(window=-1), "window must be an int >= 0"),
        (dict(code_shape=(2,)), "code_shape must be two positive ints"),
        (dict(embed_dim=30, heads=4), "not divisible by heads"),
        (dict(embed_dim=8, heads=2), "head dim .* must be even and >= 6"),
        (dict(dropout=1.0), "dropout must be in"),
        (dict(action_dropout=1.5), "action_dropout must be in"),
        (dict(num_actions=3, action_dim=2), "not both"),
        (dict(vocab_size=1000, factorized_groups=2), "vocab_size = 2\\*\\*b"),
        (dict(vocab_size=2**9, factorized_groups=2), "divisible by 2"),
        (dict(vocab_size=100, code_levels=(5, 5, 5)), "multiply to vocab_size 100"),
        (dict(vocab_size=125, code_levels=(5, 25, 1)), "ints >= 2"),
        (dict(mlp_ratio=0), "mlp_ratio must be > 0"),
    ],
)
def test_config_validation(overrides, match):
    with pytest.raises(ValueError, match=match):
        VideoTransformerConfig(**{**TINY, **overrides})


def test_streaming_equals_full_sequence_over_3000_frames_with_resets():
    model = tiny(num_actions=3, num_tasks=2)
    b, t = 3, 3000
    codes = random_clip(b, t, model)
    actions = torch.randint(3, (b, t), generator=torch.Generator().manual_seed(1))
    task = torch.tensor([0, 1, 1])
    # stream 1 resets once, stream 2 three times (one episode a single frame long), stream 0 never
    resets = {1000: [1], 2200: torch.tensor([False, False, True]), 2201: [2], 2900: [2]}
    scorer = StreamingScorer(model, b)
    streamed = torch.empty(b, t)
    for i in range(t):
        if i in resets:
            scorer.reset(resets[i])
        streamed[:, i] = scorer.push(codes[:, i], actions[:, i - 1] if i else None, task)

    starts = {0: [0], 1: [0, 1000], 2: [0, 2200, 2201, 2900]}
    worst = 0.0
    for stream, bounds in starts.items():
        for s, e in zip(bounds, bounds[1:] + [t]):
            sl = slice(stream, stream + 1)
            full = model.log_prob(codes[sl, s:e], actions[sl, s:e], task[sl])
            worst = max(worst, (full - streamed[sl, s:e]).abs().max().item())
    assert worst < 1e-4
    assert streamed.std() > 1.0  # the scores really vary, so agreement means something
    assert scorer.cache.keys.shape == (2, 3, 2, 3 * 5, 16)  # window + 1 frame slots of N + 1 tokens


@pytest.mark.parametrize("window", [0, 1, 7])
def test_streaming_equals_full_sequence_for_any_window(window):
    model = tiny(window=window, layers=3, action_dim=2)
    codes = random_clip(2, 12, model)
    actions = torch.randn(2, 12, 2, generator=torch.Generator().manual_seed(1))
    scorer = StreamingScorer(model, 2)
    streamed = torch.stack([scorer.push(codes[:, i], actions[:, i - 1] if i else None) for i in range(12)], dim=1)
    assert torch.allclose(streamed, model.log_prob(codes, actions), atol=1e-4)


@pytest.mark.parametrize("context", [1, 5])
def test_starting_streams_from_a_context_leaves_the_others_alone(context):
    model = tiny(window=3, num_actions=3)
    b, t, restart = 3, 14, 6
    codes = random_clip(b, t, model)
    actions = torch.randint(3, (b, t), generator=torch.Generator().manual_seed(1))
    clip = random_clip(2, context + t - restart, model, seed=2)
    clip_actions = torch.randint(3, (2, clip.shape[1]), generator=torch.Generator().manual_seed(3))
    scorer = StreamingScorer(model, b)
    streamed = []
    for i in range(t):
        if i == restart:  # streams 0 and 2 start over from `context` frames; stream 1 does not advance meanwhile
            started = scorer.start([0, 2], clip[:, :context], clip_actions[:, :context])
            codes[[0, 2], i:] = clip[:, context:]
            actions[[0, 2], i - 1 :] = clip_actions[:, context - 1 :]
        streamed.append(scorer.push(codes[:, i], actions[:, i - 1] if i else None))
    streamed = torch.stack(streamed, dim=1)
    assert torch.allclose(streamed[1], model.log_prob(codes[1:2], actions[1:2])[0], atol=1e-4)
    whole = model.log_prob(clip, clip_actions)
    assert torch.allclose(started, whole[:, :context], atol=1e-4)
    assert torch.allclose(streamed[[0, 2], restart:], whole[:, context:], atol=1e-4)
    before = model.log_prob(codes[[0, 2], :restart], actions[[0, 2], : restart - 1])
    assert torch.allclose(streamed[[0, 2], :restart], before, atol=1e-4)
    with pytest.raises(ValueError, match="codes of shape"):
        scorer.start([0], clip[:, :context])


def test_receptive_field_past_and_future():
    model = tiny()
    field = model.config.receptive_field  # 2 layers x window 2
    t = field + 3
    codes = random_clip(1, t + 2, model)
    base = model.log_prob(codes)[0, t]

    def changed(frame):
        other = codes.clone()
        other[:, frame] = (other[:, frame] + 1) % 16
        return model.log_prob(other)[0, t]

    assert torch.allclose(changed(t - field - 1), base, atol=1e-6)  # beyond the receptive field
    assert torch.allclose(changed(t + 1), base, atol=1e-6)  # the future
    assert (changed(t - field) - base).abs() > 1e-3  # the oldest frame in reach
    assert (changed(t - 1) - base).abs() > 1e-3


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_action_conditioning(kind):
    model = tiny(**(dict(num_actions=4) if kind == "discrete" else dict(action_dim=3)))
    codes = random_clip(2, 4, model)
    g = torch.Generator().manual_seed(2)
    if kind == "discrete":
        a, b = torch.randint(4, (2, 4), generator=g), torch.randint(4, (2, 4), generator=g)
        b[:, :3] = (a[:, :3] + 1) % 4
    else:
        a, b = torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    with_a, with_b, absent = model.log_prob(codes, a), model.log_prob(codes, b), model.log_prob(codes)
    assert torch.equal(with_a[:, 0], with_b[:, 0]) and torch.equal(with_a[:, 0], absent[:, 0])  # frame 0: null
    assert ((with_a[:, 1:] - with_b[:, 1:]).abs() > 1e-3).all()
    null = model.log_prob(codes, a, action_mask=torch.tensor([False, True]))
    assert torch.allclose(null[0], absent[0]) and torch.allclose(null[1], with_a[1])
    scorer = StreamingScorer(model, 2)
    streamed = [scorer.push(codes[:, 0], a[:, 0])] + [scorer.push(codes[:, i], a[:, i - 1]) for i in range(1, 4)]
    assert torch.allclose(torch.stack(streamed, 1), with_a, atol=1e-4)


def test_action_dropout_drops_whole_clips_in_training_only():
    model = tiny(num_actions=3, action_dropout=1.0)
    codes, actions = random_clip(2, 4, model), torch.randint(3, (2, 4))
    model.train()
    assert torch.allclose(model.loss(codes, actions), model.loss(codes))
    model.eval()
    assert not torch.allclose(model.loss(codes, actions), model.loss(codes))


def test_task_conditioning():
    fresh = tiny(random=False, num_tasks=3)
    codes = random_clip(2, 3, fresh)
    # zero-initialised task weights: training starts unconditional
    assert torch.equal(fresh.log_prob(codes, task=torch.tensor([0, 2])), fresh.log_prob(codes))
    model = randomize_weights(fresh)
    zero, two = model.log_prob(codes, task=torch.tensor([0, 0])), model.log_prob(codes, task=torch.tensor([2, 2]))
    assert ((zero - two).abs() > 1e-3).all()
    mixed = model.log_prob(codes, task=torch.tensor([0, 2]))
    assert torch.allclose(mixed[0], zero[0]) and torch.allclose(mixed[1], two[1])


@pytest.mark.parametrize(
    "vocab_size, factors, given_a_frame",
    [(16, dict(), True), (2**10, dict(factorized_groups=2), True), (2**16, dict(factorized_groups=2), False),
     (7 * 5 * 3, dict(code_levels=(7, 5, 3)), True)],
)
def test_distributions_are_normalised(vocab_size, factors, given_a_frame):
    """Enumerate every code of a 1x1 frame: probabilities sum to 1, for frame 0 and given a frame
    (skipped for 2**16 codes, where it takes seconds); FSQ's levels factorise as its indices do."""
    model = tiny(vocab_size=vocab_size, code_shape=(1, 1), **factors)
    groups, group_vocab = len(model.config.factors), max(model.config.factors)
    assert model(torch.zeros(1, 1, 1, 1, dtype=torch.long)).shape == (1, 1, 1, groups, group_vocab)
    every = torch.arange(vocab_size)
    assert torch.equal(model.join_codes(model.split_codes(every)), every)
    if "code_levels" in factors:
        fsq = FSQ(factors["code_levels"])
        digits = torch.round(fsq.codes_from_indices(every) * torch.tensor([3, 2, 1]) + torch.tensor([3, 2, 1])).long()
        assert torch.equal(model.split_codes(every), digits)
    first = model.log_prob(every.view(-1, 1, 1, 1))[:, 0]
    assert torch.allclose(first.logsumexp(0), torch.tensor(0.0), atol=1e-4)
    assert first.std() > 0.1
    if given_a_frame:
        clips = torch.stack([torch.full_like(every, 5), every], dim=1).view(-1, 2, 1, 1)
        second = model.log_prob(clips)[:, 1]
        assert torch.allclose(second.logsumexp(0), torch.tensor(0.0), atol=1e-4)
        assert not torch.allclose(first, second)


@pytest.mark.parametrize("factors", [dict(), dict(factorized_groups=2), dict(code_levels=(4, 2, 8))])
def test_entropy_is_the_expected_surprise_and_streams_exactly(factors):
    """Over every code of a 1x1 frame: sum_z p(z) log p(z) = -H, so log p + H averages to 0 under the
    model's own prediction; the streaming scorer's entropies equal the full pass's."""
    model = tiny(vocab_size=64, code_shape=(1, 1), **factors)
    every = torch.arange(64)
    clips = torch.stack([torch.full_like(every, 5), every], dim=1).view(-1, 2, 1, 1)
    scores = model.code_scores(clips)
    assert scores.log_prob.shape == scores.entropy.shape == clips.shape
    torch.testing.assert_close(scores.log_prob, model.code_log_probs(clips))
    log_p, entropy = scores.log_prob[:, 1, 0, 0], scores.entropy[:, 1, 0, 0]
    assert torch.allclose(entropy, entropy[0])  # one context, one predictive distribution
    assert 0.5 < entropy[0] < math.log(64)
    torch.testing.assert_close((log_p.exp() * (log_p + entropy)).sum(), torch.tensor(0.0), atol=1e-5, rtol=0)

    codes = random_clip(2, 9, tiny(code_shape=(2, 2)))
    model = tiny(code_shape=(2, 2))
    scorer = StreamingScorer(model, 2)
    streamed = [scorer.push_scores(codes[:, i]) for i in range(9)]
    full = model.code_scores(codes)
    torch.testing.assert_close(torch.stack([s.entropy for s in streamed], 1), full.entropy.sum((2, 3)), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(torch.stack([s.log_prob for s in streamed], 1), full.log_prob.sum((2, 3)), atol=1e-4, rtol=1e-5)
    assert full.entropy.std() > 0.1  # the context changes the prediction's spread


def test_overfits_a_tiny_dataset():
    torch.manual_seed(0)
    model = VideoTransformer(VideoTransformerConfig(**TINY)).train()
    g = torch.Generator().manual_seed(0)
    # 4 clips, each a random first frame whose codes then count up by one per frame
    first = torch.randint(16, (4, 1, 2, 2), generator=g)
    data = (first + torch.arange(6).view(1, 6, 1, 1)) % 16
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        loss = model.loss(data)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # from log(16) = 2.77 towards the floor: the first code picks one of 4 clips, log(4) / 24 codes = 0.06
    assert losses[0] > 2.5 and losses[-1] < losses[0] / 20


def test_reward_and_continue_heads_fit_a_tiny_dataset():
    torch.manual_seed(0)
    model = VideoTransformer(VideoTransformerConfig(**TINY, num_actions=3, reward_head=True, continue_head=True)).train()
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(16, (8, 6, 2, 2), generator=g)
    actions = torch.randint(3, (8, 6), generator=g)
    rewards = (actions == 1).float() * 5.0 - (actions == 2).float()  # the reward depends on the action alone
    terminals = torch.zeros(8, 6, dtype=torch.bool)
    terminals[:4, -1] = True  # half the clips end by termination
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(600):
        losses = model.losses(codes, actions, rewards=rewards, terminals=terminals)
        optimizer.zero_grad()
        (losses.codes + losses.reward + losses.continues).backward()
        optimizer.step()
    model.eval()
    features = model.token_features(codes, actions)[:, 1:, -1]
    reward, keep = model.predict_outcome(features)
    assert (reward - rewards[:, :-1]).abs().max() < 0.3
    assert (keep.round().bool() == ~terminals[:, 1:]).all()
    assert model.losses(codes, actions).reward is None  # no targets, no head loss
    with pytest.raises(ValueError, match=r"rewards of shape \(8, 6\)"):
        model.losses(codes, actions, rewards=rewards[:, :-1])


def test_streamed_and_sampled_frame_features_equal_the_full_pass():
    model = tiny(num_actions=3, window=3, reward_head=True, continue_head=True)
    codes = random_clip(2, 7, model)
    actions = torch.randint(3, (2, 7), generator=torch.Generator().manual_seed(1))
    sampler = StreamingSampler(model, 2)
    sampler.start([0, 1], codes[:, :4], actions[:, :4])
    streamed = [sampler.features.clone()]
    for t in range(4, 7):
        sampler.sample(actions[:, t - 1], generator=torch.Generator().manual_seed(t))
        codes[:, t] = sampler.latest
        streamed.append(sampler.features.clone())
    full = model.token_features(codes, actions)[:, 3:, -1]
    assert torch.allclose(torch.stack(streamed, dim=1), full, atol=1e-4)
    reward, keep = model.predict_outcome(sampler.features)
    assert reward.shape == keep.shape == (2,) and ((keep > 0) & (keep < 1)).all()


def test_save_and_load(tmp_path):
    model = tiny(num_tasks=2, action_dim=2)
    model.save(tmp_path / "ckpt")
    loaded = VideoTransformer.load(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    codes = random_clip(1, 3, model)
    assert torch.equal(loaded.log_prob(codes), model.log_prob(codes))
    save_checkpoint(tmp_path / "other", {}, {"kind": "frame_tokenizer", "config": {}})
    with pytest.raises(CheckpointError, match="kind 'frame_tokenizer'"):
        VideoTransformer.load(tmp_path / "other")


def test_kv_cache_is_a_rolling_window():
    model = tiny()
    cache = KVCache(model.config, batch_size=2)
    assert cache.keys.shape == (2, 2, 2, 3 * 5, 16) and cache.valid.shape == (2, 3)
    scorer = StreamingScorer(model, 2)
    for i in range(7):
        scorer.push(random_clip(2, 1, model, seed=i)[:, 0])
    assert scorer.cache.valid.sum(1).tolist() == [2, 2] and scorer.cache.time.tolist() == [7, 7]
    scorer.reset([1])
    assert scorer.cache.valid.sum(1).tolist() == [2, 0] and scorer.cache.time.tolist() == [7, 0]


def _bad_inputs():
    codes = torch.zeros(2, 3, 2, 2, dtype=torch.long)
    return [
        (dict(codes=codes.float()), "codes must be integers"),
        (dict(codes=codes[..., :1]), r"expected codes of shape \(B, T, 2, 2\), got \(2, 3, 2, 1\)"),
        (dict(codes=codes + 16), r"codes must be in \[0, 16\)"),
        (dict(codes=codes[:, :0]), "at least one frame"),
        (dict(actions=torch.zeros(2, 5, dtype=torch.long)), r"actions of shape \(2, 3\) or \(2, 2\)"),
        (dict(actions=torch.zeros(2, 3)), "discrete actions must be integers"),
        (dict(actions=torch.full((2, 3), 3)), r"discrete actions must be in \[0, 3\)"),
        (dict(task=torch.tensor([0, 2])), r"task ids must be in \[0, 2\)"),
        (dict(task=torch.tensor([0])), r"task ids of shape \(2,\)"),
        (dict(action_mask=torch.ones(2)), "bool action_mask of shape"),
    ]


@pytest.mark.parametrize("kwargs, match", _bad_inputs())
def test_bad_inputs_raise(kwargs, match):
    model = tiny(num_actions=3, num_tasks=2)
    args = {"codes": torch.zeros(2, 3, 2, 2, dtype=torch.long), **kwargs}
    with pytest.raises(ValueError, match=match):
        model.log_prob(**args)


def test_bad_inputs_for_models_without_actions_or_tasks_and_for_streams():
    model = tiny()
    codes = torch.zeros(2, 3, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="no action input"):
        model.log_prob(codes, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="no task input"):
        model.log_prob(codes, task=torch.zeros(2, dtype=torch.long))
    continuous = tiny(action_dim=2)
    with pytest.raises(ValueError, match="must be finite"):
        continuous.log_prob(codes, torch.full((2, 3, 2), float("nan")))
    with pytest.raises(ValueError, match=r"continuous actions of shape \(2, 3, 2\)"):
        continuous.log_prob(codes, torch.zeros(2, 3, 3))
    scorer = StreamingScorer(model, 2)
    with pytest.raises(ValueError, match=r"expected codes of shape \(2, 2, 2\), got \(3, 2, 2\)"):
        scorer.push(torch.zeros(3, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"env ids must be in \[0, 2\)"):
        scorer.reset([2])
    with pytest.raises(ValueError, match=r"bool mask of shape \(2,\)"):
        scorer.reset([True, False, True])
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        StreamingScorer(model, 0)

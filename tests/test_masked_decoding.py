"""Masked (MaskGIT-style) decoding: the draft stream trains and samples as it streams, and leaves likelihoods exact."""

import pytest
import torch

from tests.conftest import randomize_weights
from worldmodel.sampling import masking_schedule, parse_decoding
from worldmodel.streaming import StreamingSampler, StreamingScorer
from worldmodel.transformer import VideoTransformer, VideoTransformerConfig, mask_codes

TINY = dict(vocab_size=16, code_shape=(2, 3), window=2, embed_dim=32, layers=2, heads=2, mlp_ratio=2.0, num_actions=3)


def tiny(**overrides) -> VideoTransformer:
    """Large random weights, so that every token's features depend visibly on what it attends to."""
    torch.manual_seed(0)
    config = VideoTransformerConfig(**{**TINY, "masked_decoding": True, **overrides})
    return randomize_weights(VideoTransformer(config).eval())


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def clip(b=2, t=5, seed=1):
    codes = torch.randint(16, (b, t, 2, 3), generator=seeded(seed))
    return codes, torch.randint(3, (b, t - 1), generator=seeded(seed + 1))


def test_drafts_leave_the_clips_own_features_and_likelihoods_unchanged():
    model = tiny()
    codes, actions = clip()
    masked = mask_codes((2, 5), 6, torch.device("cpu"))
    with_drafts, drafts = model._clip_features(codes, actions, None, None, masked)
    torch.testing.assert_close(with_drafts, model.token_features(codes, actions))
    assert drafts.shape == with_drafts.shape
    # a model without the draft stream scores the same clips the same way from the same weights
    plain = VideoTransformer(VideoTransformerConfig(**TINY)).eval()
    plain.initialise_from(model)
    torch.testing.assert_close(plain.log_prob(codes, actions), model.log_prob(codes, actions))


def test_a_draft_through_the_cache_sees_what_it_saw_in_training():
    model = tiny()
    codes, actions = clip(t=5)
    masked = torch.rand(2, 5, 6, generator=seeded(3)) < 0.5
    _, drafts = model._clip_features(codes, actions, None, None, masked)
    scorer = StreamingScorer(model, 2)
    for t in range(4):  # frames 0..3 pushed (frame 0 leaves the 2-frame window), frame 4 as a draft
        scorer.push(codes[:, t], None if t == 0 else actions[:, t - 1])
    start = model.embed_start(actions[:, 3], scorer.cache.time > 0)
    draft = model.embed_draft(start, codes[:, 4].flatten(1), masked[:, 4])
    streamed = model.step(draft, scorer.cache, advance=False, whole_frame=True)
    torch.testing.assert_close(streamed, drafts[:, 4])


@pytest.mark.parametrize("sampling", [dict(), dict(top_k=1), dict(temperature=0.7, top_k=4)])
def test_masked_sampling_caches_its_frame_as_a_pushed_frame(sampling):
    model = tiny()
    codes, actions = clip(t=3)
    sampler, scorer = StreamingSampler(model, 2), StreamingScorer(model, 2)
    for t in range(3):
        sampler.push(codes[:, t], None if t == 0 else actions[:, t - 1])
        scorer.push(codes[:, t], None if t == 0 else actions[:, t - 1])
    action = torch.tensor([0, 2])
    frame = sampler.sample(action, generator=seeded(4), decoding="masked:3", **sampling)
    assert frame.shape == (2, 2, 3) and frame.min() >= 0 and frame.max() < 16
    assert sampler.frame_steps == 4  # three passes and one to cache the frame
    scorer.push(frame, action)
    torch.testing.assert_close(sampler.features, scorer.features)
    probe = codes[:, 0]
    torch.testing.assert_close(sampler.push(probe, action), scorer.push(probe, action))


def test_masked_decoding_learns_a_tiny_dataset():
    torch.manual_seed(0)
    model = VideoTransformer(VideoTransformerConfig(**{**TINY, "masked_decoding": True, "num_actions": 0})).train()
    # each clip: a random first frame whose codes then count up by one per frame
    first = torch.randint(16, (8, 1, 2, 3), generator=seeded(0))
    data = (first + torch.arange(4).view(1, 4, 1, 1)) % 16
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    masked_losses = []
    for _ in range(300):
        losses = model.losses(data)
        optimizer.zero_grad()
        (losses.codes + losses.masked).backward()
        optimizer.step()
        masked_losses.append(losses.masked.item())
    # from log(16) = 2.77 towards the floor of frame 0's random codes (a quarter of the frames): about 0.7
    assert masked_losses[0] > 2.5 and max(masked_losses[-20:]) < 1.0
    sampler = StreamingSampler(model.eval(), 8)
    sampler.push(data[:, 0])
    for t in range(1, 4):
        assert torch.equal(sampler.sample(temperature=0, decoding="masked:2"), data[:, t])


def test_masking_schedule_and_decoding_names():
    assert masking_schedule(4, 16) == [14, 11, 6, 0]
    assert masking_schedule(1, 16) == [0]
    assert masking_schedule(10, 4) == [3, 2, 1, 0]  # a code per pass at most as many passes as codes
    assert parse_decoding("masked") == ("masked", 4) and parse_decoding("masked:8") == ("masked", 8)
    assert parse_decoding("jacobi") == ("jacobi", 0)
    for bad in ("masked:0", "masked:x", "jacobi:3", "parallel"):
        with pytest.raises(ValueError, match="decoding|passes"):
            parse_decoding(bad)
    masked = mask_codes((500,), 16, torch.device("cpu"))
    assert masked.sum(-1).min() >= 1 and masked.sum(-1).max() == 16
    assert 0.55 < masked.float().mean() < 0.7  # E[cos(pi u / 2)] = 2 / pi, rounded up


def test_models_without_the_draft_stream_refuse_masked_decoding_and_other_architectures():
    plain = VideoTransformer(VideoTransformerConfig(**TINY)).eval()
    sampler = StreamingSampler(plain, 2)
    sampler.push(clip()[0][:, 0])
    with pytest.raises(ValueError, match="not trained for masked decoding"):
        sampler.sample(torch.tensor([0, 1]), decoding="masked")
    with pytest.raises(ValueError, match="embed_dim 32 there, 64 here"):
        VideoTransformer(VideoTransformerConfig(**{**TINY, "embed_dim": 64})).initialise_from(plain)

import pytest
import torch

from agents.rnd import RND, RunningMeanStd

SHAPE = (3, 40, 40)


def states(seed: int, count: int = 16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, *SHAPE), dtype=torch.uint8, generator=generator)


def scenes(seed: int, square_at: int, count: int = 16) -> torch.Tensor:
    """Dark noise with a white square at (square_at, square_at): one kind of scene per corner."""
    frames = states(seed, count) // 4
    frames[:, :, square_at : square_at + 16, square_at : square_at + 16] = 255
    return frames


def test_bonus_falls_on_seen_scenes_and_stays_high_on_unseen_ones():
    torch.manual_seed(0)
    rnd = RND(SHAPE)  # VIPER's lr 3e-4
    seen, unseen = scenes(0, square_at=0), scenes(1, square_at=24)

    def error(obs: torch.Tensor) -> float:  # the raw prediction error, undoing the running scale
        return (rnd.bonus(obs) * rnd.bonus_stats.rms).mean().item()

    rnd.update(seen)
    seen_start, unseen_start = error(seen), error(unseen)
    for _ in range(60):
        rnd.update(seen)
    assert error(seen) < 0.2 * seen_start
    assert error(unseen) > 0.4 * unseen_start
    assert rnd.bonus(unseen).mean() > 10 * rnd.bonus(seen).mean()
    assert torch.equal(rnd.bonus(seen), rnd.bonus(seen))  # bonus() is a pure query


def test_running_statistics_equal_those_of_all_batches_seen():
    batches = [torch.randn(n, 3, 2, generator=torch.Generator().manual_seed(n)) * n + n for n in (5, 1, 12)]
    stats = RunningMeanStd((3, 2))
    for batch in batches:
        stats.update(batch)
    together = torch.cat(batches).double()
    torch.testing.assert_close(stats.mean.double(), together.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats.var.double(), together.var(0, unbiased=False), rtol=1e-5, atol=1e-5)
    assert stats.count == 18

    torch.manual_seed(0)
    rnd = RND(SHAPE)
    frames = [states(seed, count) for seed, count in ((0, 16), (1, 4), (2, 9))]
    errors = []
    for batch in frames:
        bonus, metrics = rnd.update(batch)
        errors.append(bonus * metrics["rnd_bonus_scale"])  # the bonus is the error over the scale
        # ...and the scale is the root mean square of every error seen so far, this batch's included
        # (1e-8 keeps it above zero).
        mean_square = torch.cat(errors).double().pow(2).mean().item()
        assert metrics["rnd_bonus_scale"] == pytest.approx((mean_square + 1e-8) ** 0.5, rel=1e-5)
    pixels = torch.cat(frames).double()
    torch.testing.assert_close(rnd.obs_stats.mean.double(), pixels.mean(0), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(rnd.obs_stats.var.double(), pixels.var(0, unbiased=False), rtol=1e-4, atol=1e-2)


def test_target_is_frozen_and_predictor_learns():
    torch.manual_seed(0)
    rnd = RND(SHAPE)
    target = {k: v.clone() for k, v in rnd.target.state_dict().items()}
    predictor = {k: v.clone() for k, v in rnd.predictor.state_dict().items()}
    rnd.update(states(0))
    assert all(torch.equal(v, rnd.target.state_dict()[k]) for k, v in target.items())
    assert any(not torch.equal(v, rnd.predictor.state_dict()[k]) for k, v in predictor.items())


def test_bad_observations_are_named():
    rnd = RND(SHAPE)
    with pytest.raises(ValueError, match=r"uint8 observations \(B, 3, 40, 40\)"):
        rnd.bonus(states(0).float())
    with pytest.raises(ValueError, match=r"uint8 observations \(B, 3, 40, 40\)"):
        rnd.update(states(0)[:, :2])
    with pytest.raises(ValueError, match="at least 36x36"):
        RND((3, 32, 32))


def test_state_vectors_get_the_same_bonus_mechanism():
    torch.manual_seed(0)
    rnd = RND((6,))
    generator = torch.Generator().manual_seed(0)
    seen = torch.randn(32, 6, generator=generator) * 0.1  # states near the origin...
    unseen = seen + torch.tensor([3.0, -3.0, 0.0, 0.0, 3.0, 0.0])  # ...and far from it

    def error(obs: torch.Tensor) -> float:
        return (rnd.bonus(obs) * rnd.bonus_stats.rms).mean().item()

    rnd.update(torch.cat([seen, unseen[:1]]))  # the whitening has seen one far state
    seen_start = error(seen)
    for _ in range(100):
        rnd.update(seen)
    assert error(seen) < 0.1 * seen_start
    assert rnd.bonus(unseen).mean() > 10 * rnd.bonus(seen).mean()  # the far states keep their novelty
    with pytest.raises(ValueError, match=r"float observations \(B, 6\)"):
        rnd.bonus(seen.to(torch.uint8))
    with pytest.raises(ValueError, match=r"float observations \(B, 6\)"):
        rnd.update(seen[:, :5])
    with pytest.raises(ValueError, match=r"frames \(C, H, W\) or state vectors \(D,\)"):
        RND((4, 6))

import pytest
import torch

from agents.rnd import RND

SHAPE = (3, 40, 40)


def states(seed: int, count: int = 16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, *SHAPE), dtype=torch.uint8, generator=generator)


def test_bonus_fades_on_repeated_states_and_stays_high_on_new_ones():
    torch.manual_seed(0)
    rnd = RND(SHAPE)  # VIPER's lr 3e-4
    seen, unseen = states(0), states(1)
    history = []
    for _ in range(60):
        bonus, metrics = rnd.update(seen)
        assert bonus.shape == (16,) and torch.isfinite(bonus).all() and (bonus >= 0).all()
        assert metrics["rnd_loss"] >= 0
        history.append(bonus.mean().item())
    assert history[-1] < 0.5 * history[0]
    assert sum(history[-10:]) < sum(history[:10])  # a trend, not one lucky step
    # bonus() is a pure query, and familiar states are less novel than new ones.
    assert torch.equal(rnd.bonus(seen), rnd.bonus(seen))
    assert rnd.bonus(seen).mean() < rnd.bonus(unseen).mean()


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

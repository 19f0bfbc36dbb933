import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from worldmodel.quantizers import FSQ, LFQ, QuantizerOutput, VectorQuantizer, make_quantizer


def as_latents(rows: torch.Tensor) -> torch.Tensor:
    """Rows (N, D) -> latents (1, D, 1, N), so row n is grid position n."""
    return rearrange(rows, "n d -> 1 d 1 n")


def buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.clone() for name, b in module.named_buffers()}


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------- common interface


QUANTIZER_FACTORIES = {
    "vq": lambda: VectorQuantizer(dim=6, codebook_size=32),
    "fsq": lambda: FSQ(levels=[8, 5, 5, 5]),
    "lfq": lambda: LFQ(dim=6),
}


@pytest.mark.parametrize("name", sorted(QUANTIZER_FACTORIES))
@pytest.mark.parametrize("training", [True, False])
def test_output_shapes_and_codes_from_indices(name, training):
    quantizer = QUANTIZER_FACTORIES[name]().train(training)
    z = torch.randn(2, quantizer.dim, 3, 5)
    out = quantizer(z)
    assert isinstance(out, QuantizerOutput)
    assert out.quantized.shape == z.shape
    assert out.indices.shape == (2, 3, 5) and out.indices.dtype == torch.long
    assert out.loss.ndim == 0
    assert 0 <= out.indices.min() and out.indices.max() < quantizer.codebook_size
    assert 1.0 <= out.metrics["perplexity"] <= 30 + 1e-4
    assert 0.0 < out.metrics["usage"] <= 1.0
    codes = quantizer.codes_from_indices(out.indices)
    assert codes.shape == (2, 3, 5, quantizer.dim)
    if training and name == "vq":
        return  # the EMA update has already moved the codes that were used
    torch.testing.assert_close(rearrange(codes, "b h w d -> b d h w"), out.quantized, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(QUANTIZER_FACTORIES))
def test_bad_latent_shape_raises(name):
    quantizer = QUANTIZER_FACTORIES[name]()
    with pytest.raises(ValueError, match=r"\(B, \d+, h, w\)"):
        quantizer(torch.randn(2, quantizer.dim + 1, 3, 3))
    with pytest.raises(ValueError, match=r"\(B, \d+, h, w\)"):
        quantizer(torch.randn(2, quantizer.dim, 3))


@pytest.mark.parametrize("make", [lambda: VectorQuantizer(5, 16), lambda: LFQ(5)], ids=["vq", "lfq"])
def test_straight_through_gradient_is_identity(make):
    quantizer = make().train()
    z = torch.randn(2, 5, 4, 4, requires_grad=True)
    quantizer(z).quantized.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))


def test_fsq_gradient_passes_rounding_and_keeps_tanh_bound():
    fsq = FSQ(levels=[8, 5, 3])
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    fsq(z).quantized.sum().backward()
    z_ref = z.detach().clone().requires_grad_(True)
    half_width = torch.tensor([4.0, 2.0, 1.0])
    (fsq.bound(rearrange(z_ref, "b d h w -> b h w d")) / half_width).sum().backward()
    torch.testing.assert_close(z.grad, z_ref.grad)


def test_make_quantizer_validates():
    assert make_quantizer("fsq", 4, {"levels": [8, 5, 5, 5]}).codebook_size == 1000
    with pytest.raises(ValueError, match="unknown quantizer"):
        make_quantizer("rvq", 4, {})
    with pytest.raises(ValueError, match="latent dim is 3"):
        make_quantizer("fsq", 3, {"levels": [8, 5, 5, 5]})
    with pytest.raises(ValueError, match="bad kwargs"):
        make_quantizer("vq", 4, {"codebook_size": 8, "temperature": 1.0})
    with pytest.raises(ValueError, match="must not set 'dim'"):
        make_quantizer("lfq", 4, {"dim": 4})


# ---------------------------------------------------------------- LFQ


def test_lfq_index_is_sum_of_powers_of_two_of_positive_dims():
    lfq = LFQ(dim=4)
    rows = torch.tensor(
        [
            [-1.0, -2.0, -0.5, -3.0],  # no positive dim -> 0
            [0.3, -1.0, -1.0, -1.0],  # dim 0 -> 1
            [-0.1, 2.0, -1.0, -1.0],  # dim 1 -> 2
            [0.2, 0.1, -1.0, 5.0],  # dims 0, 1, 3 -> 1 + 2 + 8
            [1.0, 1.0, 1.0, 1.0],  # all -> 15
            [0.0, -1.0, -1.0, -1.0],  # zero counts as negative -> 0
        ]
    )
    out = lfq.eval()(as_latents(rows))
    assert out.indices.flatten().tolist() == [0, 1, 2, 11, 15, 0]
    expected_codes = torch.where(rows > 0, 1.0, -1.0)
    torch.testing.assert_close(rearrange(out.quantized, "1 d 1 n -> n d"), expected_codes)
    torch.testing.assert_close(lfq.codes_from_indices(torch.tensor([0, 1, 2, 11, 15, 0])), expected_codes)
    assert lfq.codebook_size == 16


def test_lfq_eval_loss_is_commitment_only():
    lfq = LFQ(dim=3, commitment_weight=0.5).eval()
    rows = torch.tensor([[0.5, -2.0, 1.0]])
    out = lfq(as_latents(rows))
    torch.testing.assert_close(out.loss, 0.5 * ((rows - rows.sign()) ** 2).mean())


@pytest.mark.parametrize("dim", [4, 14], ids=["exact", "factorised"])
def test_lfq_entropy_loss_prefers_diverse_codes(dim):
    lfq = LFQ(dim=dim, commitment_weight=0.0).train()
    diverse = torch.randint(0, 2, (1024, dim)).float() * 2 - 1
    collapsed = diverse[:1].expand(1024, dim)
    diverse_out, collapsed_out = lfq(as_latents(diverse)), lfq(as_latents(collapsed))
    assert diverse_out.loss < collapsed_out.loss - 0.1 * 0.5 * math.log(2) * dim
    assert collapsed_out.metrics["codebook_entropy"] < 1e-3
    assert lfq.exact_entropy == (dim <= 12)


def test_lfq_factorised_per_sample_entropy_equals_full_softmax():
    """The per-bit entropy sum is exact: q(c|z) factorises over bits."""
    lfq = LFQ(dim=5, inv_temperature=0.7)
    rows = torch.randn(64, 5)
    per_sample, codebook = lfq.entropy_terms(rows)
    all_codes = lfq.codes_from_indices(torch.arange(32))
    probs = F.softmax(-0.7 * torch.cdist(rows, all_codes) ** 2, dim=-1)
    torch.testing.assert_close(per_sample, -(probs * probs.log()).sum(-1).mean(), rtol=1e-4, atol=1e-5)
    avg = probs.mean(0)
    torch.testing.assert_close(codebook, -(avg * avg.log()).sum(), rtol=1e-4, atol=1e-5)
    factorised = LFQ(dim=5, inv_temperature=0.7, exact_entropy_max_dim=0)
    assert factorised.entropy_terms(rows)[1] >= codebook - 1e-5  # per-bit sum bounds the joint entropy


# ---------------------------------------------------------------- FSQ


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [2, 3, 4], [7, 6]], ids=["8555", "234", "76"])
def test_fsq_grid_round_trip(levels):
    fsq = FSQ(levels=levels)
    assert fsq.codebook_size == math.prod(levels) and fsq.dim == len(levels)
    indices = torch.arange(fsq.codebook_size)
    codes = fsq.codes_from_indices(indices)
    assert len(torch.unique(codes, dim=0)) == fsq.codebook_size
    for d, level in enumerate(levels):
        half_width = level // 2
        grid = (torch.arange(level) - half_width).float() / half_width
        assert torch.isin(codes[:, d], grid).all()
        assert set(codes[:, d].tolist()) == set(grid.tolist())
    assert torch.equal(fsq.indices_from_codes(codes), indices)
    # a latent whose bounded value is exactly a grid point quantizes to that point's index
    levels_t = torch.tensor(levels).float()
    half_range = (levels_t - 1) * (1 + fsq.eps) / 2
    offset = (torch.tensor(levels) % 2 == 0).float() * 0.5
    z = torch.atanh((codes * (torch.tensor(levels) // 2) + offset) / half_range) - torch.atanh(offset / half_range)
    out = fsq(as_latents(z))
    assert torch.equal(out.indices.flatten(), indices)
    torch.testing.assert_close(rearrange(out.quantized, "1 d 1 n -> n d"), codes)


def test_fsq_values_lie_on_level_grid_and_cover_it():
    fsq = FSQ(levels=[8, 5])
    out = fsq(torch.randn(4, 2, 16, 16) * 3)
    assert set(out.quantized[:, 0].unique().tolist()) == {v / 4 for v in range(-4, 4)}
    assert set(out.quantized[:, 1].unique().tolist()) == {v / 2 for v in range(-2, 3)}
    assert out.loss == 0


def test_fsq_rejects_bad_levels():
    with pytest.raises(ValueError, match="each >= 2"):
        FSQ(levels=[8, 1])
    with pytest.raises(ValueError, match="each >= 2"):
        FSQ(levels=[])


# ---------------------------------------------------------------- VQ


def test_vq_initialises_codebook_from_first_training_batch():
    vq = VectorQuantizer(dim=3, codebook_size=4, decay=0.0, dead_code_threshold=0.0).train()
    rows = torch.randn(4, 3)
    assert not vq.initialized
    out = vq(as_latents(rows))
    assert vq.initialized
    # with 4 rows and 4 codes the init is a permutation of the rows, so quantization is exact
    assert sorted(out.indices.flatten().tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(vq.codebook[out.indices.flatten()], rows)
    torch.testing.assert_close(rearrange(out.quantized, "1 d 1 n -> n d"), rows)
    assert out.loss.item() == pytest.approx(0.0, abs=1e-10)


def test_vq_ema_update_matches_formula():
    decay = 0.9
    vq = VectorQuantizer(dim=2, codebook_size=3, decay=decay, dead_code_threshold=0.0).train()
    codebook = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    vq.codebook.copy_(codebook)
    vq.ema_embed_sum.copy_(codebook * 2.0)
    vq.ema_cluster_size.fill_(2.0)
    vq.initialized.fill_(True)
    rows = torch.tensor([[1.0, 1.0], [-1.0, 0.0], [9.0, 1.0]])  # codes 0, 0, 1; code 2 unused
    out = vq(as_latents(rows))
    assert out.indices.flatten().tolist() == [0, 0, 1]
    counts = torch.tensor([2.0, 1.0, 0.0])
    sums = torch.tensor([[0.0, 1.0], [9.0, 1.0], [0.0, 0.0]])
    size = decay * 2.0 + (1 - decay) * counts
    embed_sum = decay * codebook * 2.0 + (1 - decay) * sums
    torch.testing.assert_close(vq.ema_cluster_size, size)
    torch.testing.assert_close(vq.ema_embed_sum, embed_sum)
    torch.testing.assert_close(vq.codebook, embed_sum / size[:, None])
    torch.testing.assert_close(vq.codebook[2], codebook[2])  # unused code keeps its value
    # commitment loss uses the codes before the update
    expected = 0.25 * ((rows - codebook[[0, 0, 1]]) ** 2).mean()
    torch.testing.assert_close(out.loss, expected)


def test_vq_restarts_dead_code_with_encoder_output():
    vq = VectorQuantizer(dim=2, codebook_size=2, decay=0.5, dead_code_threshold=1.0).train()
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [100.0, 100.0]]))
    vq.ema_embed_sum.copy_(vq.codebook)
    vq.ema_cluster_size.fill_(1.0)
    vq.initialized.fill_(True)
    rows = torch.randn(8, 2) * 0.1 + 3.0  # all nearer to code 0, so code 1 dies (size 0.5 < 1)
    vq(as_latents(rows))
    assert (vq.codebook[1] - rows).norm(dim=1).min() < 1e-6
    assert vq.ema_cluster_size[1] == 1.0
    torch.testing.assert_close(vq.ema_embed_sum[1], vq.codebook[1])


def test_vq_l2_normalised_codes_have_unit_norm():
    vq = VectorQuantizer(dim=8, codebook_size=16, l2_normalize=True).train()
    for _ in range(3):
        out = vq(torch.randn(2, 8, 4, 4) * 5)
    torch.testing.assert_close(vq.codebook.norm(dim=1), torch.ones(16))
    torch.testing.assert_close(out.quantized.norm(dim=1), torch.ones(2, 4, 4))


def test_vq_eval_mode_does_not_change_buffers():
    vq = VectorQuantizer(dim=4, codebook_size=8).train()
    vq(torch.randn(2, 4, 4, 4))
    vq.eval()
    before = buffers(vq)
    vq(torch.randn(2, 4, 4, 4) + 3.0)
    after = buffers(vq)
    assert all(torch.equal(before[k], after[k]) for k in before)
    fresh = VectorQuantizer(dim=4, codebook_size=8).eval()
    fresh(torch.randn(2, 4, 4, 4))
    assert not fresh.initialized


def test_vq_state_is_in_state_dict():
    keys = set(VectorQuantizer(dim=4, codebook_size=8).state_dict())
    assert keys == {"codebook", "ema_cluster_size", "ema_embed_sum", "initialized"}
    assert set(FSQ([4, 4]).state_dict()) == set() and set(LFQ(4).state_dict()) == set()


def test_vq_rejects_bad_config():
    with pytest.raises(ValueError, match="decay"):
        VectorQuantizer(dim=4, codebook_size=8, decay=1.0)
    with pytest.raises(ValueError, match="codebook_size >= 1"):
        VectorQuantizer(dim=4, codebook_size=0)

import json

import numpy as np
import pytest
import torch

from worldmodel.checkpoint import CheckpointError, save_checkpoint
from worldmodel.tokenizer import (
    TOKENIZER_KINDS, FrameTokenizer, Tokenizer, TokenizerConfig, TokenizerOutput, load_tokenizer,
)

QUANTIZER_CONFIGS = {
    "vq": {"quantizer": "vq", "latent_dim": 8, "quantizer_kwargs": {"codebook_size": 32}},
    "fsq": {"quantizer": "fsq", "latent_dim": 4, "quantizer_kwargs": {"levels": [8, 5, 5, 5]}},
    "lfq": {"quantizer": "lfq", "latent_dim": 10, "quantizer_kwargs": {}},
}
PRESETS = {"dmc_8x8": (1, 2, 2, 2), "atari_16x16": (1, 2, 2)}


def tiny_config(quantizer: str = "vq", ch_mult: tuple[int, ...] = (1, 2, 2, 2), **overrides) -> TokenizerConfig:
    fields = {"image_size": 64, "base_channels": 8, "ch_mult": ch_mult, **QUANTIZER_CONFIGS[quantizer]}
    return TokenizerConfig(**{**fields, **overrides})


def random_frames(*lead: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (*lead, size, size, 3), dtype=np.uint8)


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("quantizer", sorted(QUANTIZER_CONFIGS))
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_encode_decode_shapes_and_dtypes(quantizer, preset):
    tokenizer = FrameTokenizer(tiny_config(quantizer, PRESETS[preset]))
    side = 8 if preset == "dmc_8x8" else 16
    assert tokenizer.code_shape == (side, side)
    for lead in [(5,), (2, 3)]:
        codes = tokenizer.encode(random_frames(*lead), batch_size=4)
        assert codes.shape == (*lead, side, side) and codes.dtype == torch.long
        assert 0 <= codes.min() and codes.max() < tokenizer.vocab_size
        frames = tokenizer.decode(codes, batch_size=4)
        assert frames.shape == (*lead, 64, 64, 3) and frames.dtype == torch.uint8


def test_vocab_size_and_levels_per_quantizer():
    assert FrameTokenizer(tiny_config("vq")).vocab_size == 32
    assert FrameTokenizer(tiny_config("fsq")).vocab_size == 1000
    assert FrameTokenizer(tiny_config("lfq")).vocab_size == 2**10
    assert FrameTokenizer(tiny_config("fsq")).code_levels == (8, 5, 5, 5)
    assert FrameTokenizer(tiny_config("vq")).code_levels == FrameTokenizer(tiny_config("lfq")).code_levels == ()


def test_encode_accepts_torch_and_numpy_and_chunks_consistently():
    tokenizer = FrameTokenizer(tiny_config("vq"))
    tokenizer.train()
    tokenizer(torch.rand(4, 3, 64, 64) * 2 - 1)  # initialise the codebook from data
    frames = random_frames(7)
    whole = tokenizer.encode(frames, batch_size=64)
    assert torch.equal(tokenizer.encode(torch.from_numpy(frames), batch_size=3), whole)
    assert torch.equal(tokenizer.encode(frames[::-1], batch_size=2), whole.flip(0))  # negative strides
    assert tokenizer.training  # encode restores the mode
    assert tokenizer.encode(random_frames(0)).shape == (0, 8, 8)


def test_encode_does_not_update_vq_buffers():
    tokenizer = FrameTokenizer(tiny_config("vq")).train()
    before = {k: v.clone() for k, v in tokenizer.quantizer.named_buffers()}
    tokenizer.encode(random_frames(4))
    assert all(torch.equal(before[k], v) for k, v in tokenizer.quantizer.named_buffers())


def test_forward_output_and_metrics():
    tokenizer = FrameTokenizer(tiny_config("vq", (1, 2, 2)))
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    out = tokenizer(x)
    assert isinstance(out, TokenizerOutput)
    assert out.recon.shape == x.shape and out.indices.shape == (2, 16, 16)
    assert {"recon_mse", "quantizer_loss", "perplexity", "usage"} <= set(out.metrics)
    torch.testing.assert_close(out.loss, out.metrics["recon_mse"] + out.metrics["quantizer_loss"])
    out.loss.backward()
    assert all(p.grad is not None for p in tokenizer.encoder.parameters())


@pytest.mark.parametrize("quantizer", sorted(QUANTIZER_CONFIGS))
def test_save_load_gives_identical_codes(tmp_path, quantizer):
    tokenizer = FrameTokenizer(tiny_config(quantizer))
    tokenizer(torch.rand(4, 3, 64, 64) * 2 - 1)  # a training-mode pass moves the VQ buffers
    tokenizer.save(tmp_path / "tok")
    loaded = FrameTokenizer.load(tmp_path / "tok")
    assert loaded.config == tokenizer.config
    frames = random_frames(3)
    codes = tokenizer.encode(frames)
    assert torch.equal(loaded.encode(frames), codes)
    assert torch.equal(loaded.decode(codes), tokenizer.decode(codes))
    config = json.loads((tmp_path / "tok" / "config.json").read_text())
    assert config["kind"] == "frame_tokenizer" and config["config"]["quantizer"] == quantizer


def test_load_with_mismatched_config_raises(tmp_path):
    tokenizer = FrameTokenizer(tiny_config("vq"))
    other = tiny_config("vq", base_channels=16)
    save_checkpoint(tmp_path / "tok", tokenizer.state_dict(), {"kind": "frame_tokenizer", "config": other.to_dict()})
    with pytest.raises(CheckpointError, match="does not match the model"):
        FrameTokenizer.load(tmp_path / "tok")


def test_load_wrong_kind_or_bad_config_raises(tmp_path):
    tokenizer = FrameTokenizer(tiny_config("vq"))
    save_checkpoint(tmp_path / "a", tokenizer.state_dict(), {"kind": "video_transformer", "config": {}})
    with pytest.raises(CheckpointError, match="kind 'video_transformer'"):
        FrameTokenizer.load(tmp_path / "a")
    bad = {**tokenizer.config.to_dict(), "quantizer": "rvq"}
    save_checkpoint(tmp_path / "b", tokenizer.state_dict(), {"kind": "frame_tokenizer", "config": bad})
    with pytest.raises(CheckpointError, match="unknown quantizer"):
        FrameTokenizer.load(tmp_path / "b")


def test_load_tokenizer_dispatches_on_the_recorded_kind(tmp_path):
    tokenizer = FrameTokenizer(tiny_config("vq"))
    tokenizer.save(tmp_path / "tok")
    assert json.loads((tmp_path / "tok" / "config.json").read_text())["kind"] == FrameTokenizer.kind
    loaded = load_tokenizer(tmp_path / "tok", device="cpu")
    assert isinstance(loaded, Tokenizer) and type(loaded) is FrameTokenizer and loaded.kind == "frame_tokenizer"
    assert (loaded.vocab_size, loaded.code_shape, loaded.image_size, loaded.frames_per_code_step) == (32, (8, 8), 64, 1)
    frames = random_frames(2)
    assert torch.equal(loaded.encode(frames), tokenizer.encode(frames))


class _OtherFamily:
    """Stands in for a second tokenizer family: records how the loader called it."""

    @classmethod
    def load(cls, directory, map_location):
        return ("other family", directory, map_location)


def test_load_tokenizer_reaches_every_registered_family(tmp_path, monkeypatch):
    monkeypatch.setitem(TOKENIZER_KINDS, "causal_video", f"{__name__}:_OtherFamily")
    save_checkpoint(tmp_path / "tok", {}, {"kind": "causal_video", "config": {}})
    assert load_tokenizer(tmp_path / "tok", device="meta") == ("other family", tmp_path / "tok", "meta")


def test_checkpoint_without_a_kind_loads_as_the_frame_tokenizer(tmp_path):
    """Checkpoints written before the kind was recorded: weights and config only."""
    tokenizer = FrameTokenizer(tiny_config("fsq"))
    save_checkpoint(tmp_path / "old", tokenizer.state_dict(), {"config": tokenizer.config.to_dict()})
    frames = random_frames(2)
    for loaded in (load_tokenizer(tmp_path / "old"), FrameTokenizer.load(tmp_path / "old")):
        assert type(loaded) is FrameTokenizer and loaded.config == tokenizer.config
        assert torch.equal(loaded.encode(frames), tokenizer.encode(frames))


def test_unknown_tokenizer_kind_is_named_with_the_known_ones(tmp_path):
    save_checkpoint(tmp_path / "tok", {}, {"kind": "causal_video", "config": {}})
    known = r"unknown tokenizer kind 'causal_video'; known kinds: \['causal_video_tokenizer', 'frame_tokenizer'\]"
    with pytest.raises(CheckpointError, match=known):
        load_tokenizer(tmp_path / "tok")
    with pytest.raises(CheckpointError, match="no tokenizer checkpoint at"):
        load_tokenizer(tmp_path / "missing")


def test_tiny_tokenizer_overfits_a_few_frames():
    config = TokenizerConfig(
        image_size=32, base_channels=16, ch_mult=(1, 2, 2), latent_dim=16, quantizer_kwargs={"codebook_size": 64}
    )
    tokenizer = FrameTokenizer(config)
    rng = np.random.default_rng(0)
    frames = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):  # background gradient plus a coloured box at a different place
        frame[..., 2] = np.linspace(40, 200, 32, dtype=np.uint8)[:, None]
        y, x = rng.integers(2, 20, 2)
        frame[y : y + 10, x : x + 10] = [(60 * i) % 256, 200, 90]
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=2e-3)
    first = None
    for _ in range(200):
        out = tokenizer(x)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        first = first if first is not None else out.metrics["recon_mse"].item()
    recon = tokenizer.decode(tokenizer.encode(frames)).float()
    mse = ((recon - torch.from_numpy(frames).float()) ** 2).mean()
    psnr = 10 * torch.log10(255.0**2 / mse)
    assert out.metrics["recon_mse"].item() < first / 20
    assert psnr > 28.0


def test_encode_rejects_bad_frames():
    tokenizer = FrameTokenizer(tiny_config("vq"))
    with pytest.raises(ValueError, match=r"uint8 frames of shape \(\.\.\., 64, 64, 3\), got \(2, 64, 64, 3\) float32"):
        tokenizer.encode(random_frames(2).astype(np.float32))
    with pytest.raises(ValueError, match=r"got \(2, 3, 64, 64\)"):
        tokenizer.encode(random_frames(2).transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match=r"got \(2, 32, 32, 3\)"):
        tokenizer.encode(random_frames(2, size=32))
    with pytest.raises(ValueError, match="numpy array or torch tensor"):
        tokenizer.encode(random_frames(2).tolist())
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        tokenizer.encode(random_frames(2), batch_size=0)


def test_decode_rejects_bad_indices():
    tokenizer = FrameTokenizer(tiny_config("vq"))
    with pytest.raises(ValueError, match=r"indices in \[0, 32\), got values in \[0, 32\]"):
        tokenizer.decode(torch.arange(128).reshape(2, 8, 8) % 33)
    with pytest.raises(ValueError, match=r"got values in \[-1, 0\]"):
        tokenizer.decode(torch.tensor([[-1] + [0] * 7] * 8))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 8, 8\), got \(2, 16, 16\)"):
        tokenizer.decode(torch.zeros(2, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="integer indices, got torch.float32"):
        tokenizer.decode(torch.zeros(2, 8, 8))


def test_forward_rejects_bad_images():
    tokenizer = FrameTokenizer(tiny_config("vq"))
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\), got \(2, 64, 64, 3\)"):
        tokenizer(torch.zeros(2, 64, 64, 3))


def test_config_round_trip_and_presets():
    config = TokenizerConfig(quantizer="fsq", latent_dim=4, quantizer_kwargs={"levels": (8, 5, 5, 5)})
    assert TokenizerConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert TokenizerConfig().code_size == 8
    assert TokenizerConfig(ch_mult=(1, 2, 2)).code_size == 16
    assert TokenizerConfig().quantizer_kwargs == {"codebook_size": 256}
    assert TokenizerConfig(quantizer_kwargs={"codebook_size": 1024}).quantizer_kwargs == {"codebook_size": 1024}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quantizer": "rvq"}, "unknown quantizer 'rvq'"),
        ({"image_size": 60}, "not divisible by 2\\*\\*\\(len\\(ch_mult\\)-1\\) = 8"),
        ({"image_size": 0}, "image_size must be a positive int"),
        ({"base_channels": -4}, "base_channels must be a positive int"),
        ({"latent_dim": 0}, "latent_dim must be a positive int"),
        ({"num_res_blocks": -1}, "num_res_blocks must be an int >= 0"),
        ({"ch_mult": ()}, "ch_mult must be a non-empty"),
        ({"ch_mult": (1, 0)}, "ch_mult must be a non-empty"),
        ({"quantizer": "fsq", "quantizer_kwargs": {"levels": [8, 5, 5, 5]}}, "has dim 4, but the latent dim is 64"),
        ({"quantizer": "fsq"}, "bad kwargs"),
        ({"quantizer_kwargs": {"codebook_size": 8, "dim": 64}}, "must not set 'dim'"),
        ({"quantizer_kwargs": {"codebook_sz": 8}}, "bad kwargs"),
        ({"quantizer": "lfq"}, "dim <= 62"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TokenizerConfig(**kwargs)


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown TokenizerConfig keys \['channels'\]"):
        TokenizerConfig.from_dict({**TokenizerConfig().to_dict(), "channels": 3})

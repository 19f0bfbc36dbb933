"""The causal video tokenizer: time compressed k-fold, causal in time, saved and loaded like every tokenizer."""

import numpy as np
import pytest
import torch

from tests.conftest import moving_square_video, randomize_weights
from worldmodel.checkpoint import CheckpointError
from worldmodel.tokenizer import load_tokenizer
from worldmodel.video_tokenizer import CausalVideoTokenizer, VideoTokenizerConfig

CONFIG = VideoTokenizerConfig(image_size=16, base_channels=8, ch_mult=(1, 2, 2), time_downsample=4, latent_dim=3,
                              quantizer="fsq", quantizer_kwargs={"levels": [5, 5, 5]})


def _tokenizer(seed: int = 0) -> CausalVideoTokenizer:
    torch.manual_seed(seed)
    return randomize_weights(CausalVideoTokenizer(CONFIG)).eval()


def _clips(count: int, frames: int) -> np.ndarray:
    return np.stack([moving_square_video(frames, 16, seed) for seed in range(count)])


def test_a_clip_of_1_plus_4n_frames_becomes_1_plus_n_code_steps_and_back():
    tokenizer = _tokenizer()
    clips = _clips(2, 9)
    codes = tokenizer.encode(clips)
    assert codes.shape == (2, 3, 4, 4) and codes.dtype == torch.int64 and tokenizer.frames_per_code_step == 4
    assert int(codes.max()) < tokenizer.vocab_size == 125
    decoded = tokenizer.decode(codes)
    assert decoded.shape == (2, 9, 16, 16, 3) and decoded.dtype == torch.uint8
    assert tokenizer.encode(clips[None]).shape == (1, 2, 3, 4, 4)  # any leading dims
    with pytest.raises(ValueError, match="1 \\+ 4 n frames"):
        tokenizer.encode(clips[:, :8])
    with pytest.raises(ValueError, match="uint8 clips"):
        tokenizer.encode(clips.astype(np.float32))
    with pytest.raises(ValueError, match=r"codes in \[0, 125\)"):
        tokenizer.decode(codes + 200)


def test_codes_and_frames_never_depend_on_later_frames():
    """Causal in time: a clip's first 1 + 4m frames give exactly its first 1 + m code steps, whatever follows,
    and the first 1 + m code steps decode to the same first frames."""
    tokenizer = _tokenizer()
    clip = _clips(1, 13)[0]
    other_future = clip.copy()
    other_future[5:] = 255 - other_future[5:]
    full, changed, prefix = tokenizer.encode(clip), tokenizer.encode(other_future), tokenizer.encode(clip[:5])
    assert torch.equal(full[:2], prefix) and torch.equal(changed[:2], prefix)
    assert not torch.equal(full[2:], changed[2:])  # the later frames do count, for the later steps
    assert torch.equal(tokenizer.encode(clip[:1])[0], full[0])  # the first frame alone: an image tokenizer
    assert torch.equal(tokenizer.decode(full)[:5], tokenizer.decode(full[:2]))


def test_it_learns_to_reconstruct_a_tiny_video_set():
    torch.manual_seed(0)
    tokenizer = CausalVideoTokenizer(CONFIG)
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=3e-3)
    videos = torch.from_numpy(_clips(4, 9)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    losses = []
    for _ in range(60):
        output = tokenizer(videos)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
    assert output.recon.shape == videos.shape and output.indices.shape == (4, 3, 4, 4)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_saved_and_loaded_through_the_one_tokenizer_loader(tmp_path):
    tokenizer = _tokenizer()
    tokenizer.save(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok", "cpu")
    assert isinstance(loaded, CausalVideoTokenizer) and loaded.config == CONFIG
    clips = _clips(1, 5)
    assert torch.equal(loaded.encode(clips), tokenizer.encode(clips))
    with pytest.raises(CheckpointError, match="expected 'causal_video_tokenizer'"):
        from worldmodel.tokenizer import FrameTokenizer, TokenizerConfig
        FrameTokenizer(TokenizerConfig(image_size=16, base_channels=8, ch_mult=(1, 2, 2))).save(tmp_path / "frame")
        CausalVideoTokenizer.load(tmp_path / "frame")


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="power of 2"):
        VideoTokenizerConfig(time_downsample=3)
    with pytest.raises(ValueError, match="needs 3 resolution stages"):
        VideoTokenizerConfig(ch_mult=(1, 2, 2), time_downsample=8)
    assert VideoTokenizerConfig().quantizer_kwargs == {"levels": [7, 5, 5, 5, 5]}  # 4375 codes
    assert VideoTokenizerConfig(quantizer="vq", latent_dim=16).quantizer_kwargs == {"codebook_size": 256}

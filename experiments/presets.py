"""Named model and training sizes for each kind of data, small enough for a CPU by default.

``dmc`` follows VIPER's DMC tokenizer (64x64 -> 8x8 codes, codebook 256 x 64,
channel multipliers [1, 2, 2, 2]) with a narrower CNN for CPUs; ``dmc-paper``
keeps VIPER's 128 base channels for GPUs. ``atari`` and ``maze3d`` map
64x64 -> 16x16 codes with a 1024-entry codebook, as VIPER does for Atari.
``long`` maps 64x64 -> 4x4 codes (1024-entry codebook) so that a transformer
sees 144 frames on a CPU: 17 tokens per frame instead of 65. ``fast`` has the same
4x4 grid with FSQ codes of 7 * 5^4 = 4375 values (the FSQ paper's levels for about 2^12):
a larger vocabulary in place of the lost codes, for an imagined env that samples 17
tokens per frame (IRIS steps Atari at 16). ``video`` is the causal video tokenizer
(:mod:`worldmodel.video_tokenizer`): the ``dmc`` CNN's 8x8 grid of FSQ codes of 4375
values, each code step standing for 4 frames (the first frame alone): 16 tokens per
frame, a quarter of ``dmc``'s.

Video transformer presets give the architecture and clip length; the vocabulary,
code grid, actions and tasks come from the tokenizer and the dataset
(``worldmodel.train_video.fit_to_data``). ``dmc`` is sized for a CPU; ``dmc-paper``
is VIPER's DMC model (embed 256, 8 layers, 8 heads, MLP 1024, 16-frame clips).
``long`` is the long-horizon consistency model: 4 layers of 36-frame windows
reach back 144 frames, TECO's context, and it trains on 144-frame clips. ``memory`` is
its size for the scaled benchmark (``dmlab:maze-small``, 48 context frames): one
window spans the whole context, so a single attention step reaches any frame of it,
and it trains on 64-frame clips. ``long-paper`` is ``long`` at a GPU's size (embed 512,
8 layers of 8 heads; VIPER's Atari width, TECO's scale of temporal model), for the full
protocol's one documented GPU run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from worldmodel.tokenizer import TokenizerConfig
from worldmodel.transformer import VideoTransformerConfig
from worldmodel.video_tokenizer import VideoTokenizerConfig

TOKENIZER_PRESETS: dict[str, TokenizerConfig | VideoTokenizerConfig] = {
    "dmc": TokenizerConfig(
        image_size=64, base_channels=32, ch_mult=(1, 2, 2, 2), latent_dim=64,
        quantizer="vq", quantizer_kwargs={"codebook_size": 256},
    ),
    "dmc-paper": TokenizerConfig(
        image_size=64, base_channels=128, ch_mult=(1, 2, 2, 2), latent_dim=64,
        quantizer="vq", quantizer_kwargs={"codebook_size": 256},
    ),
    "atari": TokenizerConfig(
        image_size=64, base_channels=32, ch_mult=(1, 2, 2), latent_dim=64,
        quantizer="vq", quantizer_kwargs={"codebook_size": 1024},
    ),
    "maze3d": TokenizerConfig(
        image_size=64, base_channels=32, ch_mult=(1, 2, 2), latent_dim=64,
        quantizer="vq", quantizer_kwargs={"codebook_size": 1024},
    ),
    "long": TokenizerConfig(
        image_size=64, base_channels=32, ch_mult=(1, 2, 2, 4, 4), latent_dim=64,
        quantizer="vq", quantizer_kwargs={"codebook_size": 1024},
    ),
    "fast": TokenizerConfig(
        image_size=64, base_channels=32, ch_mult=(1, 2, 2, 4, 4), latent_dim=5,
        quantizer="fsq", quantizer_kwargs={"levels": [7, 5, 5, 5, 5]},
    ),
    "video": VideoTokenizerConfig(
        image_size=64, base_channels=32, ch_mult=(1, 2, 2, 2), time_downsample=4, latent_dim=5,
        quantizer="fsq", quantizer_kwargs={"levels": [7, 5, 5, 5, 5]},
    ),
}

# (latent_dim, quantizer kwargs) when ``--quantizer`` replaces the preset's VQ:
# vocabularies of about the VQ codebook's size (FSQ 8*6*5 = 240, LFQ 2^8 = 256).
QUANTIZER_SWAPS: dict[str, tuple[int, dict]] = {
    "fsq": (3, {"levels": [8, 6, 5]}),
    "lfq": (8, {}),
}


def tokenizer_preset(
    name: str, quantizer: str | None = None, channels: int | None = None
) -> TokenizerConfig | VideoTokenizerConfig:
    """A preset, optionally with another quantizer kind or CNN width."""
    if name not in TOKENIZER_PRESETS:
        raise ValueError(f"unknown tokenizer preset '{name}'; choose from {sorted(TOKENIZER_PRESETS)}")
    config = TOKENIZER_PRESETS[name]
    if quantizer is not None and quantizer != config.quantizer:
        if quantizer not in QUANTIZER_SWAPS:
            raise ValueError(f"unknown quantizer '{quantizer}'; choose from vq, {', '.join(QUANTIZER_SWAPS)}")
        latent_dim, kwargs = QUANTIZER_SWAPS[quantizer]
        config = replace(config, quantizer=quantizer, latent_dim=latent_dim, quantizer_kwargs=dict(kwargs))
    if channels is not None:
        config = replace(config, base_channels=channels)
    return config


@dataclass(frozen=True)
class VideoPreset:
    """A transformer architecture (vocabulary, actions and tasks still to fit) and its training clip length."""

    transformer: VideoTransformerConfig
    clip_length: int


VIDEO_PRESETS: dict[str, VideoPreset] = {
    "dmc": VideoPreset(VideoTransformerConfig(window=8, embed_dim=128, layers=4, heads=4, mlp_ratio=4.0), 16),
    "dmc-paper": VideoPreset(VideoTransformerConfig(window=15, embed_dim=256, layers=8, heads=8, mlp_ratio=4.0), 16),
    "long": VideoPreset(VideoTransformerConfig(window=36, embed_dim=128, layers=4, heads=4, mlp_ratio=4.0), 144),
    "memory": VideoPreset(VideoTransformerConfig(window=48, embed_dim=128, layers=4, heads=4, mlp_ratio=4.0), 64),
    "long-paper": VideoPreset(
        VideoTransformerConfig(window=36, embed_dim=512, layers=8, heads=8, mlp_ratio=4.0), 144
    ),
}


def video_preset(name: str) -> VideoPreset:
    if name not in VIDEO_PRESETS:
        raise ValueError(f"unknown video transformer preset '{name}'; choose from {sorted(VIDEO_PRESETS)}")
    return VIDEO_PRESETS[name]

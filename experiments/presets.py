"""Named model and training sizes for each kind of data, small enough for a CPU by default.

``dmc`` follows VIPER's DMC tokenizer (64x64 -> 8x8 codes, codebook 256 x 64,
channel multipliers [1, 2, 2, 2]) with a narrower CNN for CPUs; ``dmc-paper``
keeps VIPER's 128 base channels for GPUs. ``atari`` and ``maze3d`` map
64x64 -> 16x16 codes with a 1024-entry codebook, as VIPER does for Atari.
"""

from __future__ import annotations

from dataclasses import replace

from worldmodel.tokenizer import TokenizerConfig

TOKENIZER_PRESETS: dict[str, TokenizerConfig] = {
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
}

# (latent_dim, quantizer kwargs) when ``--quantizer`` replaces the preset's VQ:
# vocabularies of about the VQ codebook's size (FSQ 8*6*5 = 240, LFQ 2^8 = 256).
QUANTIZER_SWAPS: dict[str, tuple[int, dict]] = {
    "fsq": (3, {"levels": [8, 6, 5]}),
    "lfq": (8, {}),
}


def tokenizer_preset(name: str, quantizer: str | None = None, channels: int | None = None) -> TokenizerConfig:
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

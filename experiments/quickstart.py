"""`wm quickstart`: the pipeline end to end on a small DMC default, resumable at every stage."""

from __future__ import annotations

from pathlib import Path

from envs.collect import PolicySpec, collect
from experiments.presets import tokenizer_preset
from experiments.reports import returns_table, tokenizer_report
from worldmodel.episodes import DatasetManifest
from worldmodel.train_tokenizer import TokenizerTraining, train_tokenizer


def quickstart(
    out: str | Path,
    task: str = "cartpole-swingup",
    episodes: int = 12,
    tokenizer_minutes: float = 10.0,
    workers: int = 2,
    max_steps: int | None = None,
) -> Path:
    """Collect expert videos, train the DMC tokenizer on them, write ``{out}/report.md``."""
    out = Path(out)
    data = out / "data"
    print(f"[1/3] collecting {episodes} expert episodes of {task} into {data}")
    collect(
        f"dmc:{task}", [PolicySpec("expert")], episodes, data,
        seed=0, test_fraction=0.15, workers=workers, max_steps=max_steps,
    )
    manifest = DatasetManifest.load(data)

    print(f"[2/3] training the dmc tokenizer for up to {tokenizer_minutes:g} minutes into {out / 'tokenizer'}")
    # About as many steps as a 2-core CPU does in the minutes given; the learning rate
    # anneals by whichever budget runs out first, so faster machines stop at the steps.
    steps = max(1, round(80 * tokenizer_minutes))
    training = TokenizerTraining(steps=steps, max_minutes=tokenizer_minutes, eval_every=250, checkpoint_every=250)
    train_tokenizer(data, out / "tokenizer", tokenizer_preset("dmc"), training, resume=True)

    print("[3/3] evaluating and writing the report")
    tokenizer = tokenizer_report(out / "tokenizer" / "checkpoint", data, out=out / "tokenizer")
    report = out / "report.md"
    report.write_text(
        f"# Quickstart: {task}\n\n"
        f"## Expert episodes (true return)\n\n{returns_table(manifest.episodes)}\n\n"
        f"## Tokenizer (held-out {tokenizer['eval_frames']} frames)\n\n"
        "| PSNR (dB) | SSIM | codebook usage | perplexity | codes per frame | encode+decode frames/s |\n"
        "|---|---|---|---|---|---|\n"
        f"| {tokenizer['psnr']:.2f} | {tokenizer['ssim']:.3f} | {tokenizer['codebook_usage']:.2f} "
        f"| {tokenizer['perplexity']:.1f} | {tokenizer['code_shape'][0]}x{tokenizer['code_shape'][1]} "
        f"| {tokenizer['encode_decode_frames_per_s']:.0f} |\n\n"
        "Originals (top) and reconstructions (bottom):\n\n![reconstructions](tokenizer/reconstructions.png)\n\n"
        f"Tensorboard: `tensorboard --logdir {out / 'tokenizer' / 'tb'}`\n"
    )
    return report

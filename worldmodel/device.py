"""The one place a device string is resolved, so every command and loop places its models alike."""

from __future__ import annotations

import torch

AUTO = "auto"


def resolve_device(device: str | torch.device | None = AUTO) -> str:
    """A torch device string for ``device``: ``"auto"`` (or None) is ``"cuda"`` when CUDA is available,
    else ``"cpu"``; anything else is checked by torch and returned as given (``"cuda:1"``, ``"cpu"``).

    ``"cuda"`` stays unindexed, so that under torchrun each process picks its local GPU.
    """
    if device is None or device == AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: expected auto, cpu, cuda or cuda:<index> ({err})") from err
    return str(device)

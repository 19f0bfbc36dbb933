"""Checkpoints as a directory of safetensors files plus JSON, replaced atomically.

A checkpoint directory holds ``model.safetensors`` and ``config.json`` and, for
resumable training, ``optimizer.safetensors`` and ``trainer.json`` (written by
:class:`worldmodel.training_run.TrainingRun`). It is first
written to a temporary sibling and then swapped in by renames, so a crash leaves
either the old checkpoint or the new one, never a mix. No pickles anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
OPTIMIZER_FILE = "optimizer.safetensors"
TRAINER_FILE = "trainer.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the model it is loaded into."""


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling (unique per writer) and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    write_bytes_atomic(path, json.dumps(data, indent=2, sort_keys=True).encode())


@contextmanager
def atomic_directory(directory: str | Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``directory`` to fill; on success it replaces ``directory``.

    The swap is two renames (old out, new in); :func:`load_checkpoint` finishes a swap
    that a crash interrupted. If the body raises, ``directory`` is left untouched.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp")
    old = directory.with_name(f".{directory.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    yield tmp
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(
    directory: str | Path,
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
    optimizer_tensors: dict[str, torch.Tensor] | None = None,
    trainer_state: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint directory atomically (temporary sibling, then rename)."""
    with atomic_directory(directory) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp / MODEL_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        if optimizer_tensors is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in optimizer_tensors.items()}, tmp / OPTIMIZER_FILE)
        if trainer_state is not None:
            (tmp / TRAINER_FILE).write_text(json.dumps(trainer_state, indent=2, sort_keys=True))


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of tensors' names, dtypes, shapes and bytes: identifies weights wherever they live."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def recover_swap(directory: Path) -> None:
    """Finish a swap that a crash interrupted between its two renames."""
    old = directory.with_name(f".{directory.name}.old")
    if not directory.exists() and old.exists():
        os.replace(old, directory)


def load_checkpoint(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``(tensors, config)`` from a checkpoint directory, naming any problem."""
    directory = Path(directory)
    recover_swap(directory)
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint directory at {directory}")
    config = read_json(directory / CONFIG_FILE)
    return read_tensors(directory / MODEL_FILE), config


ConfigT = TypeVar("ConfigT")


def load_typed_checkpoint(
    directory: str | Path, kind: str, parse_config: Callable[[dict[str, Any]], ConfigT]
) -> tuple[ConfigT, dict[str, torch.Tensor]]:
    """Read a checkpoint that must be of ``kind`` and parse its config, naming any mismatch."""
    tensors, meta = load_checkpoint(directory)
    if meta.get("kind") != kind:
        raise CheckpointError(f"checkpoint {directory} is of kind {meta.get('kind')!r}, expected {kind!r}")
    try:
        config = parse_config(meta["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {directory} has an invalid {kind} config: {err}") from err
    return config, tensors


def load_training_state(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``(optimizer tensors, trainer state)`` written by a training run."""
    directory = Path(directory)
    recover_swap(directory)
    return read_tensors(directory / OPTIMIZER_FILE), read_json(directory / TRAINER_FILE)


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"missing {path.name} in checkpoint {path.parent}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"corrupt JSON in {path}: {err}") from err


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"missing {path.name} in checkpoint {path.parent}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"corrupt safetensors file {path}: {err}") from err


def load_into_module(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load a state dict strictly, turning key or shape mismatches into one clear error."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong_shape = [
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            f"checkpoint {source} does not match the model: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shapes {wrong_shape[:5]}"
        )
    module.load_state_dict(tensors)


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten an optimizer state dict into tensors (safetensors) and JSON-able groups."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{param_id}.{key}"] = value
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: dict[str, Any]
) -> None:
    """Inverse of :func:`optimizer_to_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    for param_id, values in groups["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups["param_groups"]})
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"optimizer state does not match the model: {err}") from err

"""One run pattern for every training loop: directory, settings, counters, checkpoint, tensorboard, time budget.

A loop (tokenizer, video transformer, agent, imagination) is its algorithm and nothing else;
:class:`TrainingRun` keeps the rest the same everywhere:

- the **run directory**: an existing checkpoint needs ``resume=True``; ``settings.json`` records
  the run's settings, and a resume that changes any of them (other than those ``may_change``
  names, e.g. the budgets) is refused, naming them; a setting added to the code after the run
  started counts as unchanged at its default (given as a dataclass, the settings bring their defaults);
- **counters** (``step``, ``elapsed_s`` and whatever the loop adds), restored on resume;
- an **atomic checkpoint** of weights, optimizers, RNG states (torch, CUDA, named numpy
  generators), counters and loop state, plus any extra files (a replay buffer), swapped in
  at once (:func:`worldmodel.checkpoint.atomic_directory`);
- a **tensorboard writer** whose ``purge_step`` drops what a crashed run logged after its last
  checkpoint, so a resumed run's curves have no duplicates;
- a **time budget** (``max_minutes``, counted across resumes) that stops the run and changes
  nothing it computes: schedules follow steps, never the clock, so a budgeted run that is
  resumed repeats an uninterrupted one.

Layout of ``{run}/checkpoint``: ``model.safetensors`` (weights), ``config.json`` (what the weights
are), ``optimizer.safetensors`` (optimizer states ``optimizer.<name>.*``, RNG states ``rng.*`` and
the loop's other tensors) and ``trainer.json`` (counters, optimizer groups, numpy RNG states, loop state).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch.utils.tensorboard import SummaryWriter

from worldmodel.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    TRAINER_FILE,
    CheckpointError,
    atomic_directory,
    load_checkpoint,
    load_training_state,
    optimizer_from_tensors,
    optimizer_to_tensors,
    read_json,
    recover_swap,
    write_json_atomic,
)
from worldmodel.schedule import BudgetProgress, budget_spent

CHECKPOINT_DIR = "checkpoint"
SETTINGS_FILE = "settings.json"
TENSORBOARD_DIR = "tb"
_TORCH_RNG = "rng.torch"
_CUDA_RNG = "rng.cuda."
_OPTIMIZER = "optimizer."
# Settings a resumed run may change: its budgets and how often it logs, evaluates and checkpoints,
# none of which changes what it computes.
RUN_CADENCE = ("steps", "max_minutes", "log_every", "eval_every", "checkpoint_every")
RUN_FORMAT = 1  # trainer.json's layout; checkpoints of other layouts cannot resume
clock = time.monotonic  # what time budgets are measured by (a test may replace it)
MAX_MINUTES_HELP = (
    "stop (and checkpoint) after this many minutes, counted across resumes; it changes nothing the run computes "
    "(schedules follow the step counts, so set those to about what the minutes allow)"
)


@dataclass
class Restored:
    """What a checkpoint holds beyond what :meth:`TrainingRun.restore` put back itself."""

    weights: dict[str, torch.Tensor]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # the loop's own training tensors
    state: dict[str, Any] = field(default_factory=dict)  # the loop's own JSON state


def _jsonable(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists), so saved and current settings compare."""
    return json.loads(json.dumps(value))


class TrainingRun:
    """The directory, counters, checkpoint, tensorboard writer and time budget of one training run.

    Call :meth:`restore` once (it does nothing on a fresh run) before reading the counters,
    then :meth:`tick` after every step and :meth:`save` at each checkpoint. Only the main
    process of a data-parallel run writes (``main_process``); every process restores.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        resume: bool,
        settings: Any = None,
        may_change: Iterable[str] = (),
        max_minutes: float | None = None,
        counters: Mapping[str, Any] | None = None,
        log_axis: str = "step",
        main_process: bool = True,
    ) -> None:
        self.dir = Path(directory)
        self.checkpoint_dir = self.dir / CHECKPOINT_DIR
        recover_swap(self.checkpoint_dir)
        if self.checkpoint_dir.exists() and not resume:
            raise FileExistsError(f"{self.checkpoint_dir} exists: pass resume=True (--resume) or choose another run dir")
        self.resumed = self.checkpoint_dir.exists()
        self.max_minutes = max_minutes
        self.counters: dict[str, Any] = {"step": 0, "elapsed_s": 0.0, **(counters or {})}
        self.log_axis = log_axis
        self.main_process = main_process
        self._writer: SummaryWriter | None = None
        self._clock_start, self._elapsed_before = clock(), 0.0
        if settings is not None and main_process:
            defaults = _jsonable(asdict(type(settings)())) if is_dataclass(settings) else {}
            values = asdict(settings) if is_dataclass(settings) else dict(settings)
            self._record_settings(values, set(may_change), check=resume, defaults=defaults)

    def _record_settings(
        self, settings: dict[str, Any], may_change: set[str], check: bool, defaults: Mapping[str, Any]
    ) -> None:
        path = self.dir / SETTINGS_FILE
        settings = _jsonable(settings)
        if check and path.is_file():
            before = read_json(path)
            before = {**defaults, **before}  # a setting added since the run started was at its default
            changed = sorted(k for k in settings.keys() | before.keys()
                             if k not in may_change and before.get(k) != settings.get(k))
            if changed:
                details = "; ".join(f"{k}: {before.get(k)!r} then, {settings.get(k)!r} now" for k in changed)
                allowed = f"only {', '.join(sorted(may_change))} may change on resume" if may_change else \
                    "no setting may change on resume"
                raise ValueError(f"{self.dir} was started with other settings ({details}); {allowed}")
        write_json_atomic(path, settings)

    # -- checkpoint ---------------------------------------------------------------------------------

    def restore(
        self,
        expected: Mapping[str, tuple[str, Any]] | None = None,
        optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
        generators: Mapping[str, np.random.Generator] | None = None,
        complete: Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]] | None = None,
    ) -> Restored | None:
        """Put back counters, optimizer and RNG states of a resumed run; its weights and the rest for the loop.

        ``expected`` maps config keys to ``(description, value)``: a checkpoint whose config says
        otherwise (another architecture, another tokenizer) is refused, naming both. None on a fresh run.
        ``complete`` maps some of those keys (dict-valued configs) to a function that fills in the fields
        a saved value predates at their defaults (e.g. ``Config.from_dict(d).to_dict()``), so a run
        resumes across a release that added an option; such a refusal names each field that differs.
        """
        if not self.resumed:
            return None
        weights, config = load_checkpoint(self.checkpoint_dir)
        for key, (description, value) in (expected or {}).items():
            saved, wanted = config.get(key), _jsonable(value)
            if key in (complete or {}) and isinstance(saved, dict):
                saved = _jsonable(complete[key](saved))
                changed = [f"{name} {saved.get(name)} (now {wanted[name]})"
                           for name in wanted if saved.get(name) != wanted[name]]
                if changed:
                    raise CheckpointError(
                        f"{self.checkpoint_dir} was trained with another {description}: {', '.join(changed)}"
                    )
            elif saved != wanted:
                raise CheckpointError(
                    f"{self.checkpoint_dir} was trained with {description} {saved}, but this run asks for {value}"
                )
        tensors, trainer = load_training_state(self.checkpoint_dir)
        if trainer.get("run_format") != RUN_FORMAT:
            raise CheckpointError(
                f"{self.checkpoint_dir} was written by another version of the toolkit (run format "
                f"{trainer.get('run_format')}, expected {RUN_FORMAT}); its weights load, but the run cannot resume: "
                "start a new run directory"
            )
        torch.set_rng_state(tensors.pop(_TORCH_RNG))
        cuda_states = [tensors.pop(name) for name in sorted(k for k in list(tensors) if k.startswith(_CUDA_RNG))]
        if cuda_states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_states)
        for name, optimizer in (optimizers or {}).items():
            prefix = f"{_OPTIMIZER}{name}."
            own = {k.removeprefix(prefix): tensors.pop(k) for k in list(tensors) if k.startswith(prefix)}
            if name not in trainer["optimizers"]:
                raise CheckpointError(f"{self.checkpoint_dir} holds no state of optimizer {name!r}")
            optimizer_from_tensors(optimizer, own, trainer["optimizers"][name])
        for name, generator in (generators or {}).items():
            generator.bit_generator.state = trainer["numpy_rng"][name]
        self.counters.update(trainer["counters"])
        self._clock_start, self._elapsed_before = clock(), float(self.counters["elapsed_s"])
        return Restored(weights, tensors, trainer.get("state", {}))

    def save(
        self,
        weights: Mapping[str, torch.Tensor],
        config: Mapping[str, Any],
        *,
        optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
        generators: Mapping[str, np.random.Generator] | None = None,
        tensors: Mapping[str, torch.Tensor] | None = None,
        state: Mapping[str, Any] | None = None,
        extra_files: Callable[[Path], None] | None = None,
    ) -> None:
        """Write the checkpoint atomically: weights and config, optimizers, RNG states, counters, the loop's
        own ``tensors`` and JSON ``state``, and whatever ``extra_files(directory)`` writes beside them."""
        if not self.main_process:
            return
        training_tensors = dict(tensors or {})
        groups = {}
        for name, optimizer in (optimizers or {}).items():
            flat, groups[name] = optimizer_to_tensors(optimizer)
            training_tensors.update({f"{_OPTIMIZER}{name}.{k}": v for k, v in flat.items()})
        training_tensors[_TORCH_RNG] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for index, rng_state in enumerate(torch.cuda.get_rng_state_all()):
                training_tensors[f"{_CUDA_RNG}{index}"] = rng_state
        trainer = {
            "run_format": RUN_FORMAT,
            "counters": self.counters,
            "optimizers": groups,
            "numpy_rng": {name: g.bit_generator.state for name, g in (generators or {}).items()},
            "state": dict(state or {}),
        }
        with atomic_directory(self.checkpoint_dir) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, tmp / MODEL_FILE)
            save_file({k: v.detach().contiguous().cpu() for k, v in training_tensors.items()}, tmp / OPTIMIZER_FILE)
            (tmp / CONFIG_FILE).write_text(json.dumps(dict(config), indent=2, sort_keys=True))
            (tmp / TRAINER_FILE).write_text(json.dumps(trainer, indent=2, sort_keys=True))
            if extra_files is not None:
                extra_files(tmp)

    # -- time budget ----------------------------------------------------------------------------------

    def tick(self) -> bool:
        """Update ``elapsed_s`` (counted across resumes); whether the time budget is spent."""
        self.counters["elapsed_s"] = self._elapsed_before + clock() - self._clock_start
        return self.out_of_time

    @property
    def out_of_time(self) -> bool:
        """Whether ``max_minutes`` is used up (by the ``elapsed_s`` counter: a finished run resumes to no steps)."""
        return budget_spent(self.counters["elapsed_s"], self.max_minutes)

    def progress_bar(self, total: int, desc: str) -> BudgetProgress:
        """A progress bar over ``step`` up to ``total``, whose total follows the time budget."""
        return BudgetProgress(total, self.counters["step"], self.counters["elapsed_s"], self.max_minutes,
                              desc=desc, disable=not self.main_process)

    # -- logs -------------------------------------------------------------------------------------------

    @property
    def writer(self) -> SummaryWriter | None:
        """The run's tensorboard writer (main process only), purging what was logged past the checkpoint."""
        if self._writer is None and self.main_process:
            purge = int(self.counters[self.log_axis]) + 1 if self.resumed else None  # the checkpoint's own logs stay
            self._writer = SummaryWriter(self.dir / TENSORBOARD_DIR, purge_step=purge)
        return self._writer

    def write_json(self, name: str, data: Any) -> None:
        """A summary file in the run directory, written atomically (main process only)."""
        if self.main_process:
            write_json_atomic(self.dir / name, data)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

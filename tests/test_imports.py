"""Every module of the package imports: a missing dependency fails here, one clear test per module,
instead of as a collection error of some other test file."""

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("worldmodel", "envs", "agents", "experiments")


def _modules() -> list[str]:
    """Dotted names of every .py file under the package folders (read from disk, nothing imported), but
    ``__main__`` modules, which run their program when imported."""
    return sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path.stem != "__main__"
    )


def test_the_package_folders_hold_modules():
    assert {"worldmodel.transformer", "envs.viper", "agents.drq", "experiments.cli"} <= set(_modules())


@pytest.mark.parametrize("module", _modules())
def test_module_imports(module):
    importlib.import_module(module)

"""The package as a user installs it: a wheel built from a copy of the source, installed without ``-e`` and used
from outside the source tree, so that a module left out of the wheel fails here (``pip install -e .`` hides it:
petir.tasks was once missing from every wheel); and one console script per CLI."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import petir
from conftest import REPO, cli_modules
from petir.console import module_name, script_name

#: What a wheel is built from (the rest of the checkout, tests and docs, is not shipped).
SOURCES = ("petir", "integrations", "setup.py", "setup.cfg", "README.md")
#: Offline and leaving no trace: no index, no build isolation (it would download setuptools), no pip cache.
PIP = (sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-cache-dir")


def test_every_cli_has_its_console_script():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    scripts = dict(line.replace(" ", "").split("=") for line in lines)
    assert scripts == {script_name(module): "petir.console:console_script" for module in cli_modules()}
    assert all(module_name(script_name(module)) == module for module in cli_modules())
    assert module_name("/venv/bin/petir-train") == module_name("petir-train.exe") == "petir.train"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, the directory it is installed in with ``pip install --target``), built from a copy of the
    source so that the build writes nothing into the checkout."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(REPO / name, source / name)
    pip = [*PIP, "--no-input"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(root / "dist"), str(source)],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = (root / "dist").glob("petir-*.whl")
    site = root / "site"
    done = subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return wheel, site


def source_modules() -> set[str]:
    """The source tree's modules as a wheel names them: ``petir/tasks/base.py``..."""
    return {path.relative_to(REPO).as_posix() for path in (REPO / "petir").rglob("*.py")}


def run_installed(site: Path, *command: str) -> subprocess.CompletedProcess:
    """``command`` with the installed copy first on the path, run from a directory outside the source tree."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(command, capture_output=True, text=True, cwd=site.parent, env=env, timeout=300)


@pytest.mark.slow  # builds and installs a wheel, then fresh interpreters importing torch: ~30 s on 2 cores
def test_the_wheel_holds_every_module_and_the_pyserini_hook(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    assert source_modules() - names == set(), "modules of the source tree missing from the wheel"
    assert "petir_pyserini.pth" in names and "petir_pyserini/__init__.py" in names
    assert any(name.endswith("entry_points.txt") for name in names)


@pytest.mark.slow
def test_the_installed_wheel_imports_every_module_and_runs_its_clis(installed):
    _, site = installed
    walk = (
        "import importlib, pkgutil, petir\n"
        "for info in pkgutil.walk_packages(petir.__path__, 'petir.'):\n"
        "    print(importlib.import_module(info.name).__file__)\n"
    )
    imported = run_installed(site, sys.executable, "-c", walk)
    assert imported.returncode == 0, imported.stderr[-3000:]
    files = [Path(file) for file in imported.stdout.split()]
    assert all(file.is_relative_to(site) for file in files), "imported from outside the installed wheel"
    assert {file.relative_to(site).as_posix() for file in files} | {"petir/__init__.py"} == source_modules()

    helped = run_installed(site, sys.executable, "-m", "petir.train", "--help")
    assert helped.returncode == 0 and "usage: python -m petir.train" in helped.stdout, helped.stderr[-3000:]

    version = run_installed(site, str(site / "bin" / "petir-train"), "--version")
    assert version.returncode == 0 and version.stdout == f"petir {petir.__version__}\n", version.stderr[-3000:]

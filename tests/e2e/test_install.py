"""`twistd pbx` after each ordinary way of installing the project, each in a fresh venv.

Twisted finds `twistd` subcommands only in `twisted/plugins/` directories on `sys.path`; a setuptools
editable install that used an import hook instead of a path would install fine and then answer
`twistd: Unknown command: pbx`. Each venv gets the project's dependencies from this test run's own
site-packages (a `.pth` line), and the builds get setuptools from one download, so only that download
reaches a package index.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.e2e.harness import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.install, pytest.mark.timeout(300)]

TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
SOUNDS = "from pbx.service.calls import SOUNDS_DIR; print(SOUNDS_DIR)"  # the prompts the PBX will play
WHERE = "import pbx, twisted.plugins.pbx_plugin as p; print(pbx.__file__); print(p.__file__)"


def run(args: list[str], cwd: Path, timeout: float = 180.0) -> str:
    """Run a command outside the checkout (so `''` on sys.path is not the repository); its output."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dependencies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with pbx's dependencies and no pbx plugin: this venv's site-packages, unless pbx was
    installed there from a wheel (its plugin file would answer for the fresh venvs), then a pip --target."""
    spec = importlib.util.find_spec("twisted")
    assert spec is not None and spec.origin is not None
    site = Path(spec.origin).resolve().parents[1]
    if not (site / "twisted" / "plugins" / "pbx_plugin.py").exists():
        return site
    target = tmp_path_factory.mktemp("deps")
    wanted = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    run([sys.executable, "-m", "pip", "install", "-q", "--target", str(target), *wanted], target)
    return target


@pytest.fixture(scope="module")
def build_requirements(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of the build backend (pyproject.toml's build-system.requires), fetched once for every build."""
    wheels = tmp_path_factory.mktemp("build-wheels")
    wanted = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    run(
        [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(wheels), *wanted],
        wheels,
    )
    return wheels


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A copy of what a build reads (so builds leave no build/ or egg-info in the checkout)."""
    copy = tmp_path / "src"
    copy.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, copy / name)
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "dropin.cache")
    for name in ("pbx", "twisted", "sounds"):
        shutil.copytree(REPO / name, copy / name, ignore=junk)
    return copy


def fresh_venv(path: Path, dependencies: Path) -> Path:
    """A new venv that sees `dependencies`; its python. Without a pip of its own (installing one costs
    seconds): this run's pip installs into it with `--python`."""
    run([sys.executable, "-m", "venv", "--without-pip", str(path)], path.parent)
    python = path / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], path)
    (Path(purelib.strip()) / "_pbx_test_dependencies.pth").write_text(f"{dependencies}\n")
    return python


def plugin_listed(python: Path, cwd: Path) -> bool:
    return re.search(r"(?m)^\s+pbx\s", run([str(python), "-c", TWISTD, "--help"], cwd)) is not None


@pytest.mark.parametrize("how", ["pip install .", "pip install -e .", "pip wheel . && pip install WHEEL"])
def test_twistd_finds_the_plugin(
    how: str, source: Path, dependencies: Path, build_requirements: Path, tmp_path: Path
) -> None:
    """After each ordinary install, `twistd --help` lists pbx, and `twistd pbx --help` loads the PBX from
    where that install put it (site-packages, or the source tree for the editable install)."""
    python = fresh_venv(tmp_path / "venv", dependencies)
    offline = ["-q", "--no-index", "--find-links", str(build_requirements)]
    pip_wheel = [sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel", *offline]
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check", "install"]
    pip += offline
    assert not plugin_listed(python, tmp_path), "the fresh venv found a pbx plugin before the install"
    if how == "pip install .":
        run([*pip, str(source)], tmp_path)
    elif how == "pip install -e .":
        run([*pip, "-e", str(source)], tmp_path)
    else:
        wheels = tmp_path / "wheels"
        run([*pip_wheel, "--no-deps", "-w", str(wheels), str(source)], tmp_path)
        (wheel,) = wheels.glob("pbx-*.whl")
        run([*pip, str(wheel)], tmp_path)
    assert plugin_listed(python, tmp_path), f"twistd --help does not list pbx after {how}"
    assert "--sip-trace" in run([str(python), "-c", TWISTD, "pbx", "--help"], tmp_path)
    package, plugin = (Path(line) for line in run([str(python), "-c", WHERE], tmp_path).split())
    home = source if how == "pip install -e ." else tmp_path / "venv"
    assert package.is_relative_to(home), package
    assert plugin.is_relative_to(home), plugin
    sounds = Path(run([str(python), "-c", SOUNDS], tmp_path).strip())
    assert (sounds / "welcome.wav").is_file() and sounds.is_relative_to(home), (
        f"no prompts after {how}: {sounds}"
    )

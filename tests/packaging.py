"""Build the distribution and install it the way a host project would, for the packaging and host-app tests.

The wheel is built once per test session (``pip wheel --no-deps``, with build isolation, exactly what an index
would serve). A host venv gets the wheel installed with ``--no-index --no-deps`` plus, through a ``.pth`` file,
the already-installed dependencies of this test environment (the machine has no internet): the host then imports
the INSTALLED ``pipeline`` and ``rubot_app``, never this checkout (which is not on its path).
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_wheel(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dest), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = dest.glob("rubot-*.whl")
    return wheel


def site_packages(venv: Path) -> Path:
    [path] = (venv / "lib").glob("python3*/site-packages")
    return path


def make_venv(venv: Path, *, dependencies: bool) -> Path:
    """An empty venv (no pip, no packages); with ``dependencies`` it also sees this environment's packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    if dependencies:
        # A plain path in a .pth: the dependencies are importable, but .pth files there (this checkout's editable
        # install) are not processed, so this checkout's pipeline is not.
        (site_packages(venv) / "_rubot_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin" / "python"


def install_wheel(python: Path, wheel: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )

"""What installing the distribution puts on a host's import path, checked on the built wheel in fresh venvs."""

from __future__ import annotations

import configparser
import re
import subprocess
import zipfile
from pathlib import Path

from tests import packaging
from tests.stacks import ROOT

# Where each repository folder goes in the wheel (setup.cfg's package_dir).
DEPLOYMENT = ("agents", "config", "scripts", "tasks", "tools")
MAPPED = {"pipeline": "pipeline", **{name: f"rubot_app/{name}" for name in DEPLOYMENT}}


def readme_installed_names() -> set[str]:
    """The names listed between the README's ``<!-- installed-names -->`` markers."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- installed-names -->", 1)[1].split("<!-- /installed-names -->", 1)[0]
    return set(re.findall(r"^- `([^`]+)`", block, flags=re.M))


def test_installing_the_wheel_into_an_empty_venv_adds_exactly_the_names_the_readme_lists(wheel, tmp_path):
    # Given an empty venv
    python = packaging.make_venv(tmp_path / "empty", dependencies=False)
    site = packaging.site_packages(tmp_path / "empty")
    before = {p.name for p in site.iterdir()}

    # When the built wheel is installed into it
    packaging.install_wheel(python, wheel)

    # Then the new importable top-level names are exactly the README's list, and none is a generic name
    added = {p.name for p in site.iterdir()} - before
    importable = {name for name in added if not name.endswith(".dist-info")}
    assert importable == readme_installed_names() - {"rubot (command)"}
    assert not importable & {"config", "tasks", "tools", "agents", "scripts"}
    assert (tmp_path / "empty" / "bin" / "rubot").exists() == ("rubot (command)" in readme_installed_names())


def test_every_source_and_data_file_of_the_repository_layout_is_in_the_wheel(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for folder, target in MAPPED.items():
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in {".py", ".html", ".json", ".mako"}:
                expected.add(f"{target}/{path.relative_to(ROOT / folder).as_posix()}")
    assert expected - names == set()


def test_setup_cfg_lists_every_package():
    # setup.cfg names packages one by one (package_dir mappings cannot be found automatically): none is forgotten
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config.get("options", "packages").split())
    found = set()
    for folder, target in MAPPED.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join([*target.split("/"), *relative]))
    assert found == listed


def test_the_installed_distribution_runs_the_demo_and_not_this_checkout(host_python, tmp_path):
    # Given the wheel installed in a fresh venv, run from a folder where this checkout is not importable
    where = subprocess.run(
        [str(host_python), "-c", "import pipeline, rubot_app.tools.sites as s; print(pipeline.__file__, s.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(ROOT) not in where and "site-packages" in where

    # When its `rubot demo` runs
    rubot = Path(host_python).parent / "rubot"
    result = subprocess.run(
        [str(rubot), "demo", "--home", str(tmp_path / "demo")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Then both scenarios of the reference app pass, with the data files that ship in the wheel
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 of 2 scenarios ended as expected" in result.stdout

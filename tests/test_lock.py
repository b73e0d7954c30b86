"""requirements.lock pins every package of the environment: the direct pins of pyproject.toml, and
the installed environment is exactly the lock (a fresh `make` gives it)."""

import re
import sys
import tomllib
from importlib import metadata

import pytest

from support.tools import REPO

LOCK = REPO / "requirements.lock"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lines: list[str]) -> dict[str, str]:
    """{name: version} of the `name[extras]==version` requirements among `lines`."""
    found = {}
    for line in lines:
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)", line.strip())
        if match:
            found[canonical(match.group(1))] = match.group(3)
    return found


def locked() -> dict[str, str]:
    return pins(LOCK.read_text().splitlines())


def test_the_lock_holds_pyprojects_direct_pins_and_hashes_for_every_package():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    direct = pins(project["dependencies"] + project["optional-dependencies"]["dev"])
    assert {name: locked().get(name) for name in direct} == direct, "run `make lock`"
    requirements = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text().split("\n#\n", 1)[1])
    assert all("--hash=sha256:" in block for block in requirements if "==" in block)


@pytest.mark.slow
@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="not in a virtual environment built by `make`")
def test_the_environment_is_exactly_the_lock():
    installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    installed.pop("mnist-pipeline")  # the project itself, installed from the checkout
    assert installed == locked()

"""A command's start: Python's collector is off while `python -m mnist_pipeline...` imports its modules and
on again, with what the imports made frozen, once the command's work begins; importing the package as a
library leaves the collector as it was."""

import gc
import importlib
import sys

import pytest

import mnist_pipeline
from mnist_pipeline import cli


@pytest.fixture
def collector():
    """The collector on and nothing frozen afterwards, whatever the test did to them."""
    yield
    gc.enable()
    gc.unfreeze()


def test_a_command_imports_with_the_collector_off_and_works_with_it_on(monkeypatch, collector):
    monkeypatch.setattr(sys, "argv", ["-m"])  # as Python sets it while it finds the module of `python -m`
    importlib.reload(mnist_pipeline)
    assert not gc.isenabled()
    seen = []
    assert cli.run(lambda: seen.append((gc.isenabled(), gc.get_freeze_count()))) == 0
    [(enabled, frozen)] = seen
    assert enabled and frozen > 0


def test_importing_the_package_leaves_the_collector_on(monkeypatch, collector):
    monkeypatch.setattr(sys, "argv", ["/usr/bin/pytest"])
    importlib.reload(mnist_pipeline)
    assert gc.isenabled()
    seen = []
    cli.run(lambda: seen.append(gc.get_freeze_count()))
    assert seen == [0]

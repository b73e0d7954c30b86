"""The test suite's two tiers: a test without the `slow` mark runs in-process only, and fails if it
starts a program or a process (mark it slow, where it is defined or through its fixture)."""

import multiprocessing.process
import os
import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import pytest

# Quick tools that read the repository, not the package, a server or a browser: git (the tracking
# code asks it for the commit) and actionlint (the workflow's linter).
ALLOWED = {"git", "actionlint"}


class NotInProcess(AssertionError):
    """A test of the unmarked tier started a program or a process."""


@contextmanager
def in_process_only() -> Iterator[None]:
    popen, start = subprocess.Popen.__init__, multiprocessing.process.BaseProcess.start

    def refuse_program(self: subprocess.Popen, args: Any, *more: Any, **options: Any) -> None:
        program = os.path.basename(str(args if isinstance(args, str | bytes | os.PathLike) else args[0]))
        if program in ALLOWED:
            popen(self, args, *more, **options)
            return
        raise NotInProcess(f"this test runs {program}: mark it slow (the unmarked tier runs in-process only)")

    def refuse_process(self: multiprocessing.process.BaseProcess) -> None:
        raise NotInProcess("this test starts a process: mark it slow (the unmarked tier runs in-process only)")

    subprocess.Popen.__init__ = refuse_program  # type: ignore[method-assign]
    multiprocessing.process.BaseProcess.start = refuse_process  # type: ignore[method-assign]
    try:
        yield
    finally:
        subprocess.Popen.__init__ = popen  # type: ignore[method-assign]
        multiprocessing.process.BaseProcess.start = start  # type: ignore[method-assign]


def _tier(item: pytest.Item) -> AbstractContextManager[None]:
    """What a test's setup and body run under: nothing for a slow test, in_process_only() for the rest."""
    return nullcontext() if item.get_closest_marker("slow") else in_process_only()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _tier(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _tier(item):
        yield

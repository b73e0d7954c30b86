"""Run a module as `python -m` does, with functions wrapped to act at their Nth call: send this process a
signal (before the call goes through, or after it returned), or wait. A fault that lands exactly there,
every time, where a signal sent from outside would land wherever the process happened to be.

    python tests/support/at_call.py [MODULE:QUALNAME N ACTION WHEN]... -- PROGRAM ARGS...

ACTION: SIGINT, SIGTERM, sleep:SECONDS or meet:FOLDER:COUNT (wait until COUNT processes have come
there: several processes go on at one instant); WHEN: before or after; PROGRAM: the module to run.
"""

import functools
import importlib
import os
import runpy
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


def command(program: str, *wraps: tuple[str, int, str, str]) -> tuple[str, ...]:
    """The interpreter's arguments that run the module `program` with `wraps` (each a MODULE:QUALNAME, N,
    ACTION, WHEN); the program's own arguments follow."""
    return (str(HERE), *(str(part) for wrap in wraps for part in wrap), "--", program)


def _act(action: str) -> None:
    kind, _, value = action.partition(":")
    if kind == "sleep":
        time.sleep(float(value))
    elif kind == "meet":
        folder, _, count = value.rpartition(":")
        _meet(Path(folder), int(count))
    else:
        os.kill(os.getpid(), signal.Signals[action])


def _meet(folder: Path, count: int, patience_s: float = 300) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(os.getpid())).touch()
    given_up = time.monotonic() + patience_s
    while len(list(folder.iterdir())) < count:
        if time.monotonic() > given_up:
            sys.exit(f"at_call: {count} processes did not meet in {folder} within {patience_s:.0f} s")
        time.sleep(0.005)


def _wrap(target: str, n: int, action: str, when: str) -> None:
    where, _, qualname = target.partition(":")
    *path, name = qualname.split(".")
    owner: Any = importlib.import_module(where)
    for part in path:
        owner = getattr(owner, part)
    original: Callable = getattr(owner, name)
    calls = 0

    @functools.wraps(original)
    def wrapped(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == n and when == "before":
            _act(action)
        result = original(*args, **kwargs)
        if calls == n and when == "after":
            _act(action)
        return result

    setattr(owner, name, wrapped)


def main() -> None:
    split = sys.argv.index("--")
    specs, (program, *args) = sys.argv[1:split], sys.argv[split + 1 :]
    for i in range(0, len(specs), 4):
        target, n, action, when = specs[i : i + 4]
        _wrap(target, int(n), action, when)
    sys.argv = [program, *args]
    runpy.run_module(program, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    sys.path.pop(0)  # this folder: the tests' helpers are no modules of the program
    main()

"""The frame of every command: `error: ...` for a PipelineError, its exit code, and 130 on Ctrl-C or SIGTERM,
taken only where it is safe; a child process that stops with us."""

import contextlib
import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TypeVar

from mnist_pipeline.errors import PipelineError, redacted

INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C
T = TypeVar("T")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as a kind of KeyboardInterrupt: open runs are closed, temporary files removed, and
    Optuna fails the trial in progress as it does on Ctrl-C (other BaseExceptions leave it RUNNING)."""


class _Signals:
    holding = 0  # depth of held() blocks
    pending: int | None = None  # a signal received while held, not yet taken


def run(work: Callable[[], int | None], interrupted: str = "") -> int:
    """`work()`'s exit code (None: 0). A PipelineError prints its message alone, without a traceback, and
    gives its exit_code (1; 3 for a PeerFailure); Ctrl-C and SIGTERM print one line, ending with
    `interrupted` if given, and give 130. A password in any URL of an error line is masked."""
    if not gc.isenabled():  # off while a `python -m` command imported its modules (__init__.py)
        gc.freeze()
        gc.enable()
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:  # a background job's Ctrl-C stays ignored
            signal.signal(signum, _on_signal)
    try:
        return work() or 0
    except PipelineError as exc:
        print(f"error: {redacted(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Terminated too
        print(f"interrupted ({type(exc).__name__})" + (f"; {interrupted}" if interrupted else ""), file=sys.stderr)
        return INTERRUPTED
    finally:
        _Signals.pending = None
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait while the block runs (calls into Optuna and MLflow, which an exception
    raised in their midst would leave half done), and are raised when it ends, or at a checkpoint()
    or released() inside it. A second signal while one waits is raised at once: the user insists."""
    _Signals.holding += 1
    try:
        yield
    finally:
        _Signals.holding -= 1
    if not _Signals.holding:
        checkpoint()


@contextlib.contextmanager
def released() -> Iterator[None]:
    """Inside held(): plain computation, where Ctrl-C and SIGTERM are raised at once (a waiting one first)."""
    holding, _Signals.holding = _Signals.holding, 0
    try:
        checkpoint()
        yield
    finally:
        _Signals.holding = holding


def interruptible(items: Iterator[T]) -> Iterator[T]:
    """`items`, each one computed inside released(): a training's epochs stop at once, between them the calls wait."""
    while True:
        with released():
            try:
                item = next(items)
            except StopIteration:
                return
        yield item


def checkpoint() -> None:
    """Raise the signal that waits, if one does: a safe point, between trials or epochs."""
    signum = take()
    if signum is not None:
        raise interruption(signum)


def take() -> int | None:
    """The signal that waits, now taken (a second one is held again), or None."""
    signum, _Signals.pending = _Signals.pending, None
    return signum


def interruption(signum: int) -> KeyboardInterrupt:
    return Terminated(f"signal {signum}") if signum == signal.SIGTERM else KeyboardInterrupt()


def call(command: list[str], stop: int = signal.SIGTERM, grace_s: float = 10.0, **options) -> int:
    """Run `command` in a process group of its own and wait for it. On Ctrl-C or SIGTERM here the whole
    group gets `stop`, then SIGKILL if anything is left after `grace_s` (or at a second signal), and the
    interruption is raised: nothing it started outlives us, holding a port or a file."""
    child = subprocess.Popen(command, process_group=0, **options)
    try:
        return child.wait()
    except KeyboardInterrupt:
        _stop_group(child, stop, grace_s)
        raise


def _stop_group(child: subprocess.Popen, stop: int, grace_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, stop)
    deadline = time.monotonic() + grace_s
    try:
        while _group_alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:  # a second Ctrl-C while the group stops: at once
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def _group_alive(child: subprocess.Popen) -> bool:
    """Is any process of the child's group alive? (Zombies aside: one that has exited is gone for good.)"""
    child.poll()  # the leader reaped once it has exited
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if int(group) == child.pid and state != "Z":
                return True
    return False


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _Signals.holding and _Signals.pending is None:
        _Signals.pending = signum
        return
    _Signals.pending = None
    raise interruption(signum)

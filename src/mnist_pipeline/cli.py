"""The frame of every command: `error: ...` for a PipelineError, its exit code, and 130 on Ctrl-C or SIGTERM."""

import signal
import sys
from collections.abc import Callable
from types import FrameType

from mnist_pipeline.errors import PipelineError

INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as a kind of KeyboardInterrupt: open runs are closed, temporary files removed, and
    Optuna fails the trial in progress as it does on Ctrl-C (other BaseExceptions leave it RUNNING)."""


def run(work: Callable[[], int | None], interrupted: str = "") -> int:
    """`work()`'s exit code (None: 0). A PipelineError prints its message alone, without a traceback, and
    gives its exit_code (1; 3 for a PeerFailure); Ctrl-C and SIGTERM print one line, ending with
    `interrupted` if given, and give 130."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return work() or 0
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Terminated too
        print(f"interrupted ({type(exc).__name__})" + (f"; {interrupted}" if interrupted else ""), file=sys.stderr)
        return INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"signal {signum}")

"""Entry points of the DVC stages: each parses the paths dvc.yaml gives it and calls into the package."""

import signal
import sys
from collections.abc import Callable
from typing import Any

from mnist_pipeline.errors import PipelineError


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so open runs are closed and temporary files removed."""


def run_stage(work: Callable[[], None]) -> int:
    """Run a stage's work; a PipelineError prints its message alone and exits 1."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        work()
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated) as exc:
        print(f"interrupted ({type(exc).__name__}); outputs of this stage were not written", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(f"signal {signum}")

"""Entry points of the DVC stages: each parses the paths dvc.yaml gives it and calls into the package."""

import argparse
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from mnist_pipeline.errors import PipelineError


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so open runs are closed and temporary files removed."""


def run_stage(work: Callable[..., None], doc: str, argv: list[str] | None, **options: str) -> int:
    """Parse a required `--name` for each option (value: its help), call `work(name=value, ...)`.

    A PipelineError prints its message alone and exits 1 (3 for a PeerFailure); Ctrl-C and SIGTERM exit 130.
    """
    parser = argparse.ArgumentParser(description=doc)
    for name, help_text in options.items():
        parser.add_argument(f"--{name}", required=True, help=help_text)
    args = vars(parser.parse_args(argv))
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        work(**args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, Terminated) as exc:
        print(f"interrupted ({type(exc).__name__}); outputs of this stage were not written", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(f"signal {signum}")


def exit_now(code: int) -> NoReturn:
    """End a stage's process as soon as its work is done: every output is written and closed by
    then, and Python's teardown of torch and MLflow (native destructors) took 2 s more here."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

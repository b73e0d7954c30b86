"""Entry points of the DVC stages: each parses the paths dvc.yaml gives it and calls into the package."""

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from mnist_pipeline import cli


def run_stage(work: Callable[..., None], doc: str | None, argv: list[str] | None, **options: str) -> int:
    """Parse a required `--name` for each option (value: its help; `--per-class` for per_class), call
    `work(name=value, ...)` in the command-line frame (cli.run): its exit code."""
    parser = argparse.ArgumentParser(description=doc)
    for name, help_text in options.items():
        parser.add_argument(f"--{name.replace('_', '-')}", required=True, help=help_text)
    args = vars(parser.parse_args(argv))
    return cli.run(lambda: work(**args), interrupted="outputs of this stage were not written")


def exit_now(code: int) -> NoReturn:
    """End a stage's process as soon as its work is done: every output is written and closed by
    then, and Python's teardown of torch and MLflow (native destructors) took 2 s more here."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

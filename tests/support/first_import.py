"""Run a module as `python -m` does, and write to REPORT the MLFLOW_* environment at the moment it first
imports mlflow (which decides then, for the whole process, whether to send telemetry). The program
stops right there (exit status 0): nothing after that moment can change what was decided, and
mlflow is never imported, so watching sends nothing.

    python tests/support/first_import.py REPORT PROGRAM ARGS...
"""

import importlib.abc
import json
import os
import runpy
import sys
from pathlib import Path


class _Watch(importlib.abc.MetaPathFinder):
    def __init__(self, report: Path):
        self.report = report

    def find_spec(self, name, path, target=None):
        if name == "mlflow":
            self.report.write_text(json.dumps({k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}))
            os._exit(0)
        return None  # found by the usual finders


if __name__ == "__main__":
    sys.path.pop(0)  # this folder: the tests' helpers are no modules of the program
    report, program, *args = sys.argv[1:]
    sys.meta_path.insert(0, _Watch(Path(report)))
    sys.argv = [program, *args]
    runpy.run_module(program, run_name="__main__", alter_sys=True)

"""`make ui`: print a direct link to the experiment's runs and their charts, then serve the local store.

python -m mnist_pipeline.ui [--port 5000]
"""

import argparse
import os
import sys
from typing import NoReturn

from mnist_pipeline import cli
from mnist_pipeline.config import load_params
from mnist_pipeline.tracking.env import tracking_uri, ui_link
from mnist_pipeline.tracking.store import find_experiment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("MLFLOW_PORT", "5000")))
    args = parser.parse_args(argv)
    return cli.run(lambda: _serve(args))


def _serve(args: argparse.Namespace) -> NoReturn:
    experiment = load_params(args.params).tracking.experiment
    uri = tracking_uri()
    base = f"http://{args.host}:{args.port}"
    experiment_id = find_experiment(experiment, uri)
    if experiment_id:
        print(f"ui: the runs of {experiment!r} with their charts: {ui_link(base, experiment_id)}")
    else:
        print(f"ui: no experiment {experiment!r} in {uri} yet; `make repro` makes one. Serving {base}")
    sys.stdout.flush()
    # Replaced by MLflow's own server; Ctrl-C stops it.
    command = ["mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    os.execvp(command[0], command)


if __name__ == "__main__":
    raise SystemExit(main())

"""`make serve`: MLflow's scoring server for the tracking store's champion, else for models/model.pt."""

import argparse
import os
import sys
import tempfile
from pathlib import Path

from mnist_pipeline import cli
from mnist_pipeline.serving import inference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    inference.add_model_options(parser)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args(argv)
    return cli.run(lambda: _main(args), interrupted="the scoring server stopped")


def _main(args: argparse.Namespace) -> int:
    chosen = inference.from_options(args)  # loaded once here: a model that cannot load fails now, named
    print(f"serve: model {chosen.about} on http://{args.host}:{args.port}/invocations (Ctrl-C stops)", flush=True)
    with tempfile.TemporaryDirectory(prefix="mnist-serve-") as folder:
        uri = chosen.mlflow_uri or _as_mlflow_model(args.model or inference.CHECKPOINT, Path(folder))
        return _serve(uri, args.host, args.port)


def _as_mlflow_model(checkpoint: str | Path, folder: Path) -> str:
    from mnist_pipeline.tracking.registry import save_model

    save_model(Path(checkpoint), folder / "model")
    return str(folder / "model")


def _serve(uri: str, host: str, port: int) -> int:
    from mnist_pipeline.tracking.env import tracking_uri

    mlflow = Path(sys.executable).with_name("mlflow")
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri()}
    # In a process group of its own, stopped whole (the server and its workers) on Ctrl-C or SIGTERM.
    return cli.call(
        [str(mlflow), "models", "serve", "-m", uri, "--env-manager", "local", "-h", host, "-p", str(port)], env=env
    )


if __name__ == "__main__":
    raise SystemExit(main())

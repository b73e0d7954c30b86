"""`make serve`: MLflow's scoring server for the tracking store's champion, else for models/model.pt."""

import argparse
import os
import sys
import tempfile
from pathlib import Path

from mnist_pipeline import cli
from mnist_pipeline.serving import inference, scoring


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    inference.add_model_options(parser)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument(
        "--workers", type=int, default=len(os.sched_getaffinity(0)), help="server processes (default: one per core)"
    )
    args = parser.parse_args(argv)
    return cli.run(lambda: _main(args), interrupted="the scoring server stopped")


def _main(args: argparse.Namespace) -> int:
    chosen = inference.from_options(args)  # loaded once here: a model that cannot load fails now, named
    print(f"serve: model {chosen.about} on http://{args.host}:{args.port}/invocations (Ctrl-C stops)", flush=True)
    with tempfile.TemporaryDirectory(prefix="mnist-serve-") as folder:
        model = _local_model(chosen.mlflow_uri, args, Path(folder) / "model")
        return _serve(model, args.runtime, args.host, args.port, args.workers)


def _local_model(uri: str | None, args: argparse.Namespace, folder: Path) -> str:
    """The model as an MLflow model in `folder`: the checkpoint saved as one, or the logged one fetched
    once, so that every worker serves the same version even if the alias moves meanwhile."""
    if uri is None:
        from mnist_pipeline.tracking.registry import save_model

        checkpoint = Path(args.model or inference.CHECKPOINT)
        save_model(checkpoint, inference.onnx_beside(checkpoint) if args.runtime == "onnx" else None, folder)
        return str(folder)
    from mlflow.artifacts import download_artifacts

    return download_artifacts(uri, dst_path=str(folder))


def _serve(model: str, runtime: str, host: str, port: int, workers: int) -> int:
    """MLflow's scoring app (serving/scoring.py) in uvicorn, as `mlflow models serve` runs it, with
    `workers` processes. No access log: a line per request costs more than the model does. In a process
    group of its own, stopped whole (uvicorn and its workers) on Ctrl-C or SIGTERM."""
    env = {**os.environ, scoring.MODEL: model, scoring.RUNTIME: runtime}
    app = f"{scoring.__name__}:{scoring.create_app.__name__}"
    command = [sys.executable, "-m", "uvicorn", "--factory", app, "--host", host, "--port", str(port)]
    return cli.call([*command, "--workers", str(workers), "--no-access-log"], env=env)


if __name__ == "__main__":
    raise SystemExit(main())

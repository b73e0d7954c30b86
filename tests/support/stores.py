"""An empty MLflow SQLite store, built once per test process and copied where a test's first run would
build its own: building the 60-odd tables takes MLflow 2 s (4 under load), a copy a few milliseconds."""

import contextlib
import functools
import sqlite3
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient


def seed_store(folder: Path) -> Path:
    """folder/mlflow.db: a store with no experiment yet, as MLflow makes one (it adds Default on opening)."""
    path = folder / "mlflow.db"
    path.write_bytes(_empty_store())
    return path


@functools.cache
def _empty_store() -> bytes:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "mlflow.db"
        MlflowClient(f"sqlite:///{path}").search_experiments()  # builds every table, at MLflow's latest schema
        # Default's artifact location is the folder MLflow was opened in: each copy makes its own.
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("DELETE FROM experiments")
        return path.read_bytes()

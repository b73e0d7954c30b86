"""Where the tracking store is, how MLflow is set up to reach it, and whether a server answers; no mlflow, no torch."""

import os
import subprocess

from mnist_pipeline.files import project_root

# A tracking server that is down should fail a stage in seconds, not after minutes of MLflow's own
# retries (patience.py retries where waiting makes sense), and nothing is sent anywhere but the
# tracking store. Set before mlflow is imported: it decides on telemetry then.
MLFLOW_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # the stages print one line per epoch
    # System metrics every second: a default run trains for under a minute, MLflow's default is 10 s.
    "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1",
    # Off: while logging a model MLflow patches os.environ process-wide to record the variables read,
    # and iterates that record while other threads (system metrics) add to it: the train stage failed
    # with "RuntimeError: Set changed size during iteration" in log_model on a loaded machine.
    "MLFLOW_RECORD_ENV_VARS_IN_MODEL_LOGGING": "false",
}


def configure() -> None:
    """Apply MLFLOW_SETTINGS where the user set nothing else; call it before importing mlflow."""
    for name, value in MLFLOW_SETTINGS.items():
        os.environ.setdefault(name, value)


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else the SQLite store mlflow.db at the project root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def ui_link(base_url: str, experiment_id: str) -> str:
    """The experiment's runs with their charts. MLflow 3.17's UI picks its view from `workflowType`
    in the URL (then the browser's saved choice, else GenAI); it ignores the experiment's tags."""
    return (
        f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&compareRunsMode=CHART"
    )


def git_commit() -> str:
    """The commit this code runs from, or "unknown"."""
    # DVC names the commit an experiment started from; its temporary copy has its own HEAD.
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        return os.environ["DVC_EXP_BASELINE_REV"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True)
    except OSError:  # no git on this machine
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"

"""A team MLflow tracking server: PostgreSQL + `mlflow server` with basic-auth and proxied artifacts.

Everything lives in one folder (MLFLOW_SERVER_DIR, default `.mlflow-server/`): the PostgreSQL
cluster and its socket, the artifacts, the logs, the Flask secret key. MLflow is driven as a
separate program and over its REST API, so this package does not import it. The command line is
`python -m mnist_pipeline.server` (__main__.py).
"""

"""The MLflow side of training: the store, the record of a run, the model registry.

MLflow reads some of its settings once, when it is imported; so this package sets them (env.configure)
before any of its modules runs, and every one of them can import mlflow at its top.
"""

from mnist_pipeline.tracking import env

env.configure()

"""The MLflow side: the store, the record of a run and of a search, the model registry, the REST probe and the UI link.

MLflow reads some of its settings once, when it is imported; so this package sets them (env.configure)
before any of its modules runs, and every one of them can import mlflow at its top.
"""

from mnist_pipeline.tracking import env

env.configure()

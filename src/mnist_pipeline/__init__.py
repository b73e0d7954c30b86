"""The article's MNIST MLP as a DVC pipeline tracked in MLflow."""

"""Using the model on real digits: its answer, the MLflow model, predict, the scoring server, the drawing page."""

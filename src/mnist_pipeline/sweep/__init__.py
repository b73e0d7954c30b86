"""Hyperparameter search with Optuna: studies in sweep.yaml, trials chosen on a validation split."""

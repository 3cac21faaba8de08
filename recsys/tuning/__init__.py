"""Hyper-parameter search on validation: search spaces, Optuna studies, trial pruning."""

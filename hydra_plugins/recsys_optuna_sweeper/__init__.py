"""recsys's Optuna (>= 4) sweeper for Hydra: ``hydra/sweeper=optuna`` (discovered by Hydra through the
``hydra_plugins`` namespace)."""

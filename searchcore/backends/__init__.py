"""Search backends: Optuna (one machine, or many workers on a shared study) and Ray Tune."""

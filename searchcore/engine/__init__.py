"""The search engine: resolve a search from its space file and overrides, turn trials into
runs, and drive them under a backend (Optuna or Ray Tune) with storage, strategies and sync."""

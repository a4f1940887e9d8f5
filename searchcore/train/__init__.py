"""Training one architecture: datasets, the training loop, ``fit`` and the objectives; plus
the outcome types every backend records."""

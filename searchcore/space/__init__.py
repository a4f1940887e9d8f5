"""The search space: dimensions plugins declare, their conditions, sampling and counting them."""

from searchcore.space.dimensions import KINDS, Dimension, ParamsTrial, SearchSpace, TrialLike, count, off_params, sample

__all__ = ["KINDS", "Dimension", "ParamsTrial", "SearchSpace", "TrialLike", "count", "off_params", "sample"]

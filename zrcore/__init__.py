"""zrcore: fused kernels, losses and recipes for distributional reward models for text-to-image generation."""

from zrcore import losses, metrics
from zrcore.bins import ScoreBins, ScoreDistribution

__version__ = "0.1.0"

__all__ = ["ScoreBins", "ScoreDistribution", "losses", "metrics", "__version__"]

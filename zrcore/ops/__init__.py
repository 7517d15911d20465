"""Fused ops for distributional reward models. Each op has a Triton kernel and a torch reference path."""

from zrcore.ops.fused_linear_kl import FusedLinearKLLoss, fused_linear_kl
from zrcore.ops.pairwise_gap import PairwiseGap, pairwise_gap
from zrcore.ops.score_distribution import ScoreHead, score_distribution, score_distribution_from_logits

__all__ = [
    "FusedLinearKLLoss",
    "PairwiseGap",
    "ScoreHead",
    "fused_linear_kl",
    "pairwise_gap",
    "score_distribution",
    "score_distribution_from_logits",
]

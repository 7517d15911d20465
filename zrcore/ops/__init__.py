"""Fused ops for distributional reward models and their generators: one module per op (its kernels, torch path,
registration and public function; zrcore/ops/README.md says how to add one)."""

from zrcore.ops._dispatch import extension
from zrcore.ops.cfg_euler_step import cfg_euler_step
from zrcore.ops.fused_linear_kl import FusedLinearKLLoss, fused_linear_kl
from zrcore.ops.group_norm_silu import group_norm_silu
from zrcore.ops.pairwise_gap import PairwiseGap, pairwise_gap
from zrcore.ops.score_distribution import ScoreHead, score_distribution, score_distribution_from_logits
from zrcore.ops.token_logprobs import token_logprobs

__all__ = [
    "FusedLinearKLLoss",
    "PairwiseGap",
    "ScoreHead",
    "cfg_euler_step",
    "extension",
    "fused_linear_kl",
    "group_norm_silu",
    "pairwise_gap",
    "score_distribution",
    "score_distribution_from_logits",
    "token_logprobs",
]

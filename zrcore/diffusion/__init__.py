"""Reward backpropagation through the denoising chain of a flow-matching generator (paper section 5)."""

from zrcore.diffusion.reward import AGGREGATIONS, aggregate_reward
from zrcore.diffusion.sampler import CHECKPOINTING, MODES, FlowMatchSampler, SamplerConfig
from zrcore.diffusion.tiny import GENERATOR_ARCHS, TinyPromptEncoder, build_tiny_generator
from zrcore.diffusion.velocity import FluxVelocity, SD3Velocity, ZImageVelocity, velocity_for

__all__ = ["AGGREGATIONS", "CHECKPOINTING", "GENERATOR_ARCHS", "MODES", "FlowMatchSampler", "FluxVelocity",
           "SD3Velocity", "SamplerConfig", "TinyPromptEncoder", "ZImageVelocity", "aggregate_reward",
           "build_tiny_generator", "reward_of_images", "velocity_for"]


def reward_of_images(reward_model, prompts, images, dimensions, mode="mean", weights=None, kappa=0.0):
    """Score pixels [B, 3, H, W] in [0, 1] on each dimension with the student and aggregate; returns (reward [B],
    {dimension: ScoreDistribution}). Unknown dimensions raise naming them."""
    unknown = [d for d in dimensions if d not in reward_model.dimensions]
    if unknown:
        raise ValueError(f"the reward model does not know the dimensions {unknown}; it has {list(reward_model.dimensions)}")
    dists = {d: reward_model.score_pixels(prompts, images, d) for d in dimensions}
    return aggregate_reward(dists, mode=mode, weights=weights, kappa=kappa), dists

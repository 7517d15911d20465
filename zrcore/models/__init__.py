"""Reward models over Hugging Face Qwen-VL models: score decoding, student scoring, teacher judging."""

from zrcore.data.records import DIMENSIONS
from zrcore.models.decoder import ScoreDecoder
from zrcore.models.loading import load_reward_model
from zrcore.models.pixels import VisionGeometry, preprocess_pixels
from zrcore.models.reward_model import Judgement, RewardModel, load_images, recorded_sampling
from zrcore.models.templates import RubricTemplates
from zrcore.models.tiny import ARCHS, build_tiny_reward_model, build_tiny_tokenizer

__all__ = ["ARCHS", "DIMENSIONS", "Judgement", "RewardModel", "RubricTemplates", "ScoreDecoder", "VisionGeometry",
           "build_tiny_reward_model", "build_tiny_tokenizer", "load_images", "load_reward_model", "preprocess_pixels",
           "recorded_sampling"]

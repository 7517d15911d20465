"""Entry points for other trainers: ``transformers`` (patch a Qwen-VL model so its forward returns score
distributions), ``trl`` (reward function and GDSO trainer, extra ``[trl]``) and ``diffusion`` (reward functions for
diffusion RL loops). Each submodule imports its framework only when imported itself."""

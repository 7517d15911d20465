"""Optimise a text-to-image generator through the student reward (backprop through the last K denoising steps).

    python recipes/train_generator.py                       # tiny Z-Image generator, tiny student, 4 dimensions
    python recipes/train_generator.py --kappa 1.0           # pessimistic reward mean - kappa * std
    python recipes/train_generator.py --reward_model runs/risd/model --backprop refl
"""

from zrcore.training.config import GeneratorConfig, run_recipe
from zrcore.training.generator import GeneratorTrainer

if __name__ == "__main__":
    run_recipe(GeneratorConfig, GeneratorTrainer, __doc__)

"""Pretrain a tiny VLM to describe rendered synthetic scenes (no scores, no rubric), the start of every reward recipe:
first its vision tower alone learns the rendered attributes (``--vision_warmup_steps``), then the whole model the
descriptions.

    python recipes/pretrain_tiny.py --preset teacher --output_dir runs/pretrain
    python recipes/train_gdso.py --init_from runs/pretrain/model

Reward recipes build (and cache) it themselves with their default ``--init_from pretrained``.
"""

from zrcore.training.config import PretrainConfig, run_recipe
from zrcore.training.pretrain import PretrainTrainer

if __name__ == "__main__":
    run_recipe(PretrainConfig, PretrainTrainer, __doc__)

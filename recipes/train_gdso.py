"""Train a reasoning teacher with GDSO (or the GRPO baseline / the reward-from-text ablation by flags).

    python recipes/train_gdso.py                                  # tiny teacher on the synthetic rubric set
    python recipes/train_gdso.py --lambda_pw 0 --alpha_pt 0 --alpha_pw 0 --output_dir runs/grpo   # GRPO baseline
    python recipes/train_gdso.py --reward_from text               # reward from the sampled, parsed score
    torchrun --nproc_per_node 2 recipes/train_gdso.py --distributed fsdp     # sharded over 2 processes
"""

from zrcore.training.config import GDSOTeacherConfig, run_recipe
from zrcore.training.gdso import GDSOTeacherTrainer

if __name__ == "__main__":
    run_recipe(GDSOTeacherConfig, GDSOTeacherTrainer, __doc__)

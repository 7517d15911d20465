"""RISD: a student distilled from a GDSO teacher, KL(q_T || q_S), q_T averaged over --sampling.num_samples of the teacher's reasonings.

    python recipes/train_risd.py --teacher runs/gdso/model --output_dir runs/risd
"""

from zrcore.training.config import RISDConfig, run_recipe
from zrcore.training.student import RISDTrainer

if __name__ == "__main__":
    run_recipe(RISDConfig, RISDTrainer, __doc__)

"""OPD baseline: the student samples reasoning and a score token; per-token advantage log pi_T - log pi_S_old.

    python recipes/train_opd.py --teacher runs/gdso/model --output_dir runs/opd
"""

from zrcore.training.config import OPDConfig, run_recipe
from zrcore.training.student import OPDTrainer

if __name__ == "__main__":
    run_recipe(OPDConfig, OPDTrainer, __doc__)

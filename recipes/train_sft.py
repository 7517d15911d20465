"""No-reasoning baseline: a student trained with cross-entropy on the annotated bin (soft target from the raters'
spread by default).

    python recipes/train_sft.py --output_dir runs/sft
    python recipes/train_sft.py --preset teacher --output_dir runs/sft_teacher
"""

from zrcore.training.config import SFTConfig, run_recipe
from zrcore.training.student import SFTTrainer

if __name__ == "__main__":
    run_recipe(SFTConfig, SFTTrainer, __doc__)

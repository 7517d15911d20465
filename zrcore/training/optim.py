"""The optimizer a run config asks for: AdamW in the form that fits the memory the run has.

Bytes per trained parameter held by the optimizer (P parameters, fp32 master weights unless said):

=================  ===========================================  ==================================================
``optimizer``      states                                       step temporaries
=================  ===========================================  ==================================================
``adamw``          8 (exp_avg, exp_avg_sq in the master dtype)  about 4 on CUDA (torch's default there, foreach,
                                                                works on whole lists of tensors at once)
``adamw_fused``    8                                            none of full size (torch's fused kernel updates
                                                                each tensor in place)
``adamw_8bit``     about 2 (torchao ``AdamW8bit``: 8-bit,        none of full size
                   block-wise scaled)
=================  ===========================================  ==================================================

``master_dtype="bf16"`` keeps the weights (2 B) and gradients (2 B) in bf16. Plain bf16 updates at fine-tuning
learning rates round away (an update smaller than half a bf16 step is lost), so bf16 masters are updated with
torchao's stochastic rounding (``bf16_stochastic_round=True``), which keeps the update right in expectation.
"""

from __future__ import annotations

import importlib.util

import torch

MASTER_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
OPTIMIZERS = ("adamw", "adamw_fused", "adamw_8bit")


def _torchao_optim():
    if importlib.util.find_spec("torchao") is None:
        raise ValueError("optimizer 'adamw_8bit' and master_dtype 'bf16' need torchao: pip install 'zrcore[memory]'")
    import torchao.optim

    return torchao.optim


def build_optimizer(params: list[torch.nn.Parameter], optimizer: str = "adamw", master_dtype: str = "fp32", *,
                    lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """AdamW over ``params`` (betas 0.9 / 0.999, eps 1e-8) as ``optimizer`` and ``master_dtype`` name it (see the
    module docstring). Every parameter must already be in ``master_dtype``."""
    if master_dtype not in MASTER_DTYPES:
        raise ValueError(f"master_dtype must be one of {list(MASTER_DTYPES)}, got {master_dtype!r}")
    wrong = {p.dtype for p in params} - {MASTER_DTYPES[master_dtype]}
    if wrong:
        raise ValueError(f"master_dtype={master_dtype!r} but trained parameters are {sorted(map(str, wrong))}: cast the "
                         "model first (configure_reward_model does)")
    bf16 = master_dtype == "bf16"
    if optimizer == "adamw":
        if bf16:
            return _torchao_optim()._AdamW(params, lr=lr, weight_decay=weight_decay, bf16_stochastic_round=True)
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)  # torch's default: foreach on CUDA
    if optimizer == "adamw_fused":
        if bf16:
            raise ValueError("optimizer 'adamw_fused' has no stochastic rounding: with master_dtype 'bf16' use "
                             "'adamw' or 'adamw_8bit'")
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    if optimizer == "adamw_8bit":
        return _torchao_optim().AdamW8bit(params, lr=lr, weight_decay=weight_decay, bf16_stochastic_round=bf16)
    raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")

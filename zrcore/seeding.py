"""Every seed zrcore derives, in one place.

A run has one user seed ``s``; each random draw that must not depend on how work is batched or spread over
processes gets its own seed, a pure function of ``s`` and the draw's coordinates:

    step_seed(s, step, item)       = (s * 1_000_003 + step * 10_007 + item * 7_919 + 1)  mod 2^62   rollout rows
    score_token_seed(s, step, row) =  step_seed(s, step, 10^9 + row)                               sampled score tokens
    eval_seed(s, record, sample)   = (s * 1_000_003 + record * 101 + sample + 17)       mod 2^62   evaluation traces
    epoch_seed(s, epoch)           =  s * 1_000_003 + epoch                                        group batches
    counter_seed(s, n)             =  s * 7_919 + n                                                per-step shuffles
    noise_seed(s, step, item)      =  s * 100_003 + step * 1_009 + item                            generator noise

``seed_everything(s)`` seeds Python's and torch's global generators (model initialisation, dropout).
"""

from __future__ import annotations

import random

import torch

_MOD = 2**62


def seed_everything(seed: int) -> None:
    """Python's ``random`` and torch's global generator (CPU and CUDA) from one seed."""
    random.seed(seed)
    torch.manual_seed(seed)


def step_seed(seed: int, step: int, item: int) -> int:
    """A seed per (run, step, global item): sampling does not depend on how items are spread over processes or
    batched."""
    return (seed * 1_000_003 + step * 10_007 + item * 7_919 + 1) % _MOD


SCORE_TOKEN_OFFSET = 10**9  # score-token draws sit past every rollout row's item index


def score_token_seed(seed: int, step: int, row: int) -> int:
    """The seed of the score token drawn for global rollout row ``row`` at ``step`` (GDSO's parsed-text ablation, OPD's
    student), rows ordered (group, candidate, sample): ``step_seed(seed, step, 10^9 + row)``, apart from the seeds of
    the rows' reasoning (items below 10^9)."""
    return step_seed(seed, step, SCORE_TOKEN_OFFSET + row)


def eval_seed(seed: int, record: int, sample: int) -> int:
    """The seed of one reasoning sample of one evaluation record (independent of batching and ranks)."""
    return (seed * 1_000_003 + record * 101 + sample + 17) % _MOD


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's order of training groups and their candidate choice."""
    return seed * 1_000_003 + epoch


def counter_seed(seed: int, n: int) -> int:
    """The seed of the n-th draw of a per-epoch or per-step shuffle (pretraining order, generator prompts)."""
    return seed * 7_919 + n


def noise_seed(seed: int, step: int, item: int) -> int:
    """The seed of the starting noise of one generated image (training step, global image index)."""
    return seed * 100_003 + step * 1_009 + item


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)

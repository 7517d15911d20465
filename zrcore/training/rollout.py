"""Rollouts: teacher judgements of a batch of groups merged into one left-padded batch, and the policy forward that
gives both the token log-probs of the sampled reasoning and the score distribution after the forced suffix."""

from __future__ import annotations

from typing import NamedTuple

import torch

from zrcore.bins import ScoreDistribution
from zrcore.models.logprobs import completion_logprobs
from zrcore.ops import score_distribution


class Rollouts(NamedTuple):
    sequences: torch.Tensor  # [B, L], rows ordered (group, candidate, sample)
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor  # [B, L] bool
    image_inputs: dict
    distribution: ScoreDistribution  # at sampling time, [B] flattened
    lengths: torch.Tensor  # [B] reasoning tokens
    truncated: torch.Tensor  # [B] bool


def merge_judgements(judgements: list, pad_id: int) -> Rollouts:
    length = max(j.sequences.shape[1] for j in judgements)

    def pad(t, value):
        extra = length - t.shape[1]
        return torch.cat([torch.full((t.shape[0], extra), value, dtype=t.dtype, device=t.device), t], 1) if extra else t

    seqs = torch.cat([pad(j.sequences, pad_id) for j in judgements])
    att = torch.cat([pad(j.attention_mask, 0) for j in judgements])
    comp = torch.cat([pad(j.completion_mask, False) for j in judgements])
    images = {"pixel_values": torch.cat([j.image_inputs["pixel_values"] for j in judgements]),
              "image_grid_thw": torch.cat([j.image_inputs["image_grid_thw"] for j in judgements])}
    k = judgements[0].distribution.log_probs.shape[-1]
    dist = ScoreDistribution(torch.cat([j.distribution.log_probs.reshape(-1, k) for j in judgements]),
                             torch.cat([j.distribution.mean.reshape(-1) for j in judgements]),
                             torch.cat([j.distribution.var.reshape(-1) for j in judgements]))
    lengths = torch.tensor([len(r) for j in judgements for r in j.reasoning_ids], dtype=torch.float32)
    trunc = torch.cat([j.truncated for j in judgements])
    return Rollouts(seqs, att, comp, images, dist, lengths, trunc)


def policy_forward(rm, model, batch: Rollouts, temperature: float, with_distribution: bool = True):
    """(token log-probs [B, L] at the sampling temperature, 0 outside the completion; score distribution [B] or
    None), from one forward of ``model`` (rm.model or a frozen copy of it: the reference / old policy)."""
    seqs = batch.sequences
    inputs = rm.tensor_inputs(seqs, batch.attention_mask, batch.image_inputs, model)
    hidden = model.model(**inputs, use_cache=False).last_hidden_state
    head = model.get_output_embeddings()
    logps = completion_logprobs(hidden, seqs, batch.completion_mask, head, temperature)
    dist = None
    if with_distribution:
        dist = score_distribution(hidden[:, -1], head.weight, rm.decoder.token_ids.to(seqs.device),
                                  rm.bins.values.to(seqs.device), bias=head.bias)
    return logps, dist

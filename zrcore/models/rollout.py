"""Rollouts: the sampling backend interface, its default over Hugging Face ``generate``, and the rollout batch the
policy losses read.

A backend turns a ``RolloutRequest`` (prompt token ids and images per row, one seed per row, decoding limits) into
sampled token ids and the behaviour log-probs log pi_old(y_t | y_<t) / T they were drawn with. ``RewardModel.judge``
calls it and appends the forced scoring suffix, so a serving engine can replace ``HFGenerateBackend`` without
touching the losses.

Sampling is seeded per row (``SeededSampler``): row r draws its tokens from its own generator, so its trace does not
depend on which rows share its batch, how many calls the rows are split into, or which process holds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch

from zrcore import seeding
from zrcore.bins import ScoreDistribution
from zrcore.sharding import max_over_ranks


@dataclass
class RolloutRequest:
    prompt_ids: list  # one token id list per row (left padding is the backend's job)
    image_inputs: dict  # pixel_values / image_grid_thw with one image per row, back to back
    seeds: list  # one sampling seed per row
    max_new_tokens: int
    temperature: float
    eos_token_id: int
    pad_token_id: int
    suppress_ids: list  # token ids a trace must not contain
    batch_size: int = 0  # at most this many rows per sampling call; 0 = all rows in one call


class SampledTokens(NamedTuple):
    token_ids: list  # per row: the sampled ids (up to and including end-of-turn when it came)
    logprobs: list  # per row: behaviour log-probs of those ids (floats)


class RolloutBackend(Protocol):
    def sample(self, rm, request: RolloutRequest) -> SampledTokens: ...


class SeededSampler:
    """A ``generate`` logits processor that samples each row from softmax(z / T) with that row's own generator and
    leaves only the drawn token finite, so greedy decoding emits it; it records the drawn tokens' log-probs."""

    def __init__(self, seeds: list[int], temperature: float):
        self.seeds = [int(s) % (2**63) for s in seeds]
        self.temperature = float(temperature)
        self.generators: list[torch.Generator] | None = None
        self.logprobs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.generators is None:
            self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        logp = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        probs = logp.exp()
        picks = torch.cat([torch.multinomial(probs[b], 1, generator=g) for b, g in enumerate(self.generators)])
        self.logprobs.append(logp.gather(1, picks[:, None]).squeeze(1))
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, picks[:, None], 0.0)


def _image_rows(image_inputs: dict, rows: list[int]) -> dict:
    sizes = image_inputs["image_grid_thw"].prod(-1).tolist()
    chunks = torch.split(image_inputs["pixel_values"], sizes, dim=0)
    return {"pixel_values": torch.cat([chunks[r] for r in rows]), "image_grid_thw": image_inputs["image_grid_thw"][rows]}


class HFGenerateBackend:
    """Sampling with the model's own ``generate`` (KV cache), ``batch_size`` rows per call. No logits or scores
    are requested from ``generate``. When the model is sharded (``rm.synced_generation``), every rank makes the same
    number of calls (a rank with fewer rows repeats one row and drops it) and decodes with ``synced_gpus``."""

    @torch.no_grad()
    def sample(self, rm, request: RolloutRequest) -> SampledTokens:
        from transformers import LogitsProcessorList

        rows = list(range(len(request.prompt_ids)))
        size = request.batch_size or len(rows)
        chunks = [rows[i:i + size] for i in range(0, len(rows), size)]
        calls = max_over_ranks(len(chunks)) if rm.synced_generation else len(chunks)
        tokens: list = [None] * len(rows)
        logprobs: list = [None] * len(rows)
        for c in range(calls):
            part = chunks[c] if c < len(chunks) else chunks[0][:1]
            ids, mask = rm.left_pad([request.prompt_ids[r] for r in part])
            sampler = SeededSampler([request.seeds[r] for r in part], request.temperature)
            out = rm.model.generate(**rm.tensor_inputs(ids, mask, _image_rows(request.image_inputs, part)),
                                    do_sample=False, max_new_tokens=request.max_new_tokens,
                                    eos_token_id=request.eos_token_id, pad_token_id=request.pad_token_id,
                                    suppress_tokens=request.suppress_ids,
                                    logits_processor=LogitsProcessorList([sampler]),
                                    synced_gpus=rm.synced_generation, top_k=None, top_p=None, temperature=None)
            if c >= len(chunks):
                continue
            generated = out[:, ids.shape[1]:].tolist()
            lp = torch.stack(sampler.logprobs, 1).tolist() if sampler.logprobs else [[] for _ in part]
            for i, r in enumerate(part):
                toks = generated[i]
                if request.eos_token_id in toks:
                    toks = toks[:toks.index(request.eos_token_id) + 1]
                tokens[r] = toks
                logprobs[r] = lp[i][:len(toks)]
        return SampledTokens(tokens, logprobs)


class Rollouts(NamedTuple):
    sequences: torch.Tensor  # [B, L], rows ordered (group, candidate, sample)
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor  # [B, L] bool
    image_inputs: dict
    distribution: ScoreDistribution  # at sampling time, [B] flattened
    lengths: torch.Tensor  # [B] reasoning tokens
    truncated: torch.Tensor  # [B] bool
    behaviour_logprobs: torch.Tensor  # [B, L] log-probs the sampler drew the completion with
    score_position: int = -1  # where q is read: the last position, or -2 after an appended score token

    def rows(self, start: int, stop: int) -> Rollouts:
        """Rows start..stop-1 of the batch (e.g. a micro-batch of whole prompt groups), their images with them."""
        keep = list(range(start, stop))
        k = self.distribution.log_probs.shape[-1]
        d = self.distribution
        return self._replace(sequences=self.sequences[start:stop], attention_mask=self.attention_mask[start:stop],
                             completion_mask=self.completion_mask[start:stop],
                             image_inputs=_image_rows(self.image_inputs, keep),
                             distribution=ScoreDistribution(d.log_probs.reshape(-1, k)[start:stop],
                                                            d.mean.reshape(-1)[start:stop],
                                                            d.var.reshape(-1)[start:stop]),
                             lengths=self.lengths[start:stop], truncated=self.truncated[start:stop],
                             behaviour_logprobs=self.behaviour_logprobs[start:stop])

    def with_score_tokens(self, score_ids: torch.Tensor) -> Rollouts:
        """The batch with one sampled score token per row ([B] ids) appended after the scoring suffix: it joins the
        completion (the policy emits it and is trained on it, as a parsed-score policy is) and q stays read at the
        position that predicts it."""
        tok = score_ids.to(self.sequences.device)[:, None]
        one = torch.ones_like(tok)
        return self._replace(sequences=torch.cat([self.sequences, tok], 1),
                             attention_mask=torch.cat([self.attention_mask, one.to(self.attention_mask.dtype)], 1),
                             completion_mask=torch.cat([self.completion_mask, one.bool()], 1),
                             behaviour_logprobs=torch.cat([self.behaviour_logprobs,
                                                           torch.zeros_like(tok, dtype=torch.float32)], 1),
                             score_position=-2)


def rollouts_of(judgement) -> Rollouts:
    """A Judgement ([B, G] distributions) as a flat rollout batch."""
    d = judgement.distribution
    k = d.log_probs.shape[-1]
    dist = ScoreDistribution(d.log_probs.reshape(-1, k), d.mean.reshape(-1), d.var.reshape(-1))
    lengths = torch.tensor([len(r) for r in judgement.reasoning_ids], dtype=torch.float32)
    return Rollouts(judgement.sequences, judgement.attention_mask, judgement.completion_mask, judgement.image_inputs,
                    dist, lengths, judgement.truncated, judgement.behaviour_logprobs)


def judge_groups(rm, groups: list, first: int, step: int, seed: int, sampling):
    """One ``judge`` call for all (group, candidate) rows of ``groups``, rows ordered (group, candidate, sample) and
    seeded by the run's ``seed``, the training ``step`` and their global position (``first``: the global index of
    groups[0]). ``sampling`` gives ``num_samples``, ``max_reasoning_tokens``, ``temperature`` and
    ``rollout_batch_size`` (a ``zrcore.training.config.SamplingConfig``)."""
    num_samples = sampling.num_samples
    m = len(groups[0].records)
    prompts = [g.prompt for g in groups for _ in g.records]
    images = [img for g in groups for img in g.images]
    dims = [g.dimension for g in groups for _ in g.records]
    seeds = [seeding.step_seed(seed, step, ((first + gi) * m + mi) * num_samples + s)
             for gi in range(len(groups)) for mi in range(m) for s in range(num_samples)]
    return rm.judge(prompts, images, dims, num_samples=num_samples, max_reasoning_tokens=sampling.max_reasoning_tokens,
                    temperature=sampling.temperature, seeds=seeds, rollout_batch_size=sampling.rollout_batch_size)


def sample_bins(probs: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """One bin index per row of probs [B, K], each from its own seeded generator."""
    return torch.cat([torch.multinomial(p, 1, generator=seeding.generator(s))
                      for p, s in zip(probs.float().cpu(), seeds)])

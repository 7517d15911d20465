"""Rollouts: the sampling backend interface, zrcore's own sampler (and the earlier one over HF ``generate``), and the
rollout batch the policy losses read.

A backend turns a ``RolloutRequest`` (prompt token ids and images per row, one seed per row, decoding limits) into
sampled token ids and the behaviour log-probs log pi_old(y_t | y_<t) / T they were drawn with. ``RewardModel.judge``
calls it and appends the forced scoring suffix, so a serving engine can replace ``NativeBackend`` (the default: each
prompt prefilled once, weights gathered once per rollout, an optional static compiled decode) without touching the
losses; ``HFGenerateBackend`` is the earlier sampler over HF ``generate``, one row at a time. docs/ROLLOUTS.md gives
the contract a backend meets.

Sampling is seeded per row (``row_uniforms``, ``SeededSampler``): row r draws its tokens from its own generator, so
its trace does not depend on which rows share its batch, how many calls the rows are split into, or which process
holds them.
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
    batch_size: int = 0  # at most this many rows per sampling call (at least one group of G); 0 = all in one call
    group_size: int = 1  # rows r*group_size ... (r+1)*group_size - 1 share their prompt and image (the G samples)


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


DECODE_MODES = ("dynamic", "static_compiled")


def row_uniforms(seeds: list[int], steps: int) -> torch.Tensor:
    """[B, steps] uniforms in [0, 1), row r drawn from its own generator seeded with seeds[r] (on the CPU, so a row's
    draws are the same on every device and whatever rows share its batch)."""
    return torch.stack([torch.rand(steps, generator=seeding.generator(int(s) % (2**63)), dtype=torch.float64)
                        for s in seeds]) if seeds else torch.zeros(0, steps, dtype=torch.float64)


def inverse_cdf_sample(logits: torch.Tensor, uniforms: torch.Tensor, temperature: float,
                       suppress: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row from p = softmax(z / T) with the ``suppress`` ids removed, by inverse CDF: the smallest
    v with F(v) > u F(V) where F is the cumulative sum of p, u the row's uniform ([B]). Returns (ids [B], their
    log p [B]). Batched: no per-row loop, no generator per row at each step."""
    z = logits.float() / temperature
    if suppress is not None and suppress.numel():
        z = z.index_fill(1, suppress, float("-inf"))
    logp = torch.log_softmax(z, dim=-1)
    cdf = logp.exp().cumsum(-1)
    target = uniforms.to(cdf.device, cdf.dtype)[:, None] * cdf[:, -1:]
    picks = torch.searchsorted(cdf, target, right=True).clamp_(max=cdf.shape[-1] - 1)
    return picks[:, 0], logp.gather(1, picks).squeeze(1)


class NativeBackend:
    """zrcore's own sampler: each distinct prompt prefilled once, its KV cache expanded to its G samples, then one
    batched decode step per token for all rows.

    Per call of at most ``batch_size`` rows (whole groups of G): ``rm.prefill`` over the P distinct prompts (the
    vision tower once per image), the cache expanded to the G samples (``Cache.reorder_cache``, HF's beam
    reordering) and the mrope offsets repeated to the P*G rows, then ``rm.decode_step`` until every row emitted
    end-of-turn or ``max_new_tokens``. A row samples by inverse CDF from uniforms drawn upfront from its own seeded
    generator (``row_uniforms``), so its trace depends on its seed only. ``decode="static_compiled"``: the expanded
    cache copied into HF's ``StaticCache`` and the decode step run through ``torch.compile`` (fixed shapes); a
    cache holding other than key/value layers (Qwen3.5's linear attention) decodes dynamically, and a sharded model
    uses the static cache uncompiled. The whole rollout runs inside ``rm.generating(unshard_once)``. Under FSDP2
    without ``unshard_once`` each step gathers the layers, so
    every rank makes the same number of calls and steps (a finished rank feeds padding until all are done)."""

    def __init__(self, decode: str = "dynamic", unshard_once: bool = True):
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {list(DECODE_MODES)}, got {decode!r}")
        self.decode = decode
        self.unshard_once = bool(unshard_once)

    @torch.no_grad()
    def sample(self, rm, request: RolloutRequest) -> SampledTokens:
        g = max(1, request.group_size)
        n_rows = len(request.prompt_ids)
        if n_rows % g:
            raise ValueError(f"{n_rows} rows are not whole groups of group_size={g}")
        groups = list(range(n_rows // g))
        per_call = max(1, (request.batch_size or n_rows) // g)
        chunks = [groups[i:i + per_call] for i in range(0, len(groups), per_call)]
        synced = rm.synced_generation and not self.unshard_once
        calls = max_over_ranks(len(chunks)) if synced else len(chunks)
        tokens: list = [None] * n_rows
        logprobs: list = [None] * n_rows
        with rm.generating(self.unshard_once):
            for c in range(calls):
                part = chunks[c] if c < len(chunks) else chunks[0][:1]
                toks, lps = self._decode(rm, request, part, g, synced)
                if c >= len(chunks):
                    continue
                for i, r in enumerate(q * g + s for q in part for s in range(g)):
                    tokens[r], logprobs[r] = toks[i], lps[i]
        return SampledTokens(tokens, logprobs)

    def _decode(self, rm, request: RolloutRequest, part: list[int], g: int, synced: bool):
        firsts = [q * g for q in part]
        rows = [q * g + s for q in part for s in range(g)]
        n = request.max_new_tokens
        ids, mask = rm.left_pad([request.prompt_ids[r] for r in firsts])
        logits, cache, delta = rm.prefill(ids, mask, _image_rows(request.image_inputs, firsts))
        device = logits.device
        if g > 1:  # row q * G + s reads prompt q's cache (HF's beam reordering: keys, values, linear-attention states)
            cache.reorder_cache(torch.arange(len(part), device=device).repeat_interleave(g))
            logits, delta, mask = (t.repeat_interleave(g, 0) for t in (logits, delta, mask))
        width = ids.shape[1]
        static = self.decode == "static_compiled" and n > 1 and _key_value_layers(cache)
        if static:
            cache = _static_copy(rm, cache, width + n)
        compiled = static and not rm.synced_generation and hasattr(torch, "compile")
        uniforms = row_uniforms([request.seeds[r] for r in rows], n).to(device)
        suppress = torch.tensor(request.suppress_ids, dtype=torch.long, device=device)
        mask = torch.cat([mask.to(device), mask.new_zeros(len(rows), n).to(device)], 1)
        positions = mask.sum(-1) + delta  # the first sampled token's rotary position
        out_ids = torch.full((len(rows), n), request.pad_token_id, dtype=torch.long, device=device)
        out_lp = torch.zeros(len(rows), n, dtype=torch.float32, device=device)
        done = torch.zeros(len(rows), dtype=torch.bool, device=device)
        steps = 0
        for t in range(n):
            tok, lp = inverse_cdf_sample(logits, uniforms[:, t], request.temperature, suppress)
            tok = tok.masked_fill(done, request.pad_token_id)
            out_ids[:, t], out_lp[:, t] = tok, lp
            done |= tok == request.eos_token_id
            steps = t + 1
            if t == n - 1:
                break
            finished = bool(done.all())
            if synced:
                finished = max_over_ranks(int(not finished)) == 0
            if finished:
                break
            mask[:, width + t] = 1
            logits = rm.decode_step(tok, mask if static else mask[:, :width + t + 1], positions + t, cache,
                                    compiled=compiled)
        out_ids, out_lp = out_ids[:, :steps].tolist(), out_lp[:, :steps].tolist()
        tokens, logprobs = [], []
        for toks, lps in zip(out_ids, out_lp):
            if request.eos_token_id in toks:
                toks = toks[:toks.index(request.eos_token_id) + 1]
            tokens.append(toks)
            logprobs.append(lps[:len(toks)])
        return tokens, logprobs


def _key_value_layers(cache) -> bool:
    """The cache holds only plain key/value layers (what HF's ``StaticCache`` can take over)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers)


def _static_copy(rm, cache, length: int):
    """A ``StaticCache`` of ``length`` positions holding the prefilled (expanded) keys and values of ``cache``."""
    from transformers import StaticCache

    static = StaticCache(config=rm.model.config, max_cache_len=length)
    for i, layer in enumerate(cache.layers):
        static.update(layer.keys, layer.values, i)
    return static


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
    # the old policy's log-probs log pi(y_t | y_<t) / T of the completion, from the forward that read q ([B, L]);
    # None when the sampler did not return them (then the trainer runs that forward itself)
    logprobs: torch.Tensor | None = None
    score_logprobs: torch.Tensor | None = None  # [B, K]: log pi(score token k | sequence) / T, from that forward

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
                             behaviour_logprobs=self.behaviour_logprobs[start:stop],
                             logprobs=None if self.logprobs is None else self.logprobs[start:stop],
                             score_logprobs=None if self.score_logprobs is None else self.score_logprobs[start:stop])

    def with_score_tokens(self, score_ids: torch.Tensor, bins: torch.Tensor | None = None,
                          behaviour: torch.Tensor | None = None) -> Rollouts:
        """The batch with one sampled score token per row ([B] ids) appended after the scoring suffix: it joins the
        completion (the policy emits it and is trained on it, as a parsed-score policy is) and q stays read at the
        position that predicts it. ``bins``: the tokens' bin indices [B], which carry the old log-probs over to
        the appended token (from ``score_logprobs``); without them ``logprobs`` is dropped. ``behaviour``: the
        log-probs [B] the tokens were drawn with, the appended column of ``behaviour_logprobs`` (0 without them;
        ``append_sampled_scores`` gives them)."""
        tok = score_ids.to(self.sequences.device)[:, None]
        one = torch.ones_like(tok)
        drawn = torch.zeros_like(tok, dtype=torch.float32) if behaviour is None else \
            behaviour.to(tok.device, torch.float32).reshape(-1, 1)
        logprobs = None
        if self.logprobs is not None and self.score_logprobs is not None and bins is not None:
            picked = self.score_logprobs.gather(1, bins.to(self.score_logprobs.device).long()[:, None])
            logprobs = torch.cat([self.logprobs, picked.to(self.logprobs.device, self.logprobs.dtype)], 1)
        return self._replace(logprobs=logprobs, sequences=torch.cat([self.sequences, tok], 1),
                             attention_mask=torch.cat([self.attention_mask, one.to(self.attention_mask.dtype)], 1),
                             completion_mask=torch.cat([self.completion_mask, one.bool()], 1),
                             behaviour_logprobs=torch.cat([self.behaviour_logprobs, drawn], 1),
                             score_position=-2)


def rollouts_of(judgement) -> Rollouts:
    """A Judgement ([B, G] distributions) as a flat rollout batch."""
    d = judgement.distribution
    k = d.log_probs.shape[-1]
    dist = ScoreDistribution(d.log_probs.reshape(-1, k), d.mean.reshape(-1), d.var.reshape(-1))
    lengths = torch.tensor([len(r) for r in judgement.reasoning_ids], dtype=torch.float32)
    return Rollouts(judgement.sequences, judgement.attention_mask, judgement.completion_mask, judgement.image_inputs,
                    dist, lengths, judgement.truncated, judgement.behaviour_logprobs,
                    logprobs=getattr(judgement, "logprobs", None),
                    score_logprobs=getattr(judgement, "score_logprobs", None))


def judge_groups(rm, groups: list, first: int, step: int, seed: int, sampling, with_logprobs: bool = False):
    """One ``judge`` call for all (group, candidate) rows of ``groups``, rows ordered (group, candidate, sample) and
    seeded by the run's ``seed``, the training ``step`` and their global position (``first``: the global index of
    groups[0]). ``sampling`` gives ``num_samples``, ``max_reasoning_tokens``, ``temperature``,
    ``rollout_batch_size``, ``decode`` and ``unshard_once`` (a ``zrcore.training.config.SamplingConfig``);
    ``with_logprobs``: see ``RewardModel.judge``."""
    num_samples = sampling.num_samples
    m = len(groups[0].records)
    prompts = [g.prompt for g in groups for _ in g.records]
    images = [img for g in groups for img in g.images]
    dims = [g.dimension for g in groups for _ in g.records]
    seeds = [seeding.step_seed(seed, step, ((first + gi) * m + mi) * num_samples + s)
             for gi in range(len(groups)) for mi in range(m) for s in range(num_samples)]
    return rm.judge(prompts, images, dims, num_samples=num_samples, max_reasoning_tokens=sampling.max_reasoning_tokens,
                    temperature=sampling.temperature, seeds=seeds, rollout_batch_size=sampling.rollout_batch_size,
                    decode=getattr(sampling, "decode", "dynamic"), unshard_once=getattr(sampling, "unshard_once", True),
                    with_logprobs=with_logprobs)


def sample_bins(probs: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """One bin index per row of probs [B, K], each from its own seeded generator."""
    return torch.cat([torch.multinomial(p, 1, generator=seeding.generator(s))
                      for p, s in zip(probs.float().cpu(), seeds)])


def tempered_score_log_probs(log_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """log q_T [..., K], the score distribution at sampling temperature T: q_T = softmax(z_S / T) over the K bins,
    computed as softmax(log q / T) (log q = z_S - logsumexp(z_S): the shift cancels). It is the policy's tempered
    next-token distribution softmax(z / T) at the scoring position conditioned on a score token, the distribution
    whose full-vocabulary log-prob log pi(s_k) / T ``policy_forward`` reinforces. T = 1: log q itself."""
    log_probs = log_probs.float()
    return log_probs if temperature == 1 else torch.log_softmax(log_probs / temperature, dim=-1)


def append_sampled_scores(batch: Rollouts, rm, seeds: list[int], temperature: float) -> tuple[Rollouts, torch.Tensor]:
    """(the batch with one score token per row appended, the drawn bins [B]): row r's bin drawn from q_T
    (``tempered_score_log_probs`` of the batch's q at the sampling ``temperature``) with seed ``seeds[r]``. Its
    behaviour log-prob is log q_T(bin), the log-prob of the draw (as a reasoning token's is that of its draw over the
    unsuppressed vocabulary); its old log-prob, carried over from the scoring forward when that returned them, is the
    full-vocabulary log pi(s_k) / T that ``policy_forward`` gives it, so the ratio starts at 1."""
    log_q = tempered_score_log_probs(batch.distribution.log_probs, temperature)
    picked = sample_bins(log_q.exp(), seeds)
    drawn = log_q.gather(1, picked.to(log_q.device)[:, None]).squeeze(1)
    return batch.with_score_tokens(rm.score_tokens(picked), bins=picked, behaviour=drawn), picked

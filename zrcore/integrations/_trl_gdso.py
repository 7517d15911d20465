"""GDSO (paper eq. 13-14, Algorithm 1) on TRL's GRPO loop: ``GDSOConfig(GRPOConfig)`` and
``GDSOTrainer(GRPOTrainer)``. Imported through ``zrcore.integrations.trl``, which checks that TRL is installed.

Data: one row per candidate image, with the columns ``prompt`` (the text-to-image prompt), ``image``, ``score``
(human score on the rubric scale), ``dimension`` (rubric key) and ``prompt_id`` (candidates of one prompt share it).
The sampler yields whole prompts: ``num_candidates`` (M) candidates, each repeated ``num_generations`` (G) times,
contiguously, so every candidate of a prompt lands on one rank and in one loss.

Per generation batch the trainer samples G reasoning traces per candidate and reads q after the forced scoring suffix.
With ``sampler="trl"`` (default) the traces come from TRL's own generation (``GRPOTrainer._generate``: vLLM in
colocate or server mode when ``use_vllm=True``, else transformers ``generate``) on the rubric prompt, and q comes from
one no-grad forward of the patched model over prompt + trace + end-of-turn (forced when the trace was cut) + scoring
suffix, as ``RewardModel.judge`` builds them; with ``sampler="judge"`` ``RewardModel.judge`` samples (seeded per row)
and scores. The GDSO reward (eq. 13: lambda_pt r_pt + lambda_pw r_pw, from the expected scores) becomes TRL's
advantage (eq. 3, per candidate over its G samples: A = (r - mean) / (std + adv_eps)); the old, reference and
(vLLM) sampling log-probs and the vLLM importance-sampling ratio are TRL's. The loss is TRL's policy loss plus
alpha_pt L_ce (eq. 8) + alpha_pw L_pw (eq. 11, ``zrcore.ops.pairwise_gap``), both with gradients through q, which the
patched model (``zrcore.integrations.transformers``) reads at the score position through the fused op. With
lambda_pw = alpha_pt = alpha_pw = 0 it is TRL's GRPO with the pointwise reward.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import Sampler
from trl import GRPOConfig, GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import nanmax, nanmin, pad

from zrcore import losses
from zrcore.bins import ScoreDistribution
from zrcore.data.records import check_scores
from zrcore.integrations.transformers import apply_zrcore
from zrcore.models.reward_model import RewardModel, load_images
from zrcore.ops import pairwise_gap
from zrcore.seeding import step_seed

REQUIRED_COLUMNS = ("prompt", "image", "score", "dimension", "prompt_id")
SAMPLERS = ("trl", "judge")


@dataclass
class GDSOConfig(GRPOConfig):
    """GRPOConfig plus GDSO's weights. ``num_generations`` is G (samples per candidate); ``per_device_train_batch_size``
    counts completions and must be a multiple of num_candidates * num_generations."""

    num_candidates: int = field(default=2, metadata={"help": "M: candidates of one prompt per group"})
    lambda_pt: float = field(default=1.0, metadata={"help": "weight of the pointwise reward (eq. 13)"})
    lambda_pw: float = field(default=1.0, metadata={"help": "weight of the pairwise reward (eq. 13)"})
    alpha_pt: float = field(default=1.0, metadata={"help": "weight of the pointwise CE loss (eq. 14)"})
    alpha_pw: float = field(default=1.0, metadata={"help": "weight of the pairwise loss (eq. 14)"})
    include_ties: bool = field(default=False, metadata={"help": "keep tied pairs with target gap 0"})
    adv_eps: float = field(default=1e-4, metadata={
        "help": "eps of the advantages (eq. 3): A = (r - mean(r)) / (std(r) + eps), >= 0 (1e-4: TRL's own)"})
    sampler: str = field(default="trl", metadata={
        "help": "who samples the reasoning traces: 'trl' (TRL's generation: vLLM with use_vllm=True, else "
                "transformers generate) or 'judge' (RewardModel.judge: transformers generate seeded per row)"})

    def __post_init__(self):
        super().__post_init__()
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {self.sampler!r}")
        if self.sampler == "judge" and self.use_vllm:
            raise ValueError("use_vllm=True needs sampler='trl' (TRL's generation path); sampler='judge' samples with "
                             "RewardModel.judge")
        if self.use_transformers_continuous_batching:
            raise ValueError("use_transformers_continuous_batching is not supported: it does not take images; use "
                             "use_vllm=True or the default transformers generation")
        if not self.adv_eps >= 0:
            raise ValueError(f"adv_eps must be >= 0 (eq. 3: std + eps divides), got {self.adv_eps}")
        if self.num_candidates < 2:
            raise ValueError(f"num_candidates must be >= 2 (GDSO compares candidates), got {self.num_candidates}")
        block = self.num_candidates * self.num_generations
        if self.per_device_train_batch_size % block:
            raise ValueError(f"per_device_train_batch_size ({self.per_device_train_batch_size}) must be a multiple of "
                             f"num_candidates * num_generations ({block}): whole prompts per rank")
        if self.steps_per_generation != 1:
            raise ValueError(f"steps_per_generation must be 1 (got {self.steps_per_generation}): GDSO's CE and pairwise "
                             "terms need every candidate of a prompt in one loss")


class PromptGroupSampler(Sampler):
    """Yields whole prompts: per prompt M candidate indices, each repeated G times; ``prompts_per_batch`` prompts per
    generation batch, each batch repeated ``repeat_count`` times (TRL reuses a generation for num_iterations)."""

    def __init__(self, groups: list[list[int]], prompts_per_batch: int, num_candidates: int, num_generations: int,
                 repeat_count: int, seed: int, shuffle: bool = True):
        self.groups = [g for g in groups if len(g) >= num_candidates]
        if len(self.groups) < prompts_per_batch:
            raise ValueError(f"train_dataset: {len(self.groups)} prompts have {num_candidates} candidates, fewer than "
                             f"the {prompts_per_batch} a generation batch needs")
        self.per_batch, self.m, self.g = prompts_per_batch, num_candidates, num_generations
        self.repeat, self.seed, self.shuffle, self.epoch = repeat_count, seed, shuffle, 0

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        order = torch.randperm(len(self.groups), generator=gen).tolist() if self.shuffle else list(range(len(self.groups)))
        for start in range(0, len(order) - self.per_batch + 1, self.per_batch):
            batch = []
            for gi in order[start:start + self.per_batch]:
                group = self.groups[gi]
                pick = sorted(torch.randperm(len(group), generator=gen)[:self.m].tolist()) if self.shuffle else range(self.m)
                batch += [group[i] for i in pick for _ in range(self.g)]
            for _ in range(self.repeat):
                yield from batch

    def __len__(self) -> int:
        return (len(self.groups) // self.per_batch) * self.per_batch * self.m * self.g * self.repeat


def _gdso_reward_placeholder(prompts, completions, **kwargs):
    """Never called: GDSOTrainer computes the distribution reward itself."""
    raise RuntimeError("GDSOTrainer computes its rewards from the score distributions")


def rubric_prompt_ids(rm: RewardModel, prompts: Sequence[str], dimensions: Sequence[str],
                      image_grid_thw: torch.Tensor) -> list[list[int]]:
    """The teacher's rubric prompt per row (chat up to the assistant turn, then the reasoning prefix), with each
    image's placeholder run expanded to its token count: the prompt ``RewardModel.judge`` samples after."""
    n_tokens = rm.geometry.tokens(image_grid_thw).tolist()
    texts = [rm.templates.chat(p, d, rm.bins.min, rm.bins.max, n, reasoning=True)
             for p, d, n in zip(prompts, dimensions, n_tokens)]
    return [rm.tokenizer.encode(t, add_special_tokens=False) for t in texts]


def scoring_sequences(rm: RewardModel, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]]
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded rows prompt + completion + tail, as ``RewardModel.judge`` lays them out: the tail is the scoring
    suffix after a completion that ended with the end-of-turn, else the end-of-turn (forced) and then the suffix.
    Returns (ids [B, L], attention mask, completion mask [B, L] bool); q is read at the last position."""
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"prompt_ids has {len(prompt_ids)} rows but completion_ids has {len(completion_ids)}")
    eot, suffix = rm.end_of_turn_id, rm.score_suffix_ids
    bodies = [list(c) for c in completion_ids]
    tails = [suffix if body and body[-1] == eot else [eot] + suffix for body in bodies]
    return rm.left_pad_marked([list(p) for p in prompt_ids], bodies, tails)


class _TokenizerWithImageToken:
    """The reward model's tokenizer plus ``image_token_id``, which TRL's vLLM server path reads from a processor to
    place the server's image features on the prompt's runs of image placeholders."""

    def __init__(self, tokenizer, image_token_id: int):
        self.tokenizer, self.image_token_id = tokenizer, image_token_id

    def __getattr__(self, name: str):
        return getattr(self.tokenizer, name)


class GDSOTrainer(GRPOTrainer):
    """``GDSOTrainer(reward_model, args=GDSOConfig(...), train_dataset=...)``: see the module docstring.
    ``reward_model`` is a ``zrcore.models.RewardModel`` (the judge being trained).

    Of TRL's methods it overrides ``_get_train_sampler`` (whole prompts per rank), ``_tokenize_prompts`` (the rubric
    prompt and image inputs the judge uses, for TRL's ``_generate``), ``_generate_and_score_completions`` (the
    distribution reward and the extra batch fields) and ``compute_loss`` (TRL's ``_compute_loss`` plus the CE and
    pairwise terms)."""

    def __init__(self, reward_model: RewardModel, args: GDSOConfig, train_dataset, **kwargs):
        if not isinstance(args, GDSOConfig):
            raise TypeError(f"args must be a GDSOConfig, got {type(args).__name__}")
        missing = [c for c in REQUIRED_COLUMNS if c not in train_dataset.column_names]
        if missing:
            raise ValueError(f"train_dataset lacks the columns {missing} (needs {list(REQUIRED_COLUMNS)})")
        check_scores(train_dataset["score"], reward_model.bins, "train_dataset score")  # no NaN, none off the scale
        for name in ("tools", "rollout_func", "environment_factory"):
            if kwargs.get(name) is not None:
                raise ValueError(f"{name} is not supported by GDSOTrainer: a trace is the judge's reasoning on its "
                                 "rubric prompt, followed by the forced scoring suffix")
        self.reward_model = rm = reward_model
        bins = rm.bins
        apply_zrcore(rm.model, bins=bins, score_token_ids=rm.score_tokens(torch.arange(len(bins))))
        # a trace ends at the end-of-turn, as in judge: TRL stops at every eos id the generation config declares
        gen = rm.model.generation_config
        eos = [] if gen.eos_token_id is None else [gen.eos_token_id] if isinstance(gen.eos_token_id, int) \
            else list(gen.eos_token_id)
        if rm.end_of_turn_id not in eos:
            gen.eos_token_id = [rm.end_of_turn_id, *eos]
        super().__init__(model=rm.model, reward_funcs=[_gdso_reward_placeholder], args=args,
                         train_dataset=train_dataset, processing_class=rm.tokenizer, **kwargs)
        if self.use_vllm and getattr(self.vllm_generation.processing_class, "image_token_id", None) is None:
            self.vllm_generation.processing_class = _TokenizerWithImageToken(rm.tokenizer, rm.image_pad_id)
        if not self.use_vllm:  # as judge: no vision placeholders or chat markers inside a trace
            suppress = sorted(set(self.generation_kwargs.get("suppress_tokens") or []) | set(rm.suppressed_ids))
            self.generation_kwargs["suppress_tokens"] = suppress
            self.generation_config.suppress_tokens = suppress
        self._rollout_calls = 0
        self._zr_image_inputs: dict | None = None

    # ---- data ----------------------------------------------------------------------------------------------------
    def _get_train_sampler(self, dataset=None) -> Sampler:
        dataset = dataset if dataset is not None else self.train_dataset
        groups: dict = defaultdict(list)
        for i, (pid, dim) in enumerate(zip(dataset["prompt_id"], dataset["dimension"])):
            groups[(pid, dim)].append(i)
        a = self.args
        return PromptGroupSampler(list(groups.values()), a.generation_batch_size // (a.num_candidates * a.num_generations),
                                  a.num_candidates, a.num_generations, self.num_iterations * a.steps_per_generation,
                                  a.seed, self.shuffle_dataset)

    # ---- rollouts and rewards -------------------------------------------------------------------------------------
    def _tokenize_prompts(self, prompts: list) -> tuple[list[list[int]], list[list], dict]:
        """TRL's hook for prompt tokenization, on GDSO rows ({"prompt", "image", "dimension"} each): the rubric prompt
        ids, the images (one per row, for vLLM) and the image inputs (for transformers ``generate``)."""
        rm = self.reward_model
        images = load_images([p["image"] for p in prompts])
        img = rm.image_inputs(images)
        prompt_ids = rubric_prompt_ids(rm, [p["prompt"] for p in prompts], [p["dimension"] for p in prompts],
                                       img["image_grid_thw"])
        self._zr_image_inputs = img  # reused for the scoring forward and the loss
        fields = {"pixel_values": img["pixel_values"], "image_grid_thw": img["image_grid_thw"],
                  "mm_token_type_ids": [[int(t == rm.image_pad_id) for t in ids] for ids in prompt_ids]}
        return prompt_ids, [[im] for im in images], fields

    @torch.no_grad()
    def _generate_and_score_completions(self, inputs: list[dict]) -> dict:
        a, rm = self.args, self.reward_model
        g, m = self.num_generations, a.num_candidates
        device = self.accelerator.device
        rows = inputs[::g]  # one per candidate: the sampler repeats each G times, contiguously
        p = len(rows) // m
        if p * m * g != len(inputs):
            raise ValueError(f"a generation batch of {len(inputs)} rows is not whole prompts of {m} x {g}")
        if a.sampler == "judge":
            batch, mean = self._judged(inputs, rows, device)
        else:
            batch, mean = self._sampled(inputs, device)
        mean = mean.float().view(p, m, g).to(device)
        scores = torch.tensor([float(r["score"]) for r in rows], dtype=torch.float32).view(p, m).to(device)
        rewards = losses.gdso_rewards(mean, scores, score_range=rm.bins.range, lambda_pt=a.lambda_pt,
                                      lambda_pw=a.lambda_pw, include_ties=a.include_ties)
        adv = losses.group_advantages(rewards, eps=a.adv_eps, scale=a.scale_rewards)
        batch["advantages"] = adv.reshape(-1).float()
        batch["num_items_in_batch"] = self.accelerator.gather(batch["completion_mask"].sum()).sum()
        batch["zr_row"] = torch.arange(len(inputs), device=device)
        batch["zr_scores"] = scores.repeat_interleave(g, 1).reshape(-1)  # per row, for reordering
        batch["zr_reward_mean"] = mean.reshape(-1)  # the expected scores the rewards came from
        self._policy_logps(batch)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["reward"].append(self.accelerator.gather(rewards.mean()).mean().item())
        return batch

    def _judged(self, inputs: list[dict], rows: list[dict], device) -> tuple[dict, torch.Tensor]:
        """sampler="judge": RewardModel.judge samples (seeded per row) and scores; (TRL batch, expected scores)."""
        a, rm, g = self.args, self.reward_model, self.num_generations
        first = self.accelerator.process_index * len(inputs)  # this process's first row of the call
        seeds = [step_seed(a.seed, self._rollout_calls, first + i) for i in range(len(inputs))]
        self._rollout_calls += 1
        was = rm.training
        rm.eval()
        j = rm.judge([r["prompt"] for r in rows], [r["image"] for r in rows], [r["dimension"] for r in rows],
                     num_samples=g, max_reasoning_tokens=a.max_completion_length, temperature=a.temperature,
                     seeds=seeds)
        rm.train(was)
        batch = self._trl_batch(j, device)
        batch["zr_sequences"], batch["zr_attention"] = j.sequences.to(device), j.attention_mask.to(device)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["completions/mean_length"].append(float(batch["completion_mask"].sum(1).float().mean()))
        return batch, j.distribution.mean

    def _sampled(self, inputs: list[dict], device) -> tuple[dict, torch.Tensor]:
        """sampler="trl": TRL's ``_generate`` samples (vLLM or transformers), then one no-grad forward of the patched
        model over prompt + completion + tail reads q; (TRL batch, expected scores)."""
        rm = self.reward_model
        items = [{"prompt": x["prompt"], "image": x["image"], "dimension": x["dimension"]} for x in inputs]
        prompt_list, completion_list, _, _, sampling_list, _, _, _ = self._generate(items)
        img, self._zr_image_inputs = self._zr_image_inputs, None
        bad = [r for r, ids in enumerate(completion_list) if rm.image_pad_id in ids]
        if bad:
            raise ValueError(f"completions of rows {bad} contain the image placeholder (id {rm.image_pad_id}), which "
                             "the image inputs cannot match: transformers generation suppresses it, vLLM's sampling "
                             "must too (e.g. through generation_kwargs)")
        pad_id, multiple = self._tokenizer.pad_token_id, self.pad_to_multiple_of
        prompt_ids = pad([torch.tensor(x) for x in prompt_list], pad_id, "left", multiple).to(device)
        prompt_mask = pad([torch.ones(len(x), dtype=torch.long) for x in prompt_list], 0, "left", multiple).to(device)
        completion_ids = pad([torch.tensor(x, dtype=torch.long) for x in completion_list], pad_id, "right",
                             multiple).to(device)
        completion_mask = pad([torch.ones(len(x), dtype=torch.long) for x in completion_list], 0, "right",
                              multiple).to(device)
        if self.mask_truncated_completions:  # as TRL: a cut trace takes no part in the policy loss
            ends = {*self.eos_token_ids, pad_id}
            cut = torch.tensor([not x or x[-1] not in ends for x in completion_list], device=device)
            completion_mask = completion_mask * (~cut).unsqueeze(1).int()
        batch = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
                 "completion_mask": completion_mask,
                 "pixel_values": img["pixel_values"].to(device), "image_grid_thw": img["image_grid_thw"].to(device),
                 "num_images": [1] * len(inputs),
                 "mm_token_type_ids": (torch.cat([prompt_ids, completion_ids], 1) == rm.image_pad_id).int()}
        if sampling_list is not None:  # vLLM's log-probs of the sampled tokens (None -> NaN, as TRL)
            rows = [torch.tensor([math.nan if x is None else x for x in lp], dtype=torch.float32) for lp in sampling_list]
            batch["sampling_per_token_logps"] = pad(rows, 0.0, "right", multiple).to(device)
        seqs, att, _ = scoring_sequences(rm, prompt_list, completion_list)
        batch["zr_sequences"], batch["zr_attention"] = seqs.to(device), att.to(device)
        q = self._score(batch["zr_sequences"], batch["zr_attention"], img)
        return batch, q.mean

    def _score(self, sequences: torch.Tensor, attention_mask: torch.Tensor, image_inputs: dict) -> ScoreDistribution:
        """q at the last position: one no-grad forward of the patched model, in eval mode and without
        checkpointing (as judge scores)."""
        model, rm = self.model, self.reward_model
        was = model.training
        model.eval()
        try:
            with torch.no_grad(), disable_gradient_checkpointing(model, self.args.gradient_checkpointing_kwargs), \
                    self.accelerator.autocast():
                return model(**rm.tensor_inputs(sequences, attention_mask, image_inputs), score_positions=-1)
        finally:
            model.train(was)

    def _policy_logps(self, batch: dict) -> None:
        """The old, reference and vLLM importance-sampling fields of TRL's loss, under TRL's conditions."""
        args, kwargs = self._logps_args(batch)
        kwargs["batch_size"] = self.args.per_device_train_batch_size if self.model.training \
            else self.args.per_device_eval_batch_size
        correct = self.use_vllm and self.vllm_importance_sampling_correction and "sampling_per_token_logps" in batch
        generate_every = self.args.steps_per_generation * self.num_iterations
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            if self.args.gradient_accumulation_steps % generate_every != 0 or correct:
                batch["old_per_token_logps"] = self._get_per_token_logps_and_entropies(self.model, *args, **kwargs)[0]
            if correct:
                batch["importance_sampling_ratio"] = self._importance_sampling_ratio(
                    batch["old_per_token_logps"], batch["sampling_per_token_logps"], batch["completion_mask"])
                self._log_sampling_mismatch(batch)
            if self.beta != 0.0:
                ref = self.ref_model if self.ref_model is not None else self.model
                batch["ref_per_token_logps"] = self._get_per_token_logps_and_entropies(ref, *args, **kwargs)[0]

    def _log_sampling_mismatch(self, batch: dict) -> None:
        """TRL's ``sampling/*`` metrics: |old - vLLM| log-prob gap (mean, max) and the ratio (min, mean, max)."""
        mode = "train" if self.model.training else "eval"
        gather, device = self.accelerator.gather, self.accelerator.device
        mask = batch["completion_mask"].bool()
        gap = (batch["old_per_token_logps"] - batch["sampling_per_token_logps"]).abs()[mask]
        gap = gap[~torch.isnan(gap)]
        ratio = batch["importance_sampling_ratio"]
        per_sequence = self.vllm_importance_sampling_mode in ("sequence_mask", "sequence_truncate")
        ratio = ratio.flatten() if per_sequence else ratio[mask]

        def stat(x: torch.Tensor, fn) -> torch.Tensor:
            return gather(fn(x) if x.numel() else torch.zeros((), device=device))

        metrics = self._metrics[mode]
        metrics["sampling/sampling_logp_difference/mean"].append(stat(gap, torch.mean).mean().item())
        metrics["sampling/sampling_logp_difference/max"].append(stat(gap, torch.max).max().item())
        metrics["sampling/importance_sampling_ratio/min"].append(nanmin(stat(ratio, torch.min)).item())
        metrics["sampling/importance_sampling_ratio/mean"].append(stat(ratio, torch.mean).nanmean().item())
        metrics["sampling/importance_sampling_ratio/max"].append(nanmax(stat(ratio, torch.max)).item())

    def _importance_sampling_ratio(self, old: torch.Tensor, sampling: torch.Tensor, mask: torch.Tensor
                                   ) -> torch.Tensor:
        """TRL's vLLM importance-sampling correction (``vllm_importance_sampling_mode`` and its clips): exp(old -
        sampling) per token or summed per sequence, truncated or masked outside [clip_min, clip_max]."""
        mode, lo, hi = (self.vllm_importance_sampling_mode, self.vllm_importance_sampling_clip_min,
                        self.vllm_importance_sampling_clip_max)
        diff = torch.nan_to_num((old - sampling) * mask, nan=0.0)  # an unscored token gets ratio 1
        if mode in ("sequence_mask", "sequence_truncate"):
            diff = diff.sum(dim=-1, keepdim=True)
        ratio = torch.exp(diff)
        if mode in ("sequence_truncate", "token_truncate"):
            return torch.clamp(ratio, min=lo, max=hi)
        if mode in ("sequence_mask", "token_mask"):
            lo = -math.inf if lo is None else lo
            hi = math.inf if hi is None else hi
            return ratio.masked_fill((ratio < lo) | (ratio > hi), 0.0)
        raise ValueError(f"vllm_importance_sampling_mode must be one of 'token_truncate', 'token_mask', "
                         f"'sequence_truncate', 'sequence_mask'; got {mode!r}")

    def _trl_batch(self, j, device) -> dict:
        """TRL's layout from a Judgement: left-padded prompt ids, right-padded completion (reasoning) ids, one image
        per row."""
        rm = self.reward_model
        pad_id = rm.tokenizer.pad_token_id
        comp = j.completion_mask
        rows = comp.shape[0]
        n_suffix = len(rm.score_suffix_ids)
        prompts, completions = [], []
        for r in range(rows):  # each row: [left padding | prompt | reasoning (+ end-of-turn) | forced tail]
            ids = j.sequences[r][j.attention_mask[r].bool()].tolist()
            n_reason = int(comp[r].sum())  # the sampled tokens, end-of-turn included when the trace ended
            n_prompt = len(ids) - n_reason - n_suffix - int(j.truncated[r])  # a cut trace's end-of-turn is forced
            prompts.append(ids[:n_prompt])
            completions.append(ids[n_prompt:n_prompt + n_reason])
        prompt_ids, prompt_mask = rm.left_pad(prompts)
        width = max(1, max(len(c) for c in completions))
        completion_ids = torch.full((rows, width), pad_id, dtype=torch.long)
        completion_mask = torch.zeros((rows, width), dtype=torch.long)
        for r, c in enumerate(completions):
            completion_ids[r, :len(c)] = torch.tensor(c, dtype=torch.long)
            completion_mask[r, :len(c)] = 1
        full = torch.cat([prompt_ids.cpu(), completion_ids], 1)
        return {"prompt_ids": prompt_ids.to(device), "prompt_mask": prompt_mask.to(device),
                "completion_ids": completion_ids.to(device), "completion_mask": completion_mask.to(device),
                "pixel_values": j.image_inputs["pixel_values"].to(device),
                "image_grid_thw": j.image_inputs["image_grid_thw"].to(device), "num_images": [1] * rows,
                "mm_token_type_ids": (full == rm.image_pad_id).int().to(device)}

    @staticmethod
    def _logps_args(batch: dict):
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
        mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
        return ((input_ids, mask, batch["completion_ids"].shape[1]),
                {"pixel_values": batch["pixel_values"], "image_grid_thw": batch["image_grid_thw"],
                 "num_images": batch["num_images"], "mm_token_type_ids": batch["mm_token_type_ids"]})

    # ---- loss ----------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs:
            raise ValueError("GDSOTrainer does not return outputs")
        policy = self._compute_loss(model, inputs)  # TRL's GRPO loss, already scaled for accumulation
        a = self.args
        if a.alpha_pt == 0 and a.alpha_pw == 0:
            return policy
        ce, pw = self.distribution_losses(model, inputs)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["loss/ce"].append(float(ce.detach()))
        self._metrics[mode]["loss/pairwise"].append(float(pw.detach()))
        normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        return policy + (a.alpha_pt * ce + a.alpha_pw * pw) / normalizer

    def distribution_losses(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_ce, L_pw) from q read, with gradients, after the forced suffix of each row (rows put back in order)."""
        a, rm = self.args, self.reward_model
        g, m = self.num_generations, a.num_candidates
        order = torch.argsort(inputs["zr_row"])
        sizes = inputs["image_grid_thw"].prod(-1).tolist()
        chunks = torch.split(inputs["pixel_values"], sizes)
        pixel_values = torch.cat([chunks[i] for i in order.tolist()])
        seqs, att = inputs["zr_sequences"][order], inputs["zr_attention"][order]
        q = model(input_ids=seqs, attention_mask=att, pixel_values=pixel_values,
                  image_grid_thw=inputs["image_grid_thw"][order], mm_token_type_ids=(seqs == rm.image_pad_id).int(),
                  score_positions=-1)
        p = seqs.shape[0] // (m * g)
        scores = inputs["zr_scores"][order].view(p, m, g)[..., 0]
        ce = losses.pointwise_ce(q.log_probs.view(p, m, g, -1), rm.bins.index(scores).to(scores.device))
        pw = pairwise_gap(q.mean.view(p, m, g), scores, score_range=rm.bins.range, include_ties=a.include_ties).loss
        return ce, pw

"""GDSO (paper eq. 13-14, Algorithm 1) on TRL's GRPO loop: ``GDSOConfig(GRPOConfig)`` and
``GDSOTrainer(GRPOTrainer)``. Imported through ``zrcore.integrations.trl``, which checks that TRL is installed.

Data: one row per candidate image, with the columns ``prompt`` (the text-to-image prompt), ``image``, ``score``
(human score on the rubric scale), ``dimension`` (rubric key) and ``prompt_id`` (candidates of one prompt share it).
The sampler yields whole prompts: ``num_candidates`` (M) candidates, each repeated ``num_generations`` (G) times,
contiguously, so every candidate of a prompt lands on one rank and in one loss.

Per generation batch the trainer samples G reasoning traces per candidate with ``RewardModel.judge`` (the scoring
suffix forced after each trace), reads q, and folds the GDSO reward (eq. 13: lambda_pt r_pt + lambda_pw r_pw, from
the expected scores) into TRL's advantage (eq. 3, per candidate over its G samples). The loss is TRL's policy loss
plus alpha_pt L_ce (eq. 8) + alpha_pw L_pw (eq. 11, ``zrcore.ops.pairwise_gap``), both with gradients through q,
which the patched model (``zrcore.integrations.transformers``) reads at the score position through the fused op.
With lambda_pw = alpha_pt = alpha_pw = 0 it is TRL's GRPO with the pointwise reward.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch.utils.data import Sampler
from trl import GRPOConfig, GRPOTrainer

from zrcore import losses
from zrcore.data.records import check_scores
from zrcore.integrations.transformers import apply_zrcore
from zrcore.ops import pairwise_gap
from zrcore.seeding import step_seed

REQUIRED_COLUMNS = ("prompt", "image", "score", "dimension", "prompt_id")


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

    def __post_init__(self):
        super().__post_init__()
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


class GDSOTrainer(GRPOTrainer):
    """``GDSOTrainer(reward_model, args=GDSOConfig(...), train_dataset=...)``: see the module docstring.
    ``reward_model`` is a ``zrcore.models.RewardModel`` (the judge being trained)."""

    def __init__(self, reward_model, args: GDSOConfig, train_dataset, **kwargs):
        if not isinstance(args, GDSOConfig):
            raise TypeError(f"args must be a GDSOConfig, got {type(args).__name__}")
        missing = [c for c in REQUIRED_COLUMNS if c not in train_dataset.column_names]
        if missing:
            raise ValueError(f"train_dataset lacks the columns {missing} (needs {list(REQUIRED_COLUMNS)})")
        check_scores(train_dataset["score"], reward_model.bins, "train_dataset score")  # no NaN, none off the scale
        self.reward_model = reward_model
        bins = reward_model.bins
        apply_zrcore(reward_model.model, bins=bins, score_token_ids=reward_model.score_tokens(torch.arange(len(bins))))
        super().__init__(model=reward_model.model, reward_funcs=[_gdso_reward_placeholder], args=args,
                         train_dataset=train_dataset, processing_class=reward_model.tokenizer, **kwargs)
        self._rollout_calls = 0

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
    @torch.no_grad()
    def _generate_and_score_completions(self, inputs: list[dict]) -> dict:
        a, rm = self.args, self.reward_model
        g, m = self.num_generations, a.num_candidates
        device = self.accelerator.device
        rows = inputs[::g]  # one per candidate: the sampler repeats each G times, contiguously
        p = len(rows) // m
        if p * m * g != len(inputs):
            raise ValueError(f"a generation batch of {len(inputs)} rows is not whole prompts of {m} x {g}")
        first = self.accelerator.process_index * len(inputs)  # this process's first row of the call
        seeds = [step_seed(a.seed, self._rollout_calls, first + i) for i in range(len(inputs))]
        self._rollout_calls += 1
        was = rm.training
        rm.eval()
        j = rm.judge([r["prompt"] for r in rows], [r["image"] for r in rows], [r["dimension"] for r in rows],
                     num_samples=g, max_reasoning_tokens=a.max_completion_length, temperature=a.temperature,
                     seeds=seeds)
        rm.train(was)
        scores = torch.tensor([float(r["score"]) for r in rows], dtype=torch.float32).view(p, m).to(device)
        mean = j.distribution.mean.view(p, m, g).to(device)
        rewards = losses.gdso_rewards(mean, scores, score_range=rm.bins.range, lambda_pt=a.lambda_pt,
                                      lambda_pw=a.lambda_pw, include_ties=a.include_ties)
        adv = losses.group_advantages(rewards, scale=a.scale_rewards)
        batch = self._trl_batch(j, device)
        batch["advantages"] = adv.reshape(-1).float()
        batch["num_items_in_batch"] = self.accelerator.gather(batch["completion_mask"].sum()).sum()
        batch["zr_row"] = torch.arange(len(inputs), device=device)
        batch["zr_sequences"], batch["zr_attention"] = j.sequences.to(device), j.attention_mask.to(device)
        batch["zr_scores"] = scores.repeat_interleave(g, 1).reshape(-1)  # per row, for reordering
        batch["zr_reward_mean"] = mean.reshape(-1)  # the expected scores the rewards came from
        if self.num_iterations > 1 or self.beta != 0.0:
            args = self._logps_args(batch)
            if self.num_iterations > 1:
                batch["old_per_token_logps"] = self._get_per_token_logps_and_entropies(self.model, *args[0], **args[1])[0]
            if self.beta != 0.0:
                ref = self.ref_model if self.ref_model is not None else self.model
                batch["ref_per_token_logps"] = self._get_per_token_logps_and_entropies(ref, *args[0], **args[1])[0]
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["reward"].append(self.accelerator.gather(rewards.mean()).mean().item())
        self._metrics[mode]["completions/mean_length"].append(float(batch["completion_mask"].sum(1).float().mean()))
        return batch

    def _trl_batch(self, j, device) -> dict:
        """TRL's layout from a Judgement: left-padded prompt ids, right-padded completion (reasoning) ids, one image
        per row."""
        rm = self.reward_model
        pad = rm.tokenizer.pad_token_id
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
        completion_ids = torch.full((rows, width), pad, dtype=torch.long)
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

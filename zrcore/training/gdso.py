"""GDSO training of the reasoning teacher (Algorithm 1): rollouts with the current policy, K_gdso updates of
L_GDSO = L_GRPO + alpha_pt L_ce + alpha_pw L_pw per rollout batch, the reference policy reset every N_ref steps."""

from __future__ import annotations

import torch

from zrcore import losses
from zrcore.training import distributed as D
from zrcore.training.rollout import merge_judgements, policy_forward
from zrcore.training.trainer import Trainer, clone_frozen, step_seed


class GDSOTrainer(Trainer):
    eval_mode = "teacher"

    def __init__(self, cfg):
        if cfg.reward_from not in ("distribution", "text"):
            raise ValueError(f"reward_from must be 'distribution' or 'text', got {cfg.reward_from!r}")
        super().__init__(cfg)
        self.ref = clone_frozen(self.rm.model) if cfg.beta > 0 else None

    def eval_kwargs(self) -> dict:
        c = self.cfg
        return {"samples": c.eval_samples, "max_reasoning_tokens": c.max_reasoning_tokens, "temperature": c.temperature}

    def state_dict_extra(self) -> dict:
        return {"ref": self.ref.state_dict()} if self.ref is not None else {}

    def load_state_extra(self, state: dict) -> None:
        if self.ref is not None and "ref" in state:
            self.ref.load_state_dict(state["ref"])

    @torch.no_grad()
    def rollouts(self, groups: list, step: int):
        c = self.cfg
        judgements = []
        offset = self.rank * len(groups)
        for i, g in enumerate(groups):
            torch.manual_seed(step_seed(c.seed, step, offset + i))
            judgements.append(self.rm.judge([g.prompt] * len(g.records), g.images, g.dimension,
                                            num_samples=c.num_samples, max_reasoning_tokens=c.max_reasoning_tokens,
                                            temperature=c.temperature))
        return merge_judgements(judgements, self.rm.tokenizer.pad_token_id)

    def train_step(self, groups: list, step: int) -> dict:
        c = self.cfg
        local = D.shard(groups, self.rank, self.world)
        p, m, g = len(local), len(local[0].records), c.num_samples
        batch = self.rollouts(local, step)
        scores = torch.stack([grp.scores for grp in local])
        target = self.rm.bins.index(scores)
        with torch.no_grad():
            old_logps, _ = policy_forward(self.rm, self.rm.model, batch, c.temperature, with_distribution=False)
            ref_logps = (policy_forward(self.rm, self.ref, batch, c.temperature, with_distribution=False)[0]
                         if self.ref is not None else None)
        reward_mean = None
        if c.reward_from == "text":  # the score token sampled from q and parsed, instead of the expectation
            gen = torch.Generator().manual_seed(step_seed(c.seed, step, 10**6 + self.rank))
            idx = torch.multinomial(batch.distribution.probs.float().cpu(), 1, generator=gen).squeeze(-1)
            reward_mean = self.rm.bins.values[idx].view(p, m, g)
        metrics = {}
        for _ in range(c.updates_per_rollout):
            logps, dist = policy_forward(self.rm, self.rm.model, batch, c.temperature)
            out = losses.gdso_loss(
                logps, old_logps, batch.completion_mask, dist.mean.view(p, m, g),
                dist.log_probs.view(p, m, g, -1), scores, score_range=self.rm.bins.range, target=target,
                ref_logps=ref_logps, reward_mean=reward_mean, beta=c.beta, eps_low=c.eps_low, eps_high=c.eps_high,
                loss_type=c.loss_type, lambda_pt=c.lambda_pt, lambda_pw=c.lambda_pw, alpha_pt=c.alpha_pt,
                alpha_pw=c.alpha_pw, adv_scale=c.adv_scale, include_ties=c.include_ties,
                max_completion_length=c.max_reasoning_tokens)
            self.opt.zero_grad(set_to_none=True)
            out.total.backward()
            D.average_gradients(self.params, self.world)
            norm = torch.nn.utils.clip_grad_norm_(self.params, c.max_grad_norm)
            self.opt.step()
            metrics = {k: float(v) for k, v in out.metrics.items()} | {"loss/total": float(out.total.detach()),
                                                                       "grad_norm": float(norm)}
        self.sched.step()
        if self.ref is not None and (step + 1) % c.ref_reset_every == 0:
            self.ref.load_state_dict(self.rm.model.state_dict())
        metrics["rollout/tokens"] = float(batch.lengths.mean())
        metrics["rollout/truncated"] = float(batch.truncated.float().mean())
        return metrics

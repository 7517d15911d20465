"""TRL entry points (extra ``[trl]``).

``ZRewardFunction`` is a ``reward_funcs`` callable in TRL's signature: ``f(prompts, completions, **columns) ->
list[float]``. For each row it scores (text, image) with a student ``RewardModel`` on the rubric dimensions and
returns the expectation E_q[s] = sum_k s_k q_k averaged over the dimensions ("mean"), or mean_d (mu_d - kappa
sigma_d) ("pessimistic"). The text is the completion (e.g. a caption or a prompt written by the policy; default) or
the prompt; the image comes from the dataset column ``image`` (or the first of ``images``). It needs no TRL itself.

``GDSOConfig`` / ``GDSOTrainer`` (GDSO on TRL's GRPO loop; zrcore's own recipe classes are named apart:
``zrcore.training.config.GDSOTeacherConfig`` / ``zrcore.training.gdso.GDSOTeacherTrainer``) import TRL when first
used and raise an ImportError naming the extra when it is missing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zrcore.diffusion.reward import AGGREGATIONS, aggregate_reward


def _text(item) -> str:
    """A plain string, or the text of the last message of a conversation (string or content blocks)."""
    if isinstance(item, str):
        return item
    if isinstance(item, list) and item and isinstance(item[-1], dict):
        content = item[-1].get("content", "")
        if isinstance(content, str):
            return content
        return "".join(block.get("text", "") for block in content if isinstance(block, dict))
    raise TypeError(f"expected a string or a list of chat messages, got {type(item).__name__}")


class ZRewardFunction:
    """A TRL ``reward_funcs`` callable scoring each (text, image) row with a student ``RewardModel``.

    ``ZRewardFunction(rm, dimensions=("alignment",), aggregation="mean")`` is called by TRL as
    ``f(prompts, completions, image=[...], **other_columns)`` and returns one float per row: the expected score
    E_q[s] = sum_k s_k q_k of the model's distribution q over the rubric bins, combined over ``dimensions`` by
    ``aggregation``:

    - ``"mean"``: the mean over the dimensions; ``"weighted"``: weighted by ``weights`` (dimension -> weight);
      ``"min"``: the lowest dimension;
    - ``"pessimistic"``: mean_d (mu_d - kappa sigma_d), which penalises uncertain scores (a reward-hacking guard);
      ``kappa`` defaults to 1.0 there (as ``zrcore.integrations.diffusion.reward_fn``) and must stay unset (or 0)
      for the other aggregations.

    ``text`` picks what is scored against the image: the policy's ``"completion"`` (default; a caption, or a prompt
    the policy wrote) or the dataset's ``"prompt"``; chat messages are reduced to the last message's text. The image
    comes from the dataset column ``image`` (or the first of ``images``). Rows are scored ``batch_size`` at a time,
    without gradients. Errors (unknown dimension or aggregation, a missing image column, a length mismatch) name the
    argument.
    """

    def __init__(self, reward_model, dimensions: Sequence[str] = ("alignment",), aggregation: str = "mean",
                 kappa: float | None = None, text: str = "completion", batch_size: int = 16,
                 weights: dict[str, float] | None = None):
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {list(AGGREGATIONS)}, got {aggregation!r}")
        if kappa is None:  # the pessimistic default; other aggregations take no kappa
            kappa = 1.0 if aggregation == "pessimistic" else 0.0
        if text not in ("completion", "prompt"):
            raise ValueError(f"text must be 'completion' or 'prompt', got {text!r}")
        unknown = [d for d in dimensions if d not in reward_model.dimensions]
        if unknown or not dimensions:
            raise ValueError(f"dimensions {unknown or '[]'} are not rubric dimensions of the reward model "
                             f"({list(reward_model.dimensions)})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.rm, self.dimensions, self.aggregation = reward_model, tuple(dimensions), aggregation
        self.kappa, self.text, self.batch_size, self.weights = kappa, text, batch_size, weights
        self.__name__ = f"zrcore_{'_'.join(self.dimensions)}_{aggregation}"

    @staticmethod
    def _images(columns: dict, n: int) -> list:
        if "image" in columns and columns["image"] is not None:
            images = list(columns["image"])
        elif "images" in columns and columns["images"] is not None:
            images = [imgs[0] if isinstance(imgs, (list, tuple)) else imgs for imgs in columns["images"]]
        else:
            raise ValueError("ZRewardFunction needs the images: a dataset column 'image' (or 'images') passed by "
                             f"TRL as a keyword; got the columns {sorted(columns)}")
        if len(images) != n:
            raise ValueError(f"image column has {len(images)} entries for {n} completions")
        return images

    @torch.no_grad()
    def __call__(self, prompts: Sequence, completions: Sequence, **columns) -> list[float]:
        texts = [_text(t) for t in (completions if self.text == "completion" else prompts)]
        images = self._images(columns, len(texts))
        out = []
        for s in range(0, len(texts), self.batch_size):
            part = slice(s, s + self.batch_size)
            dists = {d: self.rm.score(texts[part], images[part], d) for d in self.dimensions}
            reward = aggregate_reward(dists, self.aggregation, weights=self.weights, kappa=self.kappa)
            out.extend(reward.float().cpu().tolist())
        return out


def __getattr__(name: str):
    if name in ("GDSOConfig", "GDSOTrainer"):
        try:
            import trl  # noqa: F401
        except ImportError as err:
            raise ImportError(f"zrcore.integrations.trl.{name} needs TRL: pip install 'zrcore[trl]'") from err
        from zrcore.integrations import _trl_gdso

        return getattr(_trl_gdso, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Rubric prompt templates (zrcore/models/rubrics.yaml, or a user's own file) and the Qwen chat layout."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml


@dataclass(frozen=True)
class RubricTemplates:
    system: str
    question: str
    reasoning_prefix: str
    score_suffix: str
    dimensions: dict  # key -> {"name": ..., "rubric": ...}

    @classmethod
    def load(cls, path: str | Path | None = None) -> RubricTemplates:
        text = (Path(path).read_text() if path is not None
                else resources.files("zrcore.models").joinpath("rubrics.yaml").read_text())
        data = yaml.safe_load(text)
        missing = [k for k in ("system", "question", "score_suffix", "dimensions") if k not in data]
        if missing:
            raise ValueError(f"rubric file {path or 'rubrics.yaml'} lacks the keys {missing}")
        for key, dim in data["dimensions"].items():
            if not isinstance(dim, dict) or "name" not in dim or "rubric" not in dim:
                raise ValueError(f"rubric file: dimension {key!r} needs 'name' and 'rubric'")
        return cls(data["system"], data["question"], data.get("reasoning_prefix", ""), data["score_suffix"],
                   dict(data["dimensions"]))

    def check_dimension(self, dimension: str) -> dict:
        if dimension not in self.dimensions:
            raise ValueError(f"unknown dimension {dimension!r}; this reward model knows {list(self.dimensions)}")
        return self.dimensions[dimension]

    def user_text(self, prompt: str, dimension: str, low: float, high: float) -> str:
        dim = self.check_dimension(dimension)
        return self.question.format(prompt=prompt, name=dim["name"], rubric=dim["rubric"], low=f"{low:g}",
                                    high=f"{high:g}")

    def chat(self, prompt: str, dimension: str, low: float, high: float, image_tokens: int,
             image_pad: str = "<|image_pad|>", reasoning: bool = False) -> str:
        """The chat text up to the assistant turn: the student's ends with the scoring suffix, the teacher's with
        the reasoning prefix (its reasoning is sampled next, then the suffix is appended)."""
        head = image_chat(self.user_text(prompt, dimension, low, high), image_tokens, image_pad, self.system)
        return head + (self.reasoning_prefix if reasoning else self.score_suffix.lstrip("\n"))


def image_chat(user_text: str, image_tokens: int, image_pad: str = "<|image_pad|>", system: str = "") -> str:
    """Qwen chat text up to the assistant turn: an optional system turn, then the image and ``user_text``."""
    vision = "<|vision_start|>" + image_pad * image_tokens + "<|vision_end|>"
    head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    return head + f"<|im_start|>user\n{vision}{user_text}<|im_end|>\n<|im_start|>assistant\n"

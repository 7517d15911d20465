"""RewardModel: a distributional reward model over a Hugging Face Qwen-VL ``*ForConditionalGeneration``.

Student mode (``score``): one batched forward (left padding); the hidden state at the scoring position goes to
``zrcore.ops.score_distribution`` with the LM head's K score rows, so the [B, T, V] logits are never formed.
Teacher mode (``judge``): G reasoning traces sampled with ``generate``, the scoring suffix appended (forced), and q
read after it, so a truncated trace still yields a distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image

from zrcore.bins import ScoreBins, ScoreDistribution
from zrcore.models.decoder import ScoreDecoder
from zrcore.models.logprobs import completion_logprobs
from zrcore.models.pixels import VisionGeometry, preprocess_pixels
from zrcore.models.templates import RubricTemplates
from zrcore.ops import score_distribution


class Judgement(NamedTuple):
    """Teacher output for B inputs x G samples (rows ordered input-major: row = b * G + g)."""

    sequences: torch.Tensor  # [B*G, L] left-padded: prompt + sampled reasoning + forced scoring suffix
    attention_mask: torch.Tensor  # [B*G, L]
    completion_mask: torch.Tensor  # [B*G, L] bool, True on the sampled reasoning tokens
    reasoning_ids: list  # B*G LongTensors (the sampled tokens, end-of-turn excluded)
    texts: list  # B*G decoded reasoning texts
    truncated: torch.Tensor  # [B*G] bool: the trace hit max_reasoning_tokens
    distribution: ScoreDistribution  # log_probs [B, G, K], mean [B, G], var [B, G]
    image_inputs: dict  # pixel_values / image_grid_thw for the B*G rows (to re-feed the sequences)


def load_images(images: Sequence) -> list[Image.Image]:
    """PIL images or paths -> RGB PIL images; a file that cannot be read raises naming its position and path."""
    out = []
    for i, img in enumerate(images):
        if isinstance(img, (str, Path)):
            try:
                with Image.open(img) as opened:
                    img = opened.convert("RGB")
            except (OSError, ValueError) as err:
                raise ValueError(f"images[{i}]: cannot read image file {str(img)!r}: {err}") from err
        elif isinstance(img, Image.Image):
            img = img.convert("RGB")
        else:
            raise TypeError(f"images[{i}] must be a PIL image or a file path, got {type(img).__name__}")
        out.append(img)
    return out


class RewardModel(torch.nn.Module):
    """See the module docstring. ``dimensions``: the rubric dimension keys the templates define."""

    def __init__(self, model, tokenizer, image_processor, bins: ScoreBins | None = None,
                 templates: RubricTemplates | None = None):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.bins = bins or ScoreBins.half_points()
        self.templates = templates or RubricTemplates.load()
        self.decoder = ScoreDecoder(tokenizer, self.bins)
        self.geometry = VisionGeometry.from_image_processor(image_processor)
        self.image_pad_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
        self.end_of_turn_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer needs a pad token")
        self._suffix_ids = tokenizer.encode(self.templates.score_suffix, add_special_tokens=False)
        # special tokens a reasoning trace must not contain (vision placeholders, chat markers), end-of-turn allowed
        self.suppressed_ids = sorted({i for i in tokenizer.all_special_ids if i != self.end_of_turn_id}
                                     | {tokenizer.convert_tokens_to_ids(t) for t in
                                        ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
                                        if t in tokenizer.get_vocab()})

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(self.templates.dimensions)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def lm_head(self) -> torch.nn.Module:
        return self.model.get_output_embeddings()

    # ---- loading -------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, bins: ScoreBins | None = None, templates: str | Path | None = None,
                        torch_dtype: torch.dtype | None = None, **kwargs) -> RewardModel:
        """A local checkpoint directory (model, tokenizer and image processor as saved by ``save_pretrained``)."""
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        path = Path(path)
        if not path.is_dir():
            raise ValueError(f"path {str(path)!r} is not a local checkpoint directory")
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        image_processor = AutoImageProcessor.from_pretrained(path, use_fast=False)
        tmpl = RubricTemplates.load(templates if templates is not None else
                                    (path / "rubrics.yaml" if (path / "rubrics.yaml").exists() else None))
        bins_file = path / "zrcore_bins.yaml"
        if bins is None and bins_file.exists():
            import yaml

            spec = yaml.safe_load(bins_file.read_text())
            bins = ScoreBins(spec["values"], spec["labels"])
        return cls(model, tokenizer, image_processor, bins=bins, templates=tmpl)

    def save_pretrained(self, path: str | Path) -> None:
        import yaml

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)
        (path / "zrcore_bins.yaml").write_text(yaml.safe_dump({"values": [float(v) for v in self.bins.values],
                                                               "labels": list(self.bins.labels)}))

    # ---- inputs --------------------------------------------------------------------------------------------------
    def _check(self, prompts, n_images: int, dimension: str) -> list[str]:
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if any(not isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be strings")
        if len(prompts) != n_images:
            raise ValueError(f"got {len(prompts)} prompts but {n_images} images: one prompt per image")
        self.templates.check_dimension(dimension)
        return prompts

    def image_inputs(self, images: Sequence) -> dict:
        """Official image processor on PIL images / paths -> pixel_values, image_grid_thw."""
        pil = load_images(images)
        feats = self.image_processor(images=pil, return_tensors="pt")
        return {"pixel_values": feats["pixel_values"], "image_grid_thw": feats["image_grid_thw"]}

    def _prompt_ids(self, prompts, grid_thw, dimension, reasoning: bool) -> list[list[int]]:
        n_tokens = self.geometry.tokens(grid_thw).tolist()
        texts = [self.templates.chat(p, dimension, self.bins.min, self.bins.max, n, reasoning=reasoning)
                 for p, n in zip(prompts, n_tokens)]
        return [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        length = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(seqs), length), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), length), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, length - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, length - len(s):] = 1
        return ids.to(self.device), mask.to(self.device)

    def model_inputs(self, seqs: list[list[int]], image_inputs: dict) -> dict:
        return self.tensor_inputs(*self._left_pad(seqs), image_inputs)

    def tensor_inputs(self, ids: torch.Tensor, mask: torch.Tensor, image_inputs: dict, model=None) -> dict:
        """Keyword inputs of the VLM for left-padded ids [B, L] and their images (``model``: rm.model or a copy
        of it, for the parameter dtype and device)."""
        param = next((model or self.model).parameters())
        return {"input_ids": ids, "attention_mask": mask,
                "pixel_values": image_inputs["pixel_values"].to(param.device, param.dtype),
                "image_grid_thw": image_inputs["image_grid_thw"].to(param.device),
                "mm_token_type_ids": (ids == self.image_pad_id).int()}

    def last_hidden(self, inputs: dict) -> torch.Tensor:
        """Hidden state at the last position [B, H], from the base model (no logits over the vocabulary)."""
        out = self.model.model(**inputs, use_cache=False)
        return out.last_hidden_state[:, -1]

    def distribution(self, hidden: torch.Tensor, impl: str = "auto") -> ScoreDistribution:
        head = self.lm_head
        return score_distribution(hidden, head.weight, self.decoder.token_ids.to(hidden.device),
                                  self.bins.values.to(hidden.device), bias=head.bias, impl=impl)

    # ---- student -------------------------------------------------------------------------------------------------
    def score(self, prompts, images: Sequence, dimension: str, impl: str = "auto") -> ScoreDistribution:
        """Student mode: q over the bins for each (prompt, image), one batched forward, no reasoning."""
        images = list(images)
        prompts = self._check(prompts, len(images), dimension)
        img = self.image_inputs(images)
        inputs = self.model_inputs(self._prompt_ids(prompts, img["image_grid_thw"], dimension, False), img)
        return self.distribution(self.last_hidden(inputs), impl=impl)

    def score_pixels(self, prompts, pixels: torch.Tensor, dimension: str, impl: str = "auto") -> ScoreDistribution:
        """Student mode on a float image tensor [B, 3, H, W] in [0, 1], differentiable w.r.t. the pixels."""
        if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4:
            raise ValueError(f"pixels must be a tensor [B, 3, H, W], got {getattr(pixels, 'shape', type(pixels))}")
        prompts = self._check(prompts, pixels.shape[0], dimension)
        pixel_values, grid = preprocess_pixels(pixels, self.geometry)
        img = {"pixel_values": pixel_values, "image_grid_thw": grid}
        inputs = self.model_inputs(self._prompt_ids(prompts, grid, dimension, False), img)
        return self.distribution(self.last_hidden(inputs), impl=impl)

    # ---- teacher -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_reasoning(self, prompts, images: Sequence, dimension: str, num_samples: int,
                         max_reasoning_tokens: int, temperature: float):
        """G sampled reasoning traces per input: (prompt id lists, image inputs, generated [B*G, T], truncated)."""
        images = list(images)
        prompts = self._check(prompts, len(images), dimension)
        if num_samples < 1 or max_reasoning_tokens < 1 or not temperature > 0:
            raise ValueError("num_samples and max_reasoning_tokens must be >= 1 and temperature > 0")
        img = self.image_inputs(images)
        prompt_ids = self._prompt_ids(prompts, img["image_grid_thw"], dimension, True)
        inputs = self.model_inputs(prompt_ids, img)
        out = self.model.generate(**inputs, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                  max_new_tokens=max_reasoning_tokens, num_return_sequences=num_samples,
                                  eos_token_id=self.end_of_turn_id, pad_token_id=self.tokenizer.pad_token_id,
                                  suppress_tokens=self.suppressed_ids, return_dict_in_generate=True,
                                  output_logits=True)
        generated = out.sequences[:, inputs["input_ids"].shape[1]:]
        return prompt_ids, img, generated, out.logits

    def judge(self, prompts, images: Sequence, dimension: str, num_samples: int = 4,
              max_reasoning_tokens: int = 64, temperature: float = 1.0, impl: str = "auto",
              return_generation_logits: bool = False):
        """Teacher mode (see module docstring). Returns a Judgement; with return_generation_logits also the
        per-step logits that generate sampled from (for checks)."""
        prompt_ids, img, generated, gen_logits = self.sample_reasoning(prompts, images, dimension, num_samples,
                                                                       max_reasoning_tokens, temperature)
        g = num_samples
        reasoning, truncated, seqs, spans = [], [], [], []
        for row in range(generated.shape[0]):
            toks = generated[row].tolist()
            cut = toks.index(self.end_of_turn_id) if self.end_of_turn_id in toks else None
            kept = toks[:cut] if cut is not None else toks
            truncated.append(cut is None)
            reasoning.append(torch.tensor(kept, dtype=torch.long))
            base = prompt_ids[row // g]
            seqs.append(base + kept + self._suffix_ids)
            spans.append((len(base), len(base) + len(kept)))
        rep = {"pixel_values": _repeat_images(img["pixel_values"], img["image_grid_thw"], g),
               "image_grid_thw": img["image_grid_thw"].repeat_interleave(g, dim=0)}
        inputs = self.model_inputs(seqs, rep)
        length = inputs["input_ids"].shape[1]
        comp = torch.zeros_like(inputs["input_ids"], dtype=torch.bool)
        for row, (s, e) in enumerate(spans):
            shift = length - len(seqs[row])
            comp[row, shift + s: shift + e] = True
        dist = self.distribution(self.last_hidden(inputs), impl=impl)
        b = len(prompt_ids)
        k = len(self.bins)
        dist = ScoreDistribution(dist.log_probs.view(b, g, k), dist.mean.view(b, g), dist.var.view(b, g))
        texts = self.tokenizer.batch_decode([r.tolist() for r in reasoning], skip_special_tokens=True)
        result = Judgement(inputs["input_ids"], inputs["attention_mask"], comp, reasoning, texts,
                           torch.tensor(truncated), dist, rep)
        return (result, gen_logits) if return_generation_logits else result

    def token_logprobs(self, sequences: torch.Tensor, attention_mask: torch.Tensor, image_inputs: dict,
                       completion_mask: torch.Tensor, temperature: float = 1.0, model=None) -> torch.Tensor:
        """log pi(y_t | y_<t) at temperature T for the positions of completion_mask ([B, L], 0 elsewhere), under
        ``model`` (default rm.model; a frozen reference copy works too). No [B, L, V] logits are formed."""
        model = model or self.model
        hidden = model.model(**self.tensor_inputs(sequences, attention_mask, image_inputs, model),
                             use_cache=False).last_hidden_state
        return completion_logprobs(hidden, sequences, completion_mask, model.get_output_embeddings(), temperature)


def _repeat_images(pixel_values: torch.Tensor, grid_thw: torch.Tensor, g: int) -> torch.Tensor:
    """Repeat each image's patch rows g times (images are stored back to back in pixel_values)."""
    sizes = grid_thw.prod(-1).tolist()
    chunks = torch.split(pixel_values, sizes, dim=0)
    return torch.cat([c for c in chunks for _ in range(g)], dim=0)

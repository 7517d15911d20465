"""RewardModel: a distributional reward model over a Hugging Face Qwen-VL ``*ForConditionalGeneration``.

It is one ``nn.Module`` and training reaches the network only through its methods:

- ``forward(sequences, attention_mask, image_inputs, completion_mask=None)``: one pass over left-padded
  sequences giving log pi(y_t | y_<t) on the completion positions and q at the last position;
- ``score`` / ``score_pixels``: student mode, the rubric prompt ends with the scoring suffix, one forward;
- ``judge``: teacher mode, G reasoning traces sampled by a rollout backend (HF ``generate`` by default), the scoring
  suffix appended (forced), and q read after it, so a truncated trace still yields a distribution;
- ``policy_forward(rollouts)`` and ``token_logprobs``: ``forward`` on a rollout batch;
- ``reasoned_inputs`` / ``text_inputs``: teacher-mode inputs around a given reasoning text, and plain image chats
  (pretraining on descriptions), for ``forward``; ``image_features``: the vision tower's tokens alone.

q = softmax(W_S h / T) over the K score rows W_S of the LM head (``zrcore.ops.score_distribution``): the [B, T, V]
logits are never formed. Under FSDP2 every entry point other than ``forward`` is registered with
``register_fsdp_forward_method`` (``fsdp_methods``), so sharded parameters are gathered for each call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image

from zrcore.bins import ScoreBins, ScoreDistribution
from zrcore.models.decoder import ScoreDecoder
from zrcore.models.pixels import VisionGeometry, preprocess_pixels
from zrcore.models.templates import RubricTemplates, image_chat
from zrcore.ops import score_distribution, token_logprobs


class PolicyOutput(NamedTuple):
    """``forward``'s result: completion token log-probs [B, L] (0 off the completion; None when not asked for)
    and q at the last position ([B]; None when not asked for)."""

    logps: torch.Tensor | None
    distribution: ScoreDistribution | None


class Judgement(NamedTuple):
    """Teacher output for B inputs x G samples (rows ordered input-major: row = b * G + g)."""

    sequences: torch.Tensor  # [B*G, L] left-padded: prompt + sampled reasoning + end-of-turn + scoring suffix
    attention_mask: torch.Tensor  # [B*G, L]
    completion_mask: torch.Tensor  # [B*G, L] bool, True on the sampled tokens: the reasoning and its end-of-turn
    reasoning_ids: list  # B*G LongTensors (the sampled tokens, end-of-turn excluded)
    texts: list  # B*G decoded reasoning texts
    truncated: torch.Tensor  # [B*G] bool: the trace hit max_reasoning_tokens
    distribution: ScoreDistribution  # log_probs [B, G, K], mean [B, G], var [B, G]
    image_inputs: dict  # pixel_values / image_grid_thw for the B*G rows (to re-feed the sequences)
    behaviour_logprobs: torch.Tensor  # [B*G, L] log-probs the sampler drew the completion tokens with (0 elsewhere)
    # with_logprobs: log pi(y_t | y_<t) / T of the completion from the forward that read q ([B*G, L], 0 elsewhere),
    # and log pi(score token k | sequence) / T over the full vocabulary at that last position ([B*G, K])
    logprobs: torch.Tensor | None = None
    score_logprobs: torch.Tensor | None = None

    def __repr__(self) -> str:
        b, g = self.distribution.mean.shape[:2]
        first = self.texts[0] if self.texts else ""
        first = first if len(first) <= 60 else first[:57] + "..."
        return (f"Judgement(B={b}, G={g}, mean={[round(v, 3) for v in self.distribution.mean.mean(1).tolist()][:4]}"
                f"{' ...' if b > 4 else ''}, truncated={int(self.truncated.sum())}/{b * g}, texts[0]={first!r})")


def load_images(images: Sequence) -> list[Image.Image]:
    """PIL images, paths, or lazy image sources (objects with ``open() -> PIL image``, e.g. the recipes' resized
    records) -> RGB PIL images; a file that cannot be read raises naming its position and path."""
    out = []
    for i, img in enumerate(images):
        if hasattr(img, "open") and not isinstance(img, Image.Image):
            img = img.open()
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


def _checkpoint_path(path: str | Path) -> str | Path:
    """A local checkpoint folder (checked for config.json, with a hint when the model sits in ``model/``), or a
    hub id ("org/name") left as a string for transformers."""
    local = Path(path)
    if local.is_dir():
        if not (local / "config.json").exists():
            hint = (f"; did you mean {str(local / 'model')!r} (a recipe's output_dir/model)?"
                    if (local / "model" / "config.json").exists() else ": not a saved reward model")
            raise ValueError(f"path {str(path)!r} has no config.json{hint}")
        return local
    text = str(path)
    if local.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1 or not text:
        raise ValueError(f"path {text!r} is not a checkpoint folder (nor a hub id 'org/name')")
    return text


def _side_file(path: str | Path, name: str) -> Path | None:
    """zrcore's file ``name`` beside a checkpoint (a local folder, or a hub repository's file), None when absent."""
    if isinstance(path, Path):
        return path / name if (path / name).exists() else None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(str(path), name))
    except Exception:  # absent from the repository, or offline: the checkpoint has none
        return None


def recorded_sampling(path: str | Path) -> dict:
    """How the checkpoint at ``path`` (a folder or a hub id) was trained to sample, from its zrcore_sampling.yaml
    (``samples``, ``max_reasoning_tokens``, ``temperature``, as training wrote them); {} when it has none. What
    ``RewardModel.from_pretrained`` puts in ``RewardModel.sampling``."""
    found = _side_file(_checkpoint_path(path), "zrcore_sampling.yaml")
    if found is None:
        return {}
    import yaml

    return dict(yaml.safe_load(found.read_text()) or {})


def _load_model(auto_cls, path, torch_dtype, kwargs: dict):
    """The transformers model of ``path``; missing or unexpected tensors, mismatched shapes and a model type
    without an image-text-to-text class are one-line errors."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report of missing keys is replaced by the error below
    try:
        model, info = auto_cls.from_pretrained(path, dtype=torch_dtype, output_loading_info=True, **kwargs)
    except ValueError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "Unrecognized configuration class" in first or "model type" in first.lower():
            import re

            found = re.search(r"\.(\w+)Config'", first)
            model_type = found.group(1) if found else "its model type"
            raise ValueError(f"{path}: {model_type} has no image-text-to-text (vision-language) model class in "
                             f"transformers: not a reward model checkpoint") from None
        raise ValueError(f"{path}: {first[:300]}") from None
    except RuntimeError as err:  # shapes that do not fit: load again, tolerating them, only to name the first
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        try:
            _, info = auto_cls.from_pretrained(path, dtype=torch_dtype, output_loading_info=True,
                                               ignore_mismatched_sizes=True, **kwargs)
            keys = sorted(info.get("mismatched_keys") or [], key=str)
            if keys:
                first = keys[0]
                name, shapes = (first[0], f": {list(first[1])} in the file, {list(first[2])} in the config"
                                ) if isinstance(first, tuple) and len(first) == 3 else (str(first), "")
                detail = f"{len(keys)} tensors of other shapes, e.g. {name!r}{shapes}"
        except Exception:  # noqa: BLE001 - the first error is the one reported
            pass
        raise ValueError(f"{path}: the checkpoint's weights do not fit its config ({detail})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
    if problems:
        kind, keys = next(iter(problems.items()))
        keys = sorted(k if isinstance(k, str) else k[0] for k in keys)
        raise ValueError(f"{path}: the checkpoint's weights do not match its config ({len(keys)} "
                         f"{kind.replace('_', ' ')}, e.g. {keys[0]!r}): refusing to fill them at random")
    return model


class RewardModel(torch.nn.Module):
    """See the module docstring. ``dimensions``: the rubric dimension keys the templates define."""

    fsdp_methods = ("score", "score_pixels", "judge", "policy_forward", "token_logprobs")

    def __init__(self, model, tokenizer, image_processor, bins: ScoreBins | None = None,
                 templates: RubricTemplates | None = None):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.bins = bins or ScoreBins.half_points()
        self.templates = templates or RubricTemplates.load()
        self.decoder = ScoreDecoder(tokenizer, self.bins)
        self._score_index: dict = {}  # device -> (token ids, values) there
        self._compiled_decode = None  # decode_step through torch.compile, made on first use
        self._image_memo: dict | None = None  # fingerprint -> [(patches, features)] of images seen, in _sharing_images
        self.geometry = VisionGeometry.from_image_processor(image_processor)
        self.image_pad_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
        self.end_of_turn_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer needs a pad token")
        self._suffix_ids = tokenizer.encode(self.templates.score_suffix, add_special_tokens=False)
        # how a teacher checkpoint was trained to reason (max_reasoning_tokens, temperature, samples): saved with it
        # (zrcore_sampling.yaml), so that evaluation samples as training did
        self.sampling: dict = {}
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
    def synced_generation(self) -> bool:
        """Sharded over several processes (FSDP2): every rank must make the same forward calls, so sampling keeps
        all ranks decoding until the last one is done."""
        import torch.distributed as dist
        from torch.distributed.fsdp import FSDPModule

        return isinstance(self, FSDPModule) and dist.is_initialized() and dist.get_world_size() > 1

    def shard_units(self) -> list[torch.nn.Module]:
        """The blocks FSDP2 shards one by one: every decoder layer and vision block (the RewardModel itself is the
        root unit holding the rest: embeddings, norms, merger, LM head)."""
        from zrcore.sharding import block_units

        units = block_units(self.model)
        if not units:
            raise ValueError(f"no decoder layers or vision blocks found in {type(self.model).__name__}")
        return units

    def vision_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters of the vision tower and its merger (the Qwen-VL ``visual`` module)."""
        params = [p for name, p in self.model.named_parameters() if ".visual." in f".{name}"]
        if not params:
            raise ValueError(f"no vision tower (a 'visual' module) found in {type(self.model).__name__}")
        return params

    @property
    def score_suffix_ids(self) -> list[int]:
        """The forced scoring suffix appended after a reasoning trace; q is read at its last position."""
        return list(self._suffix_ids)

    def score_tokens(self, bin_index: torch.Tensor) -> torch.Tensor:
        """The token ids of score bins (e.g. a sampled bin appended as the score token the policy emits)."""
        return self.score_index(bin_index.device)[0][bin_index]

    def score_index(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(score token ids [K], bin values [K]) on ``device``, copied there once: the op checks the ids' values once
        per tensor (a host read, on an accelerator a synchronisation), so a fresh copy per call would sync each time."""
        device = torch.device(device)
        cached = self._score_index.get(device)
        if cached is None:
            cached = self._score_index[device] = (self.decoder.token_ids.to(device), self.bins.values.to(device))
        return cached

    def set_attn_implementation(self, name: str) -> None:
        """The attention kernels of the underlying transformers model ("sdpa", "eager", "flash_attention_2")."""
        self.model.set_attn_implementation(name)

    def gradient_checkpointing_enable(self) -> None:
        """Hugging Face activation checkpointing of the decoder layers and vision blocks (non-reentrant)."""
        self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # ---- loading -------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, bins: ScoreBins | None = None, templates: str | Path | None = None,
                        torch_dtype: torch.dtype | str = torch.float32, weights: bool = True, **kwargs) -> RewardModel:
        """A checkpoint (model, tokenizer and image processor as saved by ``save_pretrained``): a local folder, or a
        Hugging Face hub id passed through to transformers (which downloads it, or fails offline with its own
        message). A checkpoint whose weights miss tensors or do not fit its config is refused, not filled at
        random. The weights are loaded in ``torch_dtype``, fp32 by default whatever dtype the checkpoint was saved in
        (fp32 master weights: bf16 ones would round fine-tuning updates away); pass ``torch.bfloat16`` for inference
        in 16 bits, or ``"auto"`` for the checkpoint's own dtype. ``weights=False``: the model built from its config
        alone, nothing read from the weight files (e.g. inside an empty-weights context, to be filled later)."""
        from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        path = _checkpoint_path(path)
        if weights:
            model = _load_model(AutoModelForImageTextToText, path, torch_dtype, kwargs)
        else:
            model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(path),
                                                            dtype=None if torch_dtype == "auto" else torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        image_processor = AutoImageProcessor.from_pretrained(path, use_fast=False)
        tmpl = RubricTemplates.load(templates if templates is not None else _side_file(path, "rubrics.yaml"))
        bins_file = _side_file(path, "zrcore_bins.yaml")
        if bins is None and bins_file is not None:
            import yaml

            spec = yaml.safe_load(bins_file.read_text())
            bins = ScoreBins(spec["values"], spec["labels"])
        rm = cls(model, tokenizer, image_processor, bins=bins, templates=tmpl)
        rm.sampling = recorded_sampling(path)
        return rm

    def save_pretrained(self, path: str | Path, state_dict: dict | None = None) -> None:
        """Hugging Face folder (safetensors) plus zrcore's score metadata. ``state_dict``: the model's full state
        (keys of ``self.model``), e.g. gathered from shards; default the module's own."""
        import yaml

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        # in config.json too, so that apply_zrcore(model) needs no other argument on a model loaded by transformers
        self.model.config.zrcore_score_head = {"bin_values": [float(v) for v in self.bins.values],
                                               "bin_labels": list(self.bins.labels),
                                               "score_token_ids": [int(i) for i in self.decoder.token_ids]}
        if state_dict is None:
            self.model.save_pretrained(path)
        else:  # transformers may empty the dict it is given: pass a copy
            self.model.save_pretrained(path, state_dict=dict(state_dict))
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)
        (path / "zrcore_bins.yaml").write_text(yaml.safe_dump({"values": [float(v) for v in self.bins.values],
                                                               "labels": list(self.bins.labels)}))
        if self.sampling:
            (path / "zrcore_sampling.yaml").write_text(yaml.safe_dump(dict(self.sampling)))

    # ---- inputs --------------------------------------------------------------------------------------------------
    def _check(self, prompts, n_images: int, dimension) -> tuple[list[str], list[str]]:
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if any(not isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be strings")
        if len(prompts) != n_images:
            raise ValueError(f"got {len(prompts)} prompts but {n_images} images: one prompt per image")
        dims = [dimension] * len(prompts) if isinstance(dimension, str) else list(dimension)
        if len(dims) != len(prompts):
            raise ValueError(f"dimension: got {len(dims)} dimensions for {len(prompts)} prompts (one, or one per prompt)")
        for d in set(dims):
            self.templates.check_dimension(d)
        return prompts, dims

    def image_inputs(self, images: Sequence) -> dict:
        """Official image processor on PIL images / paths -> pixel_values, image_grid_thw."""
        pil = load_images(images)
        feats = self.image_processor(images=pil, return_tensors="pt")
        return {"pixel_values": feats["pixel_values"], "image_grid_thw": feats["image_grid_thw"]}

    def image_features(self, image_inputs: dict) -> torch.Tensor:
        """The vision tower's merged output tokens of each image, [B, N, hidden] (what the language model reads in
        place of the image placeholders; the VLM's ``get_image_features``). The images must give equal N."""
        param = next(self.model.parameters())
        dtype = param.dtype if param.is_floating_point() else torch.float32
        out = self.model.get_image_features(image_inputs["pixel_values"].to(param.device, dtype),
                                            image_inputs["image_grid_thw"].to(param.device))
        tokens = out.pooler_output if hasattr(out, "pooler_output") else out
        if len({t.shape[0] for t in tokens}) > 1:
            raise ValueError("image_inputs: images of different token counts "
                             f"({sorted({t.shape[0] for t in tokens})}); resize them to one size")
        return torch.stack(list(tokens))

    def _prompt_ids(self, prompts, grid_thw, dimensions, reasoning: bool) -> list[list[int]]:
        n_tokens = self.geometry.tokens(grid_thw).tolist()
        dims = [dimensions] * len(prompts) if isinstance(dimensions, str) else dimensions
        texts = [self.templates.chat(p, d, self.bins.min, self.bins.max, n, reasoning=reasoning)
                 for p, d, n in zip(prompts, dims, n_tokens)]
        return [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]

    def left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token id lists -> left-padded ids [B, L] and attention mask, on the model's device."""
        length = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(seqs), length), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), length), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, length - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, length - len(s):] = 1
        return ids.to(self.device), mask.to(self.device)

    def left_pad_marked(self, heads: list[list[int]], bodies: list[list[int]], tails: list[list[int]]
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows head + body + tail, left-padded: ids [B, L], attention mask and a bool mask [B, L] that is True on
        each row's body (the tokens whose log-probs training reads)."""
        ids, mask = self.left_pad([h + b + t for h, b, t in zip(heads, bodies, tails)])
        marked = torch.zeros_like(mask, dtype=torch.bool)
        for row, (body, tail) in enumerate(zip(bodies, tails)):
            end = ids.shape[1] - len(tail)
            marked[row, end - len(body):end] = True
        return ids, mask, marked

    def tensor_inputs(self, ids: torch.Tensor, mask: torch.Tensor, image_inputs: dict) -> dict:
        """Keyword inputs of the VLM for left-padded ids [B, L] and their images."""
        param = next(self.model.parameters())
        dtype = param.dtype if param.is_floating_point() else torch.float32
        out = {"input_ids": ids.to(param.device), "attention_mask": mask.to(param.device),
               "image_grid_thw": image_inputs["image_grid_thw"].to(param.device),
               "mm_token_type_ids": (ids == self.image_pad_id).int().to(param.device)}
        if "pixel_values" in image_inputs:  # (absent: the caller passes the vision tower's output itself)
            out["pixel_values"] = image_inputs["pixel_values"].to(param.device, dtype)
        return out

    def score_inputs(self, prompts, images: Sequence, dimension) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Student-mode (sequences, attention_mask, image_inputs) for ``forward``: the rubric prompt ending with
        the scoring suffix. ``dimension``: one key, or one per prompt."""
        images = list(images)
        prompts, dims = self._check(prompts, len(images), dimension)
        img = self.image_inputs(images)
        ids, mask = self.left_pad(self._prompt_ids(prompts, img["image_grid_thw"], dims, False))
        return ids, mask, img

    def reasoned_inputs(self, prompts, images: Sequence, dimension, reasonings: Sequence[str]
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Teacher-mode (sequences, attention_mask, completion_mask, image_inputs) with a given reasoning text per
        input instead of a sampled one: the rubric prompt, the reasoning and its end-of-turn (which completion_mask
        marks, as ``judge`` marks a trace that ended), then the scoring suffix, so that ``forward`` reads q after it.
        For scoring a trace written elsewhere, or for studying what q does with a known description of the image."""
        images = list(images)
        prompts, dims = self._check(prompts, len(images), dimension)
        reasonings = list(reasonings)
        if len(reasonings) != len(prompts) or any(not isinstance(t, str) for t in reasonings):
            raise ValueError(f"reasonings: need one string per input ({len(prompts)}), got {len(reasonings)}")
        img = self.image_inputs(images)
        heads = self._prompt_ids(prompts, img["image_grid_thw"], dims, True)
        bodies = [self.tokenizer.encode(t, add_special_tokens=False) + [self.end_of_turn_id] for t in reasonings]
        ids, mask, comp = self.left_pad_marked(heads, bodies, [self._suffix_ids] * len(bodies))
        return ids, mask, comp, img

    def text_inputs(self, instructions: Sequence[str], images: Sequence | dict, answers: Sequence[str],
                    systems: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """(sequences, attention_mask, completion_mask, image_inputs) of plain image chats without the rubric:
        the image and an instruction in the user turn, ``answers`` (then the end of the turn) as the assistant's,
        which completion_mask marks. For training the VLM on image descriptions (``forward`` gives their
        log-probs). ``images``: the images, or their ``image_inputs`` already computed; ``systems``: a system turn
        per row ("" = none)."""
        img = images if isinstance(images, dict) else self.image_inputs(list(images))
        n_images = img["image_grid_thw"].shape[0]
        if not (len(instructions) == n_images == len(answers)):
            raise ValueError(f"got {len(instructions)} instructions, {n_images} images and {len(answers)} "
                             "answers: one each per row")
        n_tokens = self.geometry.tokens(img["image_grid_thw"]).tolist()
        systems = [""] * n_images if systems is None else list(systems)
        if len(systems) != n_images:
            raise ValueError(f"systems: need one per row ({n_images}), got {len(systems)}")
        heads = [self.tokenizer.encode(image_chat(t, n, system=s), add_special_tokens=False)
                 for t, n, s in zip(instructions, n_tokens, systems)]
        answers_ids = [self.tokenizer.encode(a, add_special_tokens=False) + [self.end_of_turn_id] for a in answers]
        ids, mask, comp = self.left_pad_marked(heads, answers_ids, [[] for _ in answers_ids])
        return ids, mask, comp, img

    # ---- the network ---------------------------------------------------------------------------------------------
    def _hidden(self, sequences, attention_mask, image_inputs) -> torch.Tensor:
        """Last hidden states [B, L, H] of the base model (no logits over the vocabulary). Rows that repeat an image
        (the G samples of a candidate) share one pass of the vision tower (``_image_outputs``)."""
        inputs = self.tensor_inputs(sequences, attention_mask, {"image_grid_thw": image_inputs["image_grid_thw"]})
        encoded = self._image_outputs(image_inputs["pixel_values"], image_inputs["image_grid_thw"])
        return self.model.model(**inputs, mm_encoder_outputs={"image": encoded}, use_cache=False).last_hidden_state

    def _image_outputs(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor):
        """The vision tower's output for images stored back to back, each distinct image encoded once.

        Runs of consecutive equal images (equal grid and patches, as ``judge`` lays out a candidate's G rows) are
        encoded once and their merged tokens (and Qwen3-VL's deepstack features) repeated to every row of the run,
        so that the language model reads exactly what it would read with one encoding per row: e_r = f(x_{u(r)})
        with u(r) the run of row r. The placeholders' mrope positions follow from ``image_grid_thw`` per row as
        before. The repetition is an index, so gradients of the rows sum into the shared encoding. Pixels that
        carry a gradient themselves are encoded row by row (equal values need not be one leaf). Inside
        ``_sharing_images`` (a ``judge`` call) an image encoded once is reused by later forwards of the call."""
        sizes = grid_thw.prod(-1).tolist()
        chunks = torch.split(pixel_values, sizes)
        index, first = [], []
        for row, chunk in enumerate(chunks):
            prev = first[-1] if first else None
            same = (prev is not None and not pixel_values.requires_grad and sizes[row] == sizes[prev]
                    and torch.equal(grid_thw[row], grid_thw[prev]) and torch.equal(chunk, chunks[prev]))
            if not same:
                first.append(row)
            index.append(len(first) - 1)
        memo = self._image_memo if not pixel_values.requires_grad else None
        feats: list = [None] * len(first)
        keys: list = [None] * len(first)
        if memo is not None:  # a fingerprint finds the candidate, an exact comparison confirms it
            for j, r in enumerate(first):
                keys[j] = (tuple(grid_thw[r].tolist()), float(chunks[r].double().sum()),
                           float(chunks[r][::7].double().square().sum()))
                feats[j] = next((f for c, f in memo.get(keys[j], ()) if torch.equal(c, chunks[r])), None)
        missing = [j for j, f in enumerate(feats) if f is None]
        if missing:
            rows = [first[j] for j in missing]
            x = pixel_values if len(rows) == len(chunks) else torch.cat([chunks[r] for r in rows])
            param = next(self.model.parameters())
            dtype = param.dtype if param.is_floating_point() else torch.float32
            out = self.model.get_image_features(x.to(param.device, dtype), grid_thw[rows].to(param.device),
                                                return_dict=True)
            deep = getattr(out, "deepstack_features", None)
            for m, j in enumerate(missing):
                feats[j] = (type(out), out.pooler_output[m], None if deep is None else [f[m] for f in deep])
                if memo is not None:
                    memo.setdefault(keys[j], []).append((chunks[first[j]], feats[j]))
            if len(first) == len(chunks):
                return out
        kind, deep = feats[0][0], feats[0][2]
        fields = {"pooler_output": tuple(feats[i][1] for i in index)}
        if deep is not None:
            fields["deepstack_features"] = [tuple(feats[i][2][layer] for i in index) for layer in range(len(deep))]
        return kind(**fields)

    @contextlib.contextmanager
    def _sharing_images(self):
        """Within: every forward reuses the vision tower's output of an image it has seen (no-grad use only)."""
        self._image_memo = {}
        try:
            yield
        finally:
            self._image_memo = None

    def _distribution(self, hidden: torch.Tensor, impl: str = "auto") -> ScoreDistribution:
        head = self.model.get_output_embeddings()
        weight = head.weight
        if hidden.dtype != weight.dtype:  # autocast: hidden in the compute dtype, fp32 master weights
            hidden = hidden.to(weight.dtype)
        token_ids, values = self.score_index(hidden.device)
        return score_distribution(hidden, weight, token_ids, values, bias=head.bias, impl=impl)

    def _policy(self, sequences, attention_mask, image_inputs, completion_mask=None, temperature: float = 1.0,
                with_distribution: bool = True, impl: str = "auto", score_position: int = -1) -> PolicyOutput:
        hidden = self._hidden(sequences, attention_mask, image_inputs)
        logps = None
        if completion_mask is not None:
            logps = completion_logprobs(hidden, sequences.to(hidden.device), completion_mask.to(hidden.device),
                                        self.model.get_output_embeddings(), temperature)
        dist = self._distribution(hidden[:, score_position], impl=impl) if with_distribution else None
        return PolicyOutput(logps, dist)

    def forward(self, sequences: torch.Tensor, attention_mask: torch.Tensor, image_inputs: dict,
                completion_mask: torch.Tensor | None = None, temperature: float = 1.0, with_distribution: bool = True,
                impl: str = "auto", score_position: int = -1) -> PolicyOutput:
        """One pass over left-padded ``sequences`` [B, L]: log pi(y_t | y_<t) / T on the positions of
        ``completion_mask`` (token t predicted from position t - 1; 0 elsewhere) and q at ``score_position`` (the
        last position by default; -2 when a sampled score token follows the scoring suffix)."""
        return self._policy(sequences, attention_mask, image_inputs, completion_mask, temperature, with_distribution,
                            impl, score_position)

    def policy_forward(self, rollouts, temperature: float = 1.0, with_distribution: bool = True) -> PolicyOutput:
        """``forward`` on a rollout batch (``zrcore.models.rollout.Rollouts`` or a ``Judgement``); q is read at
        the batch's ``score_position`` (the last position unless a score token was appended)."""
        return self._policy(rollouts.sequences, rollouts.attention_mask, rollouts.image_inputs,
                            rollouts.completion_mask, temperature, with_distribution,
                            score_position=getattr(rollouts, "score_position", -1))

    def token_logprobs(self, sequences: torch.Tensor, attention_mask: torch.Tensor, image_inputs: dict,
                       completion_mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """log pi(y_t | y_<t) at temperature T for the positions of completion_mask ([B, L], 0 elsewhere)."""
        return self._policy(sequences, attention_mask, image_inputs, completion_mask, temperature, False).logps

    # ---- decoding (rollout backends) -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def generating(self, unshard_once: bool = True):
        """The module set up for sampling, restored on exit: eval mode and no activation checkpointing (both only
        matter to a backward, which sampling never runs). Under FSDP2 with ``unshard_once`` every sharded unit is
        all-gathered once here and kept gathered (no reshard after each forward) until the exit reshards it, so
        a rollout costs one gather per unit instead of one per unit per decoded token. The root unit is left to
        the hooks of the entry point that called this (``judge``), which gathered it already. Under DDP and on one
        process the parameters are whole and nothing is gathered."""
        from torch.distributed.fsdp import FSDPModule

        from zrcore.sharding import reshards_after_forward

        was_training = self.training
        flag = "is_activation_checkpointing" if hasattr(type(self.model), "is_activation_checkpointing") \
            else "is_gradient_checkpointing"
        checkpointing = bool(getattr(self.model, flag, False))
        units = [m for m in self.modules() if isinstance(m, FSDPModule) and m is not self] if unshard_once else []
        saved = [reshards_after_forward(m) for m in units]
        self.eval()
        if checkpointing:
            (getattr(self.model, "activation_checkpointing_disable", None) or self.model.gradient_checkpointing_disable)()
        try:
            for unit in units:
                unit.set_reshard_after_forward(False, recurse=False)
            handles = [unit.unshard(async_op=True) for unit in units]
            for handle in handles:
                if handle is not None:
                    handle.wait()
            yield
        finally:
            for unit, keep in zip(units, saved):
                unit.reshard()
                unit.set_reshard_after_forward(keep, recurse=False)
            if checkpointing:
                self.gradient_checkpointing_enable()
            self.train(was_training)

    def prefill(self, ids: torch.Tensor, attention_mask: torch.Tensor, image_inputs: dict
                ) -> tuple[torch.Tensor, object, torch.Tensor]:
        """One forward over P left-padded prompts with a fresh KV cache: (logits at the last position [P, V],
        the filled ``DynamicCache``, the rows' mrope offsets delta [P]). A text token at index i among its row's
        real tokens sits at rotary position i + delta (all three mrope axes equal), which ``decode_step`` uses."""
        inputs = self.tensor_inputs(ids, attention_mask, {"image_grid_thw": image_inputs["image_grid_thw"]})
        encoded = self._image_outputs(image_inputs["pixel_values"], image_inputs["image_grid_thw"])
        out = self.model(**inputs, mm_encoder_outputs={"image": encoded}, use_cache=True, logits_to_keep=1)
        delta = getattr(self.model.model, "rope_deltas", None)
        delta = (torch.zeros(ids.shape[0], dtype=torch.long, device=out.logits.device) if delta is None
                 else delta.reshape(-1).to(out.logits.device))
        return out.logits[:, -1], out.cache, delta

    def decode_step(self, tokens: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor, cache,
                    compiled: bool = False) -> torch.Tensor:
        """Logits [B, V] after feeding one token per row ([B]) at rotary ``positions`` [B] into ``cache``;
        ``attention_mask`` covers the cache and the new token (a static cache: its full length). ``compiled``:
        through ``torch.compile`` (one graph per shape; meant for a static cache)."""
        fn = self._decode_logits
        if compiled:
            if self._compiled_decode is None:
                mode = "reduce-overhead" if tokens.device.type == "cuda" else None
                self._compiled_decode = torch.compile(self._decode_logits, mode=mode, dynamic=False)
            fn = self._compiled_decode
        return fn(tokens, attention_mask, positions, cache)

    def _decode_logits(self, tokens, attention_mask, positions, cache) -> torch.Tensor:
        pos = positions.view(1, -1, 1).expand(3, -1, 1)
        out = self.model(input_ids=tokens[:, None], attention_mask=attention_mask, position_ids=pos, cache=cache,
                         use_cache=True, logits_to_keep=1)
        return out.logits[:, -1]

    def score_token_logprobs(self, hidden: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """log pi(s_k | h) / T over the full vocabulary for each score token s_k, at hidden states [B, H]: [B, K]
        (the old log-prob of a score token appended after the suffix, read from the forward that gave q)."""
        head = self.model.get_output_embeddings()
        ids = self.score_index(hidden.device)[0]
        b, k = hidden.shape[0], ids.numel()
        lp = token_logprobs(hidden.repeat_interleave(k, 0), head.weight, ids.repeat(b), temperature, head.bias)
        return lp.view(b, k)

    # ---- student -------------------------------------------------------------------------------------------------
    def score(self, prompts, images: Sequence, dimension, impl: str = "auto") -> ScoreDistribution:
        """Student mode: q over the bins for each (prompt, image), one batched forward, no reasoning.
        ``dimension``: one key, or one per prompt."""
        return self._policy(*self.score_inputs(prompts, images, dimension), impl=impl).distribution

    def score_pixels(self, prompts, pixels: torch.Tensor, dimension, impl: str = "auto") -> ScoreDistribution:
        """Student mode on a float image tensor [B, 3, H, W] in [0, 1], differentiable w.r.t. the pixels."""
        if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4:
            raise ValueError(f"pixels must be a tensor [B, 3, H, W], got {getattr(pixels, 'shape', type(pixels))}")
        prompts, dims = self._check(prompts, pixels.shape[0], dimension)
        pixel_values, grid = preprocess_pixels(pixels, self.geometry)
        img = {"pixel_values": pixel_values, "image_grid_thw": grid}
        ids, mask = self.left_pad(self._prompt_ids(prompts, grid, dims, False))
        return self._policy(ids, mask, img, impl=impl).distribution

    # ---- teacher -------------------------------------------------------------------------------------------------
    def judge(self, prompts, images: Sequence, dimension, num_samples: int = 4, max_reasoning_tokens: int = 64,
              temperature: float = 1.0, impl: str = "auto", seeds: Sequence[int] | None = None,
              rollout_batch_size: int = 0, backend=None, decode: str = "dynamic", unshard_once: bool = True,
              with_logprobs: bool = False) -> Judgement:
        """Teacher mode (see module docstring) for B inputs x G samples.

        ``seeds``: one sampling seed per row (B*G, input-major), so that a row's trace does not depend on which
        rows share its batch or process; default drawn from torch's global generator. ``rollout_batch_size``: at
        most this many rows per sampling call (0 = all in one). ``backend``: a ``RolloutBackend`` (default
        ``NativeBackend(decode, unshard_once)``: each prompt prefilled once, see ``zrcore.models.rollout``).
        ``with_logprobs``: the scoring forward also returns the completion's log-probs at ``temperature`` and the
        score tokens' (``Judgement.logprobs``, ``score_logprobs``), the old-policy log-probs of a GDSO step."""
        from zrcore.models.rollout import NativeBackend, RolloutRequest

        images = list(images)
        prompts, dims = self._check(prompts, len(images), dimension)
        if num_samples < 1 or max_reasoning_tokens < 1 or not temperature > 0:
            raise ValueError("num_samples and max_reasoning_tokens must be >= 1 and temperature > 0")
        if rollout_batch_size < 0:
            raise ValueError(f"rollout_batch_size must be >= 1 (or 0 for one call), got {rollout_batch_size}")
        g = num_samples
        rows = len(prompts) * g
        if seeds is None:
            seeds = torch.randint(0, 2**62, (rows,)).tolist()
        seeds = [int(s) for s in seeds]
        if len(seeds) != rows:
            raise ValueError(f"seeds: need one per row (B*G = {rows}), got {len(seeds)}")
        img = self.image_inputs(images)
        prompt_ids = self._prompt_ids(prompts, img["image_grid_thw"], dims, True)
        rep = {"pixel_values": _repeat_images(img["pixel_values"], img["image_grid_thw"], g),
               "image_grid_thw": img["image_grid_thw"].repeat_interleave(g, dim=0)}
        row_ids = [prompt_ids[r // g] for r in range(rows)]
        request = RolloutRequest(row_ids, rep, seeds, max_reasoning_tokens, temperature, self.end_of_turn_id,
                                 self.tokenizer.pad_token_id, self.suppressed_ids, rollout_batch_size, group_size=g)
        with self._sharing_images():  # each candidate's image through the vision tower once in this call
            return self._judged(request, backend or NativeBackend(decode, unshard_once), prompts, rep, impl,
                                temperature, with_logprobs)

    def _judged(self, request, backend, prompts, rep: dict, impl: str, temperature: float, with_logprobs: bool
                ) -> Judgement:
        g, rows, row_ids = request.group_size, len(request.prompt_ids), request.prompt_ids
        sampled = backend.sample(self, request)
        reasoning, truncated, bodies, tails, behaviour = [], [], [], [], []
        for row in range(rows):
            toks = sampled.token_ids[row]
            ended = self.end_of_turn_id in toks
            kept = toks[:toks.index(self.end_of_turn_id)] if ended else toks
            truncated.append(not ended)
            reasoning.append(torch.tensor(kept, dtype=torch.long))
            # a sampled end-of-turn belongs to the trajectory; a cut trace gets it forced, outside the completion
            bodies.append(kept + [self.end_of_turn_id] if ended else kept)
            tails.append(self._suffix_ids if ended else [self.end_of_turn_id] + self._suffix_ids)
            behaviour.extend(sampled.logprobs[row][:len(bodies[-1])])
        ids, mask, comp = self.left_pad_marked(row_ids, bodies, tails)
        beh = torch.zeros(ids.shape, dtype=torch.float32)
        beh[comp.cpu()] = torch.tensor(behaviour, dtype=torch.float32)
        logps = score_logps = None
        with torch.no_grad():
            hidden = self._hidden(ids, mask, rep)
            dist = self._distribution(hidden[:, -1], impl=impl)
            if with_logprobs:
                logps = completion_logprobs(hidden, ids.to(hidden.device), comp.to(hidden.device),
                                            self.model.get_output_embeddings(), temperature)
                score_logps = self.score_token_logprobs(hidden[:, -1], temperature)
        b, k = len(prompts), len(self.bins)
        dist = ScoreDistribution(dist.log_probs.view(b, g, k), dist.mean.view(b, g), dist.var.view(b, g))
        texts = self.tokenizer.batch_decode([r.tolist() for r in reasoning], skip_special_tokens=True)
        return Judgement(ids, mask, comp, reasoning, texts, torch.tensor(truncated), dist, rep, beh.to(ids.device),
                         logps, score_logps)



def completion_logprobs(hidden: torch.Tensor, sequences: torch.Tensor, completion_mask: torch.Tensor, head,
                        temperature: float = 1.0) -> torch.Tensor:
    """[B, L] log-probs of the completion tokens (0 elsewhere) from the hidden states [B, L, H]: token t is
    predicted from position t - 1, and only those positions are projected onto the vocabulary by ``head``."""
    target = completion_mask.clone()
    target[:, 0] = False
    rows, cols = target.nonzero(as_tuple=True)
    lp = token_logprobs(hidden[rows, cols - 1], head.weight, sequences[rows, cols], temperature, head.bias)
    return torch.zeros(sequences.shape, dtype=lp.dtype, device=sequences.device).index_put((rows, cols), lp)

def _repeat_images(pixel_values: torch.Tensor, grid_thw: torch.Tensor, g: int) -> torch.Tensor:
    """Repeat each image's patch rows g times (images are stored back to back in pixel_values)."""
    sizes = grid_thw.prod(-1).tolist()
    chunks = torch.split(pixel_values, sizes, dim=0)
    return torch.cat([c for c in chunks for _ in range(g)], dim=0)

"""Score decoding: the tokenizer ids of the rubric's bin labels, and parsing a sampled score from text."""

from __future__ import annotations

import re

import torch

from zrcore.bins import ScoreBins


class ScoreDecoder:
    """Maps the bins' labels to token ids; each label must be exactly one token of ``tokenizer``.

    Qwen tokenizers add no BOS token, and " 4" (with a leading space) is a different token from "4": the labels are
    looked up without a leading space, so the scoring suffix of the prompt should end with the space.
    """

    def __init__(self, tokenizer, bins: ScoreBins):
        self.bins = bins
        ids = []
        for label in bins.labels:
            toks = tokenizer.encode(label, add_special_tokens=False)
            if len(toks) != 1:
                pieces = tokenizer.convert_ids_to_tokens(toks)
                raise ValueError(f"score label {label!r} is {len(toks)} tokens for this tokenizer ({pieces}); "
                                 "every label must be exactly one token: choose other labels or add them as tokens")
            ids.append(toks[0])
        if len(set(ids)) != len(ids):
            raise ValueError(f"score labels {bins.labels} map to repeated token ids {ids}")
        self.token_ids = torch.tensor(ids, dtype=torch.long)
        self._by_id = {tid: i for i, tid in enumerate(ids)}
        self._pattern = re.compile("|".join(re.escape(lab) for lab in sorted(bins.labels, key=len, reverse=True)))

    def __len__(self) -> int:
        return len(self.bins)

    def bin_of_token(self, token_id: int) -> int | None:
        """Bin index of a score token id, None for any other token."""
        return self._by_id.get(int(token_id))

    def parse(self, text: str) -> float | None:
        """The first bin label in ``text`` as a score (the "reward from parsed text" ablation); None if absent."""
        match = self._pattern.search(text)
        if match is None:
            return None
        return float(self.bins.values[self.bins.labels.index(match.group(0))])

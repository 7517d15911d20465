"""Data: records and groups, the AGIQA-3K loader, the synthetic rubric set, JSONL files of users' own data."""

from zrcore.data.agiqa import load_agiqa3k, mos_to_rubric, prompt_split
from zrcore.data.records import Group, Record, batch_groups, group_records, load_jsonl, same_prompt_pairs
from zrcore.data.synthetic import Defects, Scene, SyntheticRubric, render, true_scores

__all__ = ["Defects", "Group", "Record", "Scene", "SyntheticRubric", "batch_groups", "group_records",
           "load_agiqa3k", "load_jsonl", "mos_to_rubric", "prompt_split", "render", "same_prompt_pairs",
           "true_scores"]

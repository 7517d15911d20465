"""RISD and OPD sample as the teacher checkpoint was trained (its zrcore_sampling.yaml): the reasoning cap and the
temperature the run leaves unset are the teacher's, a value set in the run wins, and OPD's teacher log-probs are
taken at the teacher's own temperature."""

import pytest
import torch
import yaml

from tests.training.runs import TINY
from zrcore.models import build_tiny_reward_model
from zrcore.models.rollout import Rollouts
from zrcore.training.config import OPDConfig, RISDConfig, parse_config
from zrcore.training.student import OPDTrainer, RISDTrainer

TEACHER = {"samples": 1, "max_reasoning_tokens": 5, "temperature": 0.6}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> str:
    rm = build_tiny_reward_model("qwen2_vl", "teacher", seed=3)
    rm.sampling = dict(TEACHER)
    path = tmp_path_factory.mktemp("teacher") / "model"
    rm.save_pretrained(path)
    return str(path)


def _calls(monkeypatch, rm, name: str) -> list[dict]:
    """The keyword arguments (temperature as a keyword too) of every call of ``rm.<name>``."""
    calls = []
    original = getattr(rm, name)

    def spy(*args, **kwargs):
        if name == "policy_forward" and len(args) > 1:
            kwargs = kwargs | {"temperature": args[1]}
        calls.append(kwargs)
        return original(*args, **kwargs) if name != "policy_forward" else original(args[0], **kwargs)

    monkeypatch.setattr(rm, name, spy)
    return calls


@pytest.mark.parametrize("extra,cap,temperature", [([], 5, 0.6), (["--sampling.temperature", "0.9"], 5, 0.9),
                                                   (["--sampling.max_reasoning_tokens", "2"], 2, 0.6)])
def test_risd_samples_the_teacher_as_it_was_trained(tmp_path, monkeypatch, teacher, extra, cap, temperature):
    cfg = parse_config(RISDConfig, TINY + ["--teacher", teacher, "--output_dir", str(tmp_path), *extra])
    trainer = RISDTrainer(cfg)
    calls = _calls(monkeypatch, trainer.frozen["teacher"], "judge")
    trainer.train_step(0)
    assert [(c["max_reasoning_tokens"], c["temperature"]) for c in calls] == [(cap, temperature)]
    recorded = yaml.safe_load((tmp_path / "config.yaml").read_text())["sampling"]
    assert (recorded["max_reasoning_tokens"], recorded["temperature"]) == (cap, temperature)


def _appended(monkeypatch) -> list:
    """(batch before, batch after) of every ``Rollouts.with_score_tokens`` call."""
    seen = []
    original = Rollouts.with_score_tokens

    def spy(self, *args, **kwargs):
        seen.append((self, original(self, *args, **kwargs)))
        return seen[-1][1]

    monkeypatch.setattr(Rollouts, "with_score_tokens", spy)
    return seen


@pytest.mark.parametrize("extra,student_t", [([], 0.6), (["--sampling.temperature", "0.9"], 0.9)])
def test_opd_samples_as_the_teacher_and_scores_with_the_teachers_temperature(tmp_path, monkeypatch, teacher, extra,
                                                                            student_t):
    """Unset: the student samples with the teacher's cap and temperature. Set (--sampling.temperature 0.9): the
    student samples and is scored at 0.9, the teacher's log-probs stay at its own 0.6. The appended score token is
    drawn from the student's q at the student's temperature, its behaviour log-prob log q_T of the drawn bin."""
    trainer = OPDTrainer(parse_config(OPDConfig, TINY + ["--teacher", teacher, "--output_dir", str(tmp_path), *extra]))
    judged = _calls(monkeypatch, trainer.rm, "judge")
    student = _calls(monkeypatch, trainer.rm, "policy_forward")
    teacher_calls = _calls(monkeypatch, trainer.frozen["teacher"], "policy_forward")
    appended = _appended(monkeypatch)
    trainer.train_step(0)
    assert [(c["max_reasoning_tokens"], c["temperature"]) for c in judged] == [(5, student_t)]
    assert [c["temperature"] for c in student] == [student_t]
    assert [c["temperature"] for c in teacher_calls] == [0.6]
    before, after = appended[0]
    log_q_t = torch.log_softmax(before.distribution.log_probs.double() / student_t, -1)
    bin_of = {int(t): i for i, t in enumerate(trainer.rm.decoder.token_ids.tolist())}
    picked = torch.tensor([bin_of[int(t)] for t in after.sequences[:, -1]])
    torch.testing.assert_close(after.behaviour_logprobs[:, -1].double(), log_q_t.gather(1, picked[:, None]).squeeze(1),
                               atol=1e-5, rtol=1e-5)


def test_a_sweep_reuses_a_distilled_run_whose_sampling_came_from_the_teacher(tmp_path, teacher):
    """The cap and temperature filled from the teacher's record are recorded as resolved from the 0s given, so the
    same arguments match the finished run (a sweep reuses it), while another cap does not."""
    from zrcore.training.sweep import stale_reason

    args = TINY + ["--teacher", teacher]
    RISDTrainer(parse_config(RISDConfig, args + ["--output_dir", str(tmp_path)]))
    recorded = yaml.safe_load((tmp_path / "run_config.yaml").read_text())["sampling"]
    assert (recorded["max_reasoning_tokens"], recorded["temperature"]) == (5, 0.6)
    assert stale_reason(args, tmp_path) is None
    assert "max_reasoning_tokens" in stale_reason(args + ["--sampling.max_reasoning_tokens", "3"], tmp_path)

"""A run directory records its settings: a rerun with other training settings refuses in one line (naming the
first differing field and the flags), the same command resumes, --resume continues with the new settings and
--overwrite_output_dir starts afresh."""

from __future__ import annotations

import json

import pytest
import torch

from tests.training.test_loop import ToyLoop
from zrcore.training.cli_args import ConfigError
from zrcore.training.config import RunConfig
from zrcore.training.entry import run_main
from zrcore.training.run_dir import NOT_TRAINING, first_difference, settings


def cfg_for(tmp_path, **kw) -> RunConfig:
    return RunConfig(output_dir=str(tmp_path), progress=False, warmup_steps=1, **kw)


def lrs(tmp_path) -> list[float]:
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return [r["lr"] for r in rows if "lr" in r]


def test_a_rerun_with_other_settings_refuses_naming_the_field(tmp_path):
    ToyLoop(cfg_for(tmp_path, steps=3)).fit()
    recorded = (tmp_path / "run_config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"holds a run with steps=3, now steps=5: pass --overwrite_output_dir true"):
        ToyLoop(cfg_for(tmp_path, steps=5, lr=0.5))
    assert (tmp_path / "run_config.yaml").read_text() == recorded  # nothing rewritten by the refused run


def test_the_same_command_resumes_and_bookkeeping_changes_do_not_count(tmp_path):
    ToyLoop(cfg_for(tmp_path, steps=3)).fit()
    loop = ToyLoop(cfg_for(tmp_path, steps=3, log_every=2, eval_every=1))
    assert loop.run_action == "resume"


def test_resume_trains_the_next_step_at_the_new_schedule(tmp_path):
    ToyLoop(cfg_for(tmp_path, steps=2)).fit()
    loop = ToyLoop(cfg_for(tmp_path, steps=4, lr=0.5, resume=True))
    seen = []
    step = loop.train_step
    loop.train_step = lambda s: seen.append(loop.opt.param_groups[0]["lr"]) or step(s)
    loop.fit()
    from zrcore.training.loop import lr_lambda

    assert seen == [0.5 * lr_lambda(loop.cfg)(s) for s in (2, 3)]


def test_resume_continues_with_the_new_settings(tmp_path):
    ToyLoop(cfg_for(tmp_path, steps=3, lr_schedule="constant")).fit()
    loop = ToyLoop(cfg_for(tmp_path, steps=5, lr=0.5, lr_schedule="constant", resume=True))
    loop.fit()
    assert loop.step == 5 and lrs(tmp_path)[-2:] == [0.5, 0.5]  # the new learning rate, not the checkpoint's


def test_overwrite_starts_afresh(tmp_path):
    ToyLoop(cfg_for(tmp_path, steps=3)).fit()
    loop = ToyLoop(cfg_for(tmp_path, steps=2, lr=0.5, overwrite_output_dir=True))
    assert loop.run_action == "overwrite" and not (tmp_path / "checkpoint").exists()
    loop.fit()
    assert len(lrs(tmp_path)) == 2


def test_resume_without_a_checkpoint_and_both_flags_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="holds no checkpoint to resume"):
        ToyLoop(cfg_for(tmp_path, steps=2, resume=True))
    with pytest.raises(ValueError, match="exclude each other"):
        cfg_for(tmp_path, resume=True, overwrite_output_dir=True)


def test_another_model_in_the_checkpoint_is_one_line_not_a_dcp_dump(tmp_path):
    class Wider(ToyLoop):
        def __init__(self, cfg):
            super().__init__(cfg)
            model = torch.nn.Linear(3, 1)
            self.setup_optimizer(model, model)

        def train_step(self, step):
            loss = self.net(torch.ones(1, 3)).pow(2).sum()
            return self.optimizer_step(loss)

    ToyLoop(cfg_for(tmp_path, steps=2)).fit()
    with pytest.raises(ValueError, match="does not fit this model") as info:
        Wider(cfg_for(tmp_path, steps=2, resume=True)).fit()
    assert "\n" not in str(info.value)


def test_every_field_but_the_listed_bookkeeping_counts():
    from zrcore.training.config import GDSOTeacherConfig, GeneratorConfig

    for cls in (GDSOTeacherConfig, GeneratorConfig):
        flat = settings(cls())
        compared = [k for k in flat if k not in NOT_TRAINING]
        assert {"lr", "steps", "seed"} <= set(compared)
        for key in compared:  # a change of any compared field is found, a field added later included
            changed = dict(flat)
            changed[key] = "changed"
            assert first_difference(flat, changed)[0] == key


def test_the_refusal_is_one_line_with_exit_code_2(tmp_path, capsys):
    from zrcore.training.config import run_recipe

    ToyLoop(cfg_for(tmp_path, steps=2)).fit()
    with pytest.raises(SystemExit) as exit_info:
        run_recipe(RunConfig, ToyLoop, argv=["--output_dir", str(tmp_path), "--steps", "4", "--progress", "false"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "steps=2, now steps=4" in err and "Traceback" not in err
    assert run_main(lambda a: 7, []) == 7

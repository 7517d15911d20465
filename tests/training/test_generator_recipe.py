import json

import pytest
import torch

from zrcore.diffusion import reward_of_images
from zrcore.models import build_tiny_reward_model, load_reward_model
from zrcore.training.config import GeneratorConfig, parse_config
from zrcore.training.generator import GeneratorTrainer


@pytest.mark.slow
def test_generator_recipe_runs_and_writes_its_outputs(tmp_path):
    held_out = tmp_path / "held_out"  # another student than the trained-on one (tiny, seed 0)
    build_tiny_reward_model("qwen2_vl", "student", seed=1).save_pretrained(held_out)
    args = ["--steps", "2", "--batch_size", "1", "--latent_size", "14", "--num_steps", "2", "--val_prompts", "2",
            "--eval_every", "1", "--dimensions", "realism,aesthetics", "--progress", "false", "--output_dir",
            str(tmp_path / "gen"), "--held_out_reward_model", str(held_out)]
    trainer = GeneratorTrainer(parse_config(GeneratorConfig, args))
    res = trainer.fit()
    assert set(res) == {"before", "after"} and "val/realism" in res["after"]
    # the held-out student scores the final validation images itself: its own numbers, not the trained-on model's
    with torch.no_grad():
        reward, dists = reward_of_images(load_reward_model(str(held_out)), trainer.eval_set,
                                         trainer.extra_tensors["after_images"], ["realism", "aesthetics"])
    expected = {"reward": float(reward.mean())} | {d: float(q.mean.mean()) for d, q in dists.items()}
    for key in ("reward", "realism", "aesthetics"):
        assert res["after"][f"val/held_out/{key}"] == pytest.approx(expected[key], abs=1e-5)
        assert res["after"][f"val/held_out/{key}"] != pytest.approx(res["after"][f"val/{key}"], abs=1e-4)
    rows = [json.loads(line) for line in (tmp_path / "gen" / "metrics.jsonl").read_text().splitlines()]
    # step 0 (validation before training), steps 1-2 (training; step 1 validates), the final validation at step 2
    assert [r["step"] for r in rows] == [0, 1, 2, 2]
    assert ["val/reward" in r for r in rows] == [True, True, False, True]
    for name in ("before_after.png", "val_reward.png", "results.md", "checkpoint/trainer_state.json"):
        assert (tmp_path / "gen" / name).exists(), name


def test_generator_rejects_unknown_dimensions(tmp_path):
    with pytest.raises(ValueError, match="beauty"):
        GeneratorTrainer(parse_config(GeneratorConfig, ["--dimensions", "beauty", "--output_dir", str(tmp_path)]))


@pytest.mark.parametrize("arch", ["sd3", "flux"])
def test_lora_generator_moves_only_the_adapter(tmp_path, arch):
    args = ["--arch", arch, "--lora_rank", "2", "--steps", "2", "--batch_size", "1", "--latent_size", "8", "--num_steps",
            "2", "--val_prompts", "1", "--eval_every", "2", "--dimensions", "realism", "--lr", "0.05", "--progress",
            "false", "--output_dir", str(tmp_path / "gen")]
    trainer = GeneratorTrainer(parse_config(GeneratorConfig, args))
    before = {n: p.detach().clone() for n, p in trainer.transformer.named_parameters()}
    trainer.fit()
    changed = {n for n, p in trainer.transformer.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed)


def test_generator_rejects_bad_arch_and_rank(tmp_path):
    with pytest.raises(ValueError, match="arch must be one of"):
        GeneratorTrainer(parse_config(GeneratorConfig, ["--arch", "sdxl", "--output_dir", str(tmp_path)]))
    with pytest.raises(ValueError, match="lora_rank"):
        GeneratorTrainer(parse_config(GeneratorConfig, ["--lora_rank", "-1", "--output_dir", str(tmp_path)]))


def test_killed_generator_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    """A LoRA generator run stopped after its step-2 checkpoint and started again logs the same rewards and ends
    with the same validation metrics as an uninterrupted run."""
    args = ["--arch", "flux", "--lora_rank", "2", "--steps", "4", "--save_every", "2", "--batch_size", "1",
            "--latent_size", "8", "--num_steps", "2", "--val_prompts", "1", "--eval_every", "2", "--dimensions",
            "realism", "--lr", "0.05", "--progress", "false"]

    def run(name):
        return GeneratorTrainer(parse_config(GeneratorConfig, args + ["--output_dir", str(tmp_path / name)])).fit()

    full = run("full")
    monkeypatch.setenv("ZRCORE_STOP_AFTER_STEP", "2")
    with pytest.raises(SystemExit, match="stopped after step 2"):
        run("cut")
    monkeypatch.delenv("ZRCORE_STOP_AFTER_STEP")
    resumed = run("cut")

    def rewards(name):
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r.get("reward"), r.get("val/reward")) for r in rows]

    assert rewards("full") == rewards("cut")
    assert len(rewards("full")) == 6  # step 0 (validation), steps 1-4 and the final validation
    assert full == resumed


@pytest.mark.slow
def test_generator_seed_study_tabulates_the_runs_it_made(tmp_path):
    """recipes/generator_seeds.py: one run per (kappa, seed), a row per kappa whose numbers are the runs' own."""
    import statistics
    import subprocess
    import sys

    from tests.training.runs import GENERATOR_TINY, ROOT

    out = tmp_path / "seeds"
    cmd = [sys.executable, "recipes/generator_seeds.py", "--reward_model", "tiny", "--output_dir", str(out),
           "--seeds", "0", "1", "--kappas", "0", "1", "--extra", *GENERATOR_TINY]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (out / "table.md").read_text().splitlines()
    assert len(table) == 4 and (out / "val_reward.png").exists()
    for kappa, line in zip((0, 1), table[2:]):
        rises = []
        for seed in (0, 1):
            rows = [json.loads(x) for x in (out / f"kappa{kappa}-s{seed}" / "metrics.jsonl").read_text().splitlines()]
            vals = [r["val/reward"] for r in rows if "val/reward" in r]
            rises.append(vals[-1] - vals[0])
            for name, logged in (("start", vals[0]), ("final", vals[-1])):  # the per-prompt rewards behind the log
                per_prompt = json.loads((out / f"kappa{kappa}-s{seed}" / f"eval_{name}.json").read_text())["reward"]
                assert statistics.mean(per_prompt) == pytest.approx(logged, rel=1e-5)  # float32 mean vs float64
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:3] == ["trained-on", str(kappa), "2"]
        assert cells[5] == f"{statistics.mean(rises):+.4f} ± {statistics.stdev(rises):.4f}"
        assert not cells[6].endswith("*")  # resampled over the prompts too, not the seeds only


def test_the_rise_interval_resamples_prompts_where_runs_wrote_them(tmp_path):
    """generator_seeds: per-prompt rises from eval_start / eval_final; the interval over prompts and seeds of a
    clear rise excludes 0, runs without the files fall back to the seeds (marked *)."""
    import importlib.util

    from tests.training.runs import ROOT

    spec = importlib.util.spec_from_file_location("generator_seeds", ROOT / "recipes" / "generator_seeds.py")
    seeds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeds)
    g = torch.Generator().manual_seed(0)
    runs = []
    for s in range(3):
        run = tmp_path / f"s{s}"
        run.mkdir()
        start = torch.rand(8, generator=g)
        final = start + 0.1 + 0.01 * torch.randn(8, generator=g)
        for name, v in (("start", start), ("final", final)):
            (run / f"eval_{name}.json").write_text(json.dumps({"reward": v.tolist(), "held_out": None}))
        runs.append(run)
    rises = [seeds.per_prompt_rise(r, "reward") for r in runs]
    assert all(len(r) == 8 for r in rises) and seeds.per_prompt_rise(runs[0], "held_out") is None
    interval, verdict = seeds.rise_interval(rises)
    low, high = (float(x) for x in interval.strip("[]").split(","))
    assert verdict == "rises" and 0.08 < low < 0.1 < high < 0.12
    assert seeds.per_prompt_rise(tmp_path, "reward") is None
    assert seeds.rise_interval([0.1, 0.2, 0.15])[0].endswith("*")


def test_validation_prompts_and_noise_do_not_depend_on_the_run_seed(tmp_path):
    """Runs of several seeds are validated on the same prompts from the same noise (``val_seed`` picks them), so
    that a spread over seeds is the generators' own."""
    from tests.training.runs import GENERATOR_TINY

    def validated(name: str, *extra: str) -> tuple[list[str], list[torch.Tensor]]:
        trainer = GeneratorTrainer(parse_config(GeneratorConfig, GENERATOR_TINY + ["--output_dir", str(tmp_path / name),
                                                                                   *extra]))
        noise = []
        latents = trainer._latents
        trainer._latents = lambda seeds: noise.append(latents(seeds)) or noise[-1]
        trainer.evaluate("start")
        return trainer.eval_set, noise

    prompts0, noise0 = validated("s0", "--seed", "0")
    prompts1, noise1 = validated("s1", "--seed", "1")
    assert prompts0 == prompts1 and len(prompts0) == 2
    assert len(noise0) == len(noise1) == 1 and torch.equal(noise0[0], noise1[0])
    assert validated("v1", "--seed", "0", "--val_seed", "1")[0] != prompts0

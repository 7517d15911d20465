"""The GPU suite: the measurements that matter most first, each step under a time cap, every row kept.

    bash benchmarks/gpu_suite.sh                      # on a GPU machine: about 8 minutes, rows in benchmarks/results/
    bash benchmarks/gpu_suite.sh --only kl            # one step again
    bash benchmarks/gpu_suite.sh --smoke              # every step on the CPU at toy sizes (CI runs this)

Two files come out of a run in ``--out`` (default ``benchmarks/results/suite``): ``results.md``, the device, commit
and each step's rows, appended the moment each row is measured (benchmarks/results.py), so a step cut at its cap
keeps the rows it finished; and ``log.txt``, everything the steps printed.

The steps, in order (``--only`` takes their names, comma-separated):

1. ``ops``: score_distribution and pairwise_gap, eager time (host included) against the naive path and
   torch.compile, then device time by CUDA graph replay;
2. ``kl``: fused_linear_kl against naive, compile and liger-kernel, and against its matmul floor;
3. ``logprobs``: the selected-token log-probs, liger-kernel against zrcore's own (fallback) path;
4. ``compile``: torch.library.opcheck and the fullgraph torch.compile tests on the device;
5. ``train``: 20 train_gdso steps of the tiny teacher in bf16 (flash-attn where installed, else sdpa);
6. ``fsdp``: a Qwen2.5-VL-3B-sized judge under FSDP2 on one GPU, bf16, gradient checkpointing, 3 steps;
7. ``rollout``: that judge's rollout tokens/s at batch 8 and 32 (benchmarks/rollout_bench.py): the old sampling path,
   the native dynamic and static compiled ones and TRL-like transformers generation, against the bandwidth ceiling;
8. ``scale``: the same judge at 2 prompts x 4 candidates x 4 samples with 256-token traces, bf16 master weights,
   8-bit AdamW, checkpointing and micro-batches (peak memory, step time), beside TRL's GRPO step on the same model
   and batch (benchmarks/trl_step.py);
9. whatever time is left: ``build`` (the CUDA extension), ``tests`` (the kernels against their float64
   references on the device), ``extension`` (the extension and reward-backprop benchmarks), ``zimage`` (one
   full-size Z-Image reward-backprop step).

Wheels of packages the GPU machine lacks (``benchmarks/download_wheels.sh`` fetches them into ``.whl/``) are
installed from there, without a network, into a temporary folder put first on the path.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BENCH = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-enable", "--benchmark-disable-gc"]
TESTS = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "benchmarks.pytest_rows"]
TRAIN = ["benchmarks/train_gpu.py"]
FSDP_3B = ["--size", "3b", "--steps", "3", "--distributed", "fsdp", "--dtype", "bf16", "--gradient_checkpointing", "true"]
FSDP_SMOKE = ["--size", "tiny", "--steps", "1", "--distributed", "fsdp", "--dtype", "bf16",
              "--gradient_checkpointing", "true", "--device", "cpu"]
ROLLOUT = ["benchmarks/rollout_bench.py", "--size", "3b", "--dtype", "bf16", "--distributed", "fsdp", "--batches", "8,32",
           "--tokens", "64", "--repeats", "2"]
SCALE = ["--steps", "2", "--dtype", "bf16", "--batch_size", "2", "--candidates", "4", "--sampling.num_samples", "4",
         "--beta", "0", "--gradient_checkpointing", "true", "--master_dtype", "bf16", "--optimizer", "adamw_8bit"]
SCALE_3B = ["--size", "3b", *SCALE, "--sampling.max_reasoning_tokens", "256", "--micro_batch_tokens", "8192"]
SCALE_SMOKE = ["--size", "tiny", *SCALE, "--steps", "1", "--sampling.max_reasoning_tokens", "4", "--micro_batch_tokens",
               "64", "--device", "cpu"]
PLAN = ["--distributed", "none", "--dtype", "bf16", "--beta", "0", "--gradient_checkpointing", "true",
        "--master_dtype", "bf16", "--optimizer", "adamw_8bit"]  # the memory plan of the SCALE runs
PLAN_3B = ["--preset", "qwen2_5_vl_3b", "--batch", "2x4x4", "--reasoning_tokens", "256", "--image_size", "448",
           "--micro_batch_tokens", "8192", *PLAN]
PLAN_SMOKE = ["--preset", "tiny_qwen2_vl_teacher", "--batch", "2x4x4", "--reasoning_tokens", "4", "--image_size", "112",
              "--micro_batch_tokens", "64", *PLAN]
XDIST = ["-n", "4"] if importlib.util.find_spec("xdist") else []  # Triton compiles the test variants in parallel
TORCHRUN = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]


@dataclass
class Step:
    name: str
    title: str
    cap_s: float  # at most this long on a GPU (the smoke run shares its budget)
    gpu: list  # commands: argv lists
    smoke: list


def bench(select: str, *extra: str) -> list:
    return [*BENCH, "benchmarks/test_ops_bench.py", "-k", select, *extra]


def bench_smoke(select: str) -> list:  # toy shapes; torch.compile's paths are left to the GPU run and the test suite
    return bench(f"({select}) and not compile", "--bench-scale", "small")


EXTENSION_ROW = [PY, "-c", "from zrcore.ops._dispatch import extension; from benchmarks.results import Table; "
                 "e = extension(); Table('extension zrcore._C', 'with CUDA').row("
                 "'built' if e else 'missing', bool(e and e.with_cuda))"]


STEPS = [
    Step("ops", "score_distribution and pairwise_gap: eager (host and device) and device time", 80,
         [[PY, "-m", "benchmarks.graph_replay"], bench("score_distribution or pairwise_gap")],
         [[PY, "-m", "benchmarks.graph_replay", "--scale", "small"],
          bench_smoke("score_distribution or pairwise_gap")]),
    Step("kl", "fused_linear_kl: against naive, compile, liger-kernel and its matmul floor", 80,
         [[PY, "-m", "benchmarks.matmul_floor"], bench("fused_linear_kl")],
         [[PY, "-m", "benchmarks.matmul_floor", "--scale", "small", "--chunks", "auto"], bench_smoke("fused_linear_kl")]),
    Step("logprobs", "token log-probs: liger-kernel against zrcore's fallback (impl='torch')", 60,
         [bench("token_logprobs")], [bench_smoke("token_logprobs")]),
    Step("compile", "opcheck and fullgraph torch.compile on the device", 70,
         [[*TESTS, "tests/ops/test_registration.py", "tests/ops/test_compile.py"]],
         [[*TESTS, "tests/ops/test_registration.py", "-k", "opcheck_token or opcheck_pairwise or dtype_errors",
           "tests/ops/test_compile.py::test_token_logprobs_compiles_fullgraph"]]),
    Step("train", "train_gdso: 20 steps of the tiny teacher, bf16", 90,
         [[PY, *TRAIN, "--size", "tiny", "--steps", "20", "--device", "cuda", "--dtype", "bf16"]],
         [[PY, *TRAIN, "--size", "tiny", "--steps", "1", "--device", "cpu", "--dtype", "bf16"]]),
    Step("fsdp", "Qwen2.5-VL-3B-sized judge: FSDP2 on one GPU, bf16, gradient checkpointing", 70,
         [[*TORCHRUN, *TRAIN, *FSDP_3B]], [[*TORCHRUN, *TRAIN, *FSDP_SMOKE]]),
    Step("rollout", "judge rollout tokens/s of the 3B-sized judge (FSDP2, bf16), batch 8 and 32: before, native "
         "dynamic and static_compiled, TRL-like generate, against the bandwidth ceiling", 200,
         [[*TORCHRUN, *ROLLOUT, "--paths", "before,dynamic,trl"], [*TORCHRUN, *ROLLOUT, "--paths", "static_compiled"]],
         [[*TORCHRUN, "benchmarks/rollout_bench.py", "--smoke", "--distributed", "fsdp"]]),
    Step("scale", "Qwen2.5-VL-3B-sized judge at 2 x 4 x 4 with 256-token traces: zrcore's step with the memory "
                  "options beside TRL's GRPO step", 150,
         [[PY, *TRAIN, *SCALE_3B, "--out", "/tmp/zrcore-scale.json"],
          [PY, "-m", "benchmarks.plan_error", "--measured", "/tmp/zrcore-scale.json", *PLAN_3B],
          [PY, "-m", "benchmarks.trl_step", "--size", "3b", "--batch", "2x4x4", "--tokens", "256", "--steps", "2"]],
         [[PY, *TRAIN, *SCALE_SMOKE, "--out", "/tmp/zrcore-scale-smoke.json"],
          [PY, "-m", "benchmarks.plan_error", "--measured", "/tmp/zrcore-scale-smoke.json", *PLAN_SMOKE],
          [PY, "-m", "benchmarks.trl_step", "--size", "tiny", "--batch", "2x2x2", "--tokens", "4", "--steps", "1",
           "--cpu"]]),
    Step("build", "the CUDA extension", 90,
         [["env", "ZRCORE_BUILD_CUDA=1", "MAX_JOBS=16", PY, "setup.py", "build_ext", "--inplace"], EXTENSION_ROW],
         [EXTENSION_ROW]),  # (the smoke run uses the extension built at install)
    Step("tests", "the kernels and the extension against their references on the device", 90,
         [[*TESTS, "tests/ops", "tests/diffusion/test_fused.py", "tests/diffusion/test_fused_compile.py",
           "--ignore=tests/ops/test_compile.py", "--ignore=tests/ops/test_registration.py", *XDIST]],
         [[*TESTS, "tests/ops/test_registration.py", "-k", "resolver_rules"]]),
    Step("extension", "the extension's kernels and the reward-backprop step", 60,
         [[*BENCH, "benchmarks/test_extension_bench.py", "benchmarks/test_diffusion_bench.py"]],
         [[*BENCH, "benchmarks/test_extension_bench.py", "-k", "cfg_euler"]]),
    Step("zimage", "one full-size Z-Image reward-backprop step (bf16, 1024 x 1024)", 150,
         [[PY, "-m", "benchmarks.zimage_fullsize"]],
         [[PY, "-m", "benchmarks.zimage_fullsize", "--preset", "smoke", "--repeats", "1", "--cases", "2"]]),
]
NAMES = [s.name for s in STEPS]


def _git_commit() -> str:
    if os.environ.get("ZRCORE_COMMIT"):
        return os.environ["ZRCORE_COMMIT"]
    try:
        commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                         stderr=subprocess.DEVNULL).strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT, stderr=subprocess.DEVNULL).returncode
        return commit + (" (with uncommitted changes)" if dirty else "")
    except Exception:
        return "unknown"


def _device_line(env: dict) -> str:
    code = ("import torch, triton; d = torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'; "
            "print(f'{d}, torch {torch.__version__}, triton {triton.__version__}')")
    try:
        return subprocess.check_output([PY, "-c", code], env=env, text=True, timeout=120).strip()
    except Exception as err:
        return f"unknown ({type(err).__name__})"


def _install_wheels(env: dict, log) -> None:
    wheels = sorted((ROOT / ".whl").glob("*.whl"))
    if not wheels:
        return
    target = "/tmp/zrcore-site"
    subprocess.run([PY, str(ROOT / "benchmarks/install_wheels.py"), str(ROOT / ".whl"), target], stdout=log,
                   stderr=subprocess.STDOUT, env=env, check=False)
    env["PYTHONPATH"] = target + os.pathsep + env["PYTHONPATH"]


def _run(cmd: list, env: dict, log, seconds: float) -> str:
    """Runs one command in its own process group; 'ok', 'exit code N', or 'cut at the cap' (the group killed)."""
    log.write(f"\n$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        rc = proc.wait(timeout=max(1.0, seconds))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return "cut at the cap"
    return "ok" if rc == 0 else f"exit code {rc}"


def _rows_since(results: Path, offset: int) -> int:
    text = results.read_text()[offset:]
    return sum(1 for line in text.splitlines() if line.startswith("| ") and not line.startswith("| ---"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="every step on the CPU at toy sizes")
    parser.add_argument("--only", default="", help=f"comma-separated steps to run, of: {', '.join(NAMES)}")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/suite",
                        help="folder of results.md and log.txt (default: %(default)s)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole suite (default: 480 on a GPU; 300 for --smoke, a guard: it takes 100-140 s)")
    args = parser.parse_args(argv)
    only = [n for n in args.only.split(",") if n]
    unknown = [n for n in only if n not in NAMES]
    if unknown:
        parser.error(f"--only: unknown step(s) {unknown}; the steps are {NAMES}")
    budget = args.budget if args.budget is not None else (300.0 if args.smoke else 480.0)
    start = time.monotonic()

    args.out.mkdir(parents=True, exist_ok=True)
    results, log_path = args.out / "results.md", args.out / "log.txt"
    results.write_text("")
    env = dict(os.environ, PYTHONUNBUFFERED="1", ZRCORE_RESULTS=str(results))
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if args.smoke:
        env.update(TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"))
    else:
        env.pop("TRITON_INTERPRET", None)
    sys.path.insert(0, str(ROOT))
    from benchmarks.results import note

    os.environ["ZRCORE_RESULTS"] = str(results)
    failed = []
    with open(log_path, "w") as log:
        if not args.smoke:
            _install_wheels(env, log)
        note(f"# zrcore GPU suite{' (smoke: CPU, toy sizes)' if args.smoke else ''}\n")
        note(f"- device: {_device_line(env)}\n- commit: {_git_commit()}\n"
             f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n- budget: {budget:.0f} s")
        for number, step in enumerate(STEPS, 1):
            if only and step.name not in only:
                continue
            left = budget - (time.monotonic() - start)
            note(f"\n## {number}. {step.name}: {step.title}")
            if left < 10:
                note(f"\n_{step.name}: skipped, the suite's budget is spent_")
                failed.append(step.name)
                continue
            cap = left if args.smoke else min(step.cap_s, left)
            t0, offset = time.monotonic(), results.stat().st_size
            statuses = []
            for cmd in step.smoke if args.smoke else step.gpu:
                remaining = cap - (time.monotonic() - t0)
                if remaining < 3:
                    statuses.append("cut at the cap")
                    break
                statuses.append(_run(cmd, env, log, remaining))
            rows = _rows_since(results, offset)
            status = next((s for s in statuses if s != "ok"), "ok")
            note(f"\n_{step.name}: {status}, {rows} rows, {time.monotonic() - t0:.0f} s (cap {cap:.0f} s)_")
            print(f"{step.name}: {status}, {rows} rows, {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
            if status != "ok" or (args.smoke and rows == 0):
                failed.append(step.name)
        note(f"\n_suite: {time.monotonic() - start:.0f} s; steps not ok: {', '.join(failed) or 'none'}_")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# The GPU suite: build with CUDA, run the CUDA tests, count kernel launches, run the GPU benchmarks at the
# acceptance shapes, and write the tables to OUT_DIR. Usage: bash benchmarks/gpu_suite.sh OUT_DIR
# Wheels of packages missing on the GPU machine (liger-kernel, diffusers, transformers and their dependencies) may be
# placed in .whl/ beforehand (benchmarks/install_wheels.py installs the missing or older ones); a machine
# without the git history (or with stale git metadata) should be given the commit as ZRCORE_COMMIT=<hash>.
# The whole suite stays within ZRCORE_SUITE_BUDGET seconds (default 560): each step gets at most what is left,
# and a step with less than 20 s left is skipped, so every table written so far comes back.
# ZRCORE_SUITE_SECTIONS picks sections (default "ops,ext,train"): ops = Triton tests and benchmarks, ext = the
# compiled extension and diffusion benchmarks, train = training throughput (train_gdso on CUDA, a 3B-sized judge).
set -uo pipefail
OUT="${1:?usage: bash benchmarks/gpu_suite.sh OUT_DIR}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
BUDGET="${ZRCORE_SUITE_BUDGET:-560}"
SECTIONS=",${ZRCORE_SUITE_SECTIONS:-ops,ext,train},"
want() { [[ "$SECTIONS" == *",$1,"* ]]; }
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# cap N: the timeout for the next step, at most N seconds and what is left of the budget; empty when too little
cap() {
  local left=$((BUDGET - SECONDS))
  if ((left < 20)); then echo ""; else echo $((left < $1 ? left : $1)); fi
}
step() {  # step NAME CAP LOG COMMAND...: runs COMMAND under the capped timeout (output to LOG, "-" for none),
  local name="$1" t rc log="$3"  # prints its exit code, or skips it when the budget is spent
  t="$(cap "$2")"
  shift 3
  echo "== $name (t=${SECONDS}s)"
  if [[ -z "$t" ]]; then echo "skipped: suite budget spent"; return 99; fi
  if [[ "$log" == "-" ]]; then timeout "$t" "$@"; else timeout "$t" "$@" >"$log" 2>&1; fi
  rc=$?
  echo "exit code $rc"
  return $rc
}

if compgen -G ".whl/*.whl" >/dev/null; then  # install the wheels whose package is missing or older
  python3 benchmarks/install_wheels.py .whl /tmp/zrcore-site
  export PYTHONPATH="/tmp/zrcore-site:$PYTHONPATH"
fi
unset TRITON_INTERPRET
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
  echo "commit ${ZRCORE_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
  date -u +%Y-%m-%d
} | tee "$OUT/device.txt"

# the Triton ops first (they need no build), then the compiled extension and the diffusion benchmarks
if want ops; then
XDIST=""
python3 -c "import xdist" 2>/dev/null && XDIST="-n 4"  # Triton compiles the test variants in parallel
step "CUDA tests (ops)" 150 "$OUT/tests.log" python3 -m pytest -q tests/ops $XDIST -p no:cacheprovider \
  --ignore=tests/ops/test_compile.py
grep -E "^(FAILED|ERROR)" "$OUT/tests.log" 2>/dev/null | head -20; tail -1 "$OUT/tests.log" 2>/dev/null

step "kernel launches" 60 "$OUT/launches.txt" python3 benchmarks/count_launches.py
cut -c1-400 "$OUT/launches.txt" 2>/dev/null | grep -E "launches|do_bench|Error" | head -20

step "device time (CUDA graph replay)" 60 "$OUT/graph_replay.log" python3 benchmarks/graph_replay.py
grep "^|" "$OUT/graph_replay.log" 2>/dev/null | tee "$OUT/graph_replay.md"

step "score kernel launch configurations" 60 "$OUT/tune.log" env \
  ZRCORE_TUNE="${ZRCORE_TUNE:-16x256x4x3x1,16x256x4x3,16x128x4x3,16x512x4x3,32x256x4x3,16x256x4x4,16x256x8x3,16x128x4x4}" \
  python3 benchmarks/tune_score.py
grep -E "^\||Error" "$OUT/tune.log" 2>/dev/null | tee "$OUT/tune.md"

step "op benchmarks" 240 "$OUT/bench.log" env ZRCORE_BENCH_OUT="$OUT" python3 -m pytest -q \
  benchmarks/test_ops_bench.py --benchmark-enable -p no:cacheprovider --benchmark-columns=median,rounds
cat "$OUT/ops-cuda.md" 2>/dev/null || grep -E "Error|error" "$OUT/bench.log" 2>/dev/null | head -20

step "host profile" 40 "$OUT/host.log" python3 benchmarks/profile_host.py
grep -E "per step|tottime|^ +[0-9]" "$OUT/host.log" 2>/dev/null | head -34

step "compile tests" 100 "$OUT/tests_compile.log" python3 -m pytest -q tests/ops/test_compile.py -p no:cacheprovider
grep -E "^(FAILED|ERROR)" "$OUT/tests_compile.log" 2>/dev/null | head -20; tail -1 "$OUT/tests_compile.log" 2>/dev/null

fi

if want ext; then
step "build" 150 "$OUT/build.log" env ZRCORE_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py build_ext --inplace
(($? == 0)) || tail -20 "$OUT/build.log" 2>/dev/null

step "CUDA tests (extension)" 90 "$OUT/tests_ext.log" python3 -m pytest -q tests/diffusion/test_fused.py \
  tests/ops/test_registration.py tests/diffusion/test_fused_compile.py -p no:cacheprovider
grep -E "^(FAILED|ERROR)" "$OUT/tests_ext.log" 2>/dev/null | head -20; tail -1 "$OUT/tests_ext.log" 2>/dev/null

step "extension and reward-backprop benchmarks" 90 "$OUT/bench_diffusion.log" env ZRCORE_BENCH_OUT="$OUT/diffusion" \
  python3 -m pytest -q benchmarks/test_extension_bench.py benchmarks/test_diffusion_bench.py --benchmark-enable \
  -p no:cacheprovider
cat "$OUT/diffusion/ops-cuda.md" 2>/dev/null || tail -5 "$OUT/bench_diffusion.log" 2>/dev/null

step "full-size Z-Image reward-backprop step (bf16, 1024x1024)" 150 "$OUT/zimage.log" python3 \
  benchmarks/zimage_fullsize.py --out "$OUT"
tail -12 "$OUT/zimage.log" 2>/dev/null
fi

if want train; then  # step time, peak memory and rollout tokens/s (benchmarks/train_gpu.py)
step "train_gdso on CUDA, 20 steps (tiny teacher, fp32)" 120 "$OUT/train_tiny.log" python3 benchmarks/train_gpu.py \
  --size tiny --steps 20 --device cuda --out "$OUT/train_tiny.json"
grep -E "^\||Error" "$OUT/train_tiny.log" 2>/dev/null
step "Qwen2.5-VL-3B-sized judge: fsdp on 1 GPU, bf16, gradient checkpointing" 240 "$OUT/train_3b.log" \
  torchrun --standalone --nproc_per_node 1 benchmarks/train_gpu.py --size 3b --steps 4 --distributed fsdp \
  --dtype bf16 --gradient_checkpointing true --out "$OUT/train_3b.json"
grep -E "^\||Error" "$OUT/train_3b.log" 2>/dev/null
fi
echo "suite finished after ${SECONDS}s"

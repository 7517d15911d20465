#!/usr/bin/env bash
# The GPU suite: build with CUDA, run the CUDA tests, count kernel launches, run the GPU benchmarks at the
# acceptance shapes, and write the tables to OUT_DIR. Usage: bash benchmarks/gpu_suite.sh OUT_DIR
# Wheels of packages missing on the GPU machine (liger-kernel, diffusers, transformers and their dependencies) may be
# placed in .whl/ beforehand (benchmarks/install_wheels.py installs the missing or older ones); a machine
# without the git history should be given the commit as ZRCORE_COMMIT=<hash> for the tables.
set -uo pipefail
OUT="${1:?usage: bash benchmarks/gpu_suite.sh OUT_DIR}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then  # install the wheels whose package is missing or older
  python3 benchmarks/install_wheels.py .whl /tmp/zrcore-site
  export PYTHONPATH="/tmp/zrcore-site:$PYTHONPATH"
fi
unset TRITON_INTERPRET
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
  git rev-parse --short HEAD 2>/dev/null || echo "commit ${ZRCORE_COMMIT:-unknown}"
  date -u +%Y-%m-%d
} | tee "$OUT/device.txt"

echo "== build"
if compgen -G "csrc/*.cpp" >/dev/null; then
  ZRCORE_BUILD_CUDA=1 python3 setup.py build_ext --inplace >"$OUT/build.log" 2>&1 && echo "extension built" || { echo "BUILD FAILED"; tail -20 "$OUT/build.log"; }
else
  echo "no csrc sources yet: pure Python + Triton"
fi

echo "== CUDA tests"
timeout 150 python3 -m pytest -q tests/ops tests/diffusion/test_fused.py -p no:cacheprovider \
  --ignore=tests/ops/test_compile.py >"$OUT/tests.log" 2>&1
echo "tests exit code $?"; grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -20; tail -1 "$OUT/tests.log"
timeout 150 python3 -m pytest -q tests/ops/test_compile.py -p no:cacheprovider >"$OUT/tests_compile.log" 2>&1
echo "compile tests exit code $?"; grep -E "^(FAILED|ERROR)" "$OUT/tests_compile.log" | head -20; tail -1 "$OUT/tests_compile.log"

echo "== kernel launches"
timeout 90 python3 benchmarks/count_launches.py 2>&1 | tee "$OUT/launches.txt" | cut -c1-400

echo "== device time (CUDA graph replay)"
timeout 90 python3 benchmarks/graph_replay.py 2>&1 | grep "^|" | tee "$OUT/graph_replay.md"

echo "== benchmarks"
ZRCORE_BENCH_OUT="$OUT" timeout 330 python3 -m pytest -q benchmarks --benchmark-enable -p no:cacheprovider \
  --benchmark-columns=median,rounds >"$OUT/bench.log" 2>&1
echo "benchmarks exit code $?"
tail -5 "$OUT/bench.log"
cat "$OUT/ops-cuda.md" 2>/dev/null || grep -E "Error|error" "$OUT/bench.log" | head -20

echo "== full-size Z-Image reward-backprop step (bf16, 1024x1024)"
timeout 200 python3 benchmarks/zimage_fullsize.py --out "$OUT" 2>&1 | tail -12

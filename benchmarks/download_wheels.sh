#!/usr/bin/env bash
# Downloads into .whl/ (ignored by git) the wheels that the GPU suite needs and a bare GPU machine may lack:
# liger-kernel, diffusers and importlib-metadata (for diffusers); transformers at zrcore's floor; TRL and datasets
# (with dill and multiprocess) for the side-by-side TRL rows; torchao (8-bit AdamW, bf16 stochastic rounding); and
# fla-core / flash-linear-attention (Qwen3.5's gated-DeltaNet kernels), for CPython 3.12 on manylinux x86-64, without
# their dependencies (torch, triton and the rest are on the machine). About 27 MiB in all; the suite
# installs them from there without a network (benchmarks/install_wheels.py). Run it where PyPI is reachable:
#     bash benchmarks/download_wheels.sh [PYTHON_VERSION]        # default 3.12
set -euo pipefail
cd "$(dirname "$0")/.."
PYV="${1:-3.12}"
WHEELS=(liger-kernel==0.8.5 diffusers==0.42.1 importlib-metadata==8.7.1 transformers==5.25.0 trl==1.16.0 torchao==0.18.0
        fla-core==0.6.0 flash-linear-attention==0.6.0 datasets==4.4.1 dill==0.4.0 multiprocess==0.70.18)
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .whl "${WHEELS[@]}"
du -ch .whl/*.whl | tail -1
ls .whl

#!/usr/bin/env bash
# The GPU benchmark we publish (benchmarks/README.md): the full-size RollingDepth
# architecture with random weights (speed does not depend on the weights), 768 px,
# preset fast, PyTorch backend, and the reference execution strategy measured in
# the same run for the speedup ratios. The result lands in
# benchmarks/results/full_768_fast_pytorch_<card>.json.
#
#   bash benchmarks/run_gpu_bench.sh                 # as published
#   bash benchmarks/run_gpu_bench.sh --res 512 768 1024 --frames 120   # extra options are passed on
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(command -v python3 || command -v python)   # some GPU images have only python3

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "run_gpu_bench.sh: no CUDA device visible to PyTorch; see benchmarks/README.md for the CPU run" >&2
    exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu \
    --format=csv || true

# python3 -m rd_engine.cli bench is `rd-engine bench` without the installed script (same options, same JSON)
exec "$PY" -m rd_engine.cli bench --model full --res 768 --preset fast --backend pytorch --device cuda \
    --with-baseline --repeats 5 "$@"

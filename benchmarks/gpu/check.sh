#!/usr/bin/env bash
# The one command run on a lent GPU machine (benchmarks/gpu/README.md says how to call it); results land in $OUT.
# Each step is time-boxed so that a failure does not eat the rest; the whole stays under 8 minutes.
#   bash benchmarks/gpu/check.sh             on the GPU machine (after prepare.sh here)
#   bash benchmarks/gpu/check.sh --dry-run   on a CPU (CI): tiny model, small sizes, CUDA-only steps skipped
set -uo pipefail
cd "$(dirname "$0")/../.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # absolute: the steps run from another folder
LOG=$OUT/log.txt
STEPS=$OUT/steps.txt
: > "$LOG"
: > "$STEPS"
PY=$(command -v python3 || command -v python)
export PYTHONUNBUFFERED=1

# The package without installing it (the GPU image's setuptools may be older than our build needs): the
# tree as it installs, rd_engine/ with kernels/ and export/ inside, plus benchmarks/, the kernel tests and the
# carried wheels, all in one site folder. Every step runs FROM that folder: `python3 -m` puts the working
# directory first on sys.path (and pytest adds its rootdir), so run from the repository's root its
# rd_engine/, which has neither kernels/ nor export/ inside, would shadow the package.
REPO=$PWD
SITE=$(mktemp -d)
trap 'rm -rf "$SITE"' EXIT
if ls .whl/*.whl > /dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        >> "$LOG" 2>&1 || echo "wheels: install failed (see log.txt)" | tee -a "$STEPS"
fi
cp -r rd_engine "$SITE/rd_engine"
cp -r kernels "$SITE/rd_engine/kernels"
cp -r export "$SITE/rd_engine/export"
cp -r benchmarks "$SITE/benchmarks"
mkdir -p "$SITE/tests" && cp -r tests/conftest.py tests/kernels "$SITE/tests/"
printf '[pytest]\naddopts = -q --import-mode=importlib\n' > "$SITE/pytest.ini"
cd "$SITE" || exit 1
export PYTHONPATH="$SITE"

# The boxes are the device's. A dry run checks the code path on a CPU that CI may share with other jobs:
# its boxes are stretched (CHECK_BOX_SCALE, default 4) so that a busy machine does not fail it.
if [ "$DRY" = 1 ]; then SCALE=${CHECK_BOX_SCALE:-4}; else SCALE=1; fi
step() {  # step NAME SECONDS COMMAND...: run it time-boxed, log it, record rc and seconds
    local name=$1 secs=$(($2 * SCALE)) start rc
    shift 2
    start=$(date +%s)
    echo "=== $name: $*" >> "$LOG"
    timeout --kill-after=10 "$secs" "$@" >> "$LOG" 2>&1
    rc=$?
    echo "$name rc=$rc seconds=$(($(date +%s) - start))" | tee -a "$STEPS"
}

if [ "$DRY" = 1 ]; then
    DEV=cpu; MODEL=tiny; RES=64; RES2=48; FRAMES=8; REPEATS=1; ITERS=20; PARITY_RES=64
else
    DEV=cuda; MODEL=full; RES=768; RES2=512; FRAMES=90; REPEATS=2; ITERS=200; PARITY_RES=256
fi
BENCH=("$PY" -m rd_engine.cli bench --model "$MODEL" --device "$DEV" --frames "$FRAMES" --repeats "$REPEATS")

# every module the steps import, in seconds: a missing or shadowed one stops the check before it spends the
# device's time (the other steps would all fail at import)
if [ "$DRY" = 1 ]; then NEED=(); else NEED=(--need-triton --need-pytest); fi
step preflight 60 "$PY" -m benchmarks.gpu.preflight --site "$SITE" "${NEED[@]}"
if ! grep -q "^preflight rc=0 " "$STEPS"; then
    echo "preflight failed: nothing else ran (log.txt names the missing modules)" | tee -a "$STEPS"
    tail -n 20 "$LOG"
    exit 1
fi
step env 30 "$PY" -m benchmarks.gpu.env --out "$OUT/env.json"
if [ "$DRY" = 0 ]; then
    # the interpreted-kernel subprocess test needs Triton's interpreter, which fails with that image's numpy
    step kernels 90 "$PY" -m pytest -c pytest.ini -p no:cacheprovider tests/kernels \
        --deselect tests/kernels/test_interpreted_subprocess.py
fi
step parity 100 "$PY" -m benchmarks.gpu.parity --device "$DEV" --res "$PARITY_RES" --out "$OUT/parity.json"
# end to end at the full size with the reference strategy beside it (its Adam shortened to $ITERS iterations)
step bench_fp16 180 "${BENCH[@]}" --res "$RES" --with-baseline --baseline-align-iters "$ITERS" \
    --out "$OUT/bench_${RES}_fp16.json"
step bench_bf16 60 "${BENCH[@]}" --res "$RES" --dtype bf16 --out "$OUT/bench_${RES}_bf16.json"
step bench_batch16 60 "${BENCH[@]}" --res "$RES" --snippet-batch 16 --out "$OUT/bench_${RES}_batch16.json"
step bench_small 50 "${BENCH[@]}" --res "$RES2" --out "$OUT/bench_${RES2}_fp16.json"
echo "results in $OUT:" && ls "$OUT"
# a dry run fails if any step failed; on the GPU every step's result is kept whatever the others did
[ "$DRY" = 0 ] || ! grep -v "rc=0 " "$STEPS" | grep -q .

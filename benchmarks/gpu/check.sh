#!/usr/bin/env bash
# The one command run on a lent GPU machine (benchmarks/gpu/README.md says how to call it); results land in $OUT.
# Each step is time-boxed so that a failure does not eat the rest; the boxes add up to 545 s (docs/gpu-check.md).
#   bash benchmarks/gpu/check.sh                     on the GPU machine (after prepare.sh here)
#   bash benchmarks/gpu/check.sh --only bench,write  a rerun of some steps (preflight always runs)
#   bash benchmarks/gpu/check.sh --dry-run           on a CPU (CI): tiny model, small sizes, CUDA-only steps skipped
set -uo pipefail
cd "$(dirname "$0")/../.."
DRY=0
ONLY=
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) DRY=1 ;;
        --only) ONLY=$2; shift ;;
        *) echo "check.sh: unknown option $1 (--dry-run, --only STEP[,STEP])" >&2; exit 2 ;;
    esac
    shift
done
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
# its boxes are stretched (CHECK_BOX_SCALE, default 10) so that a busy machine does not fail it.
if [ "$DRY" = 1 ]; then SCALE=${CHECK_BOX_SCALE:-10}; else SCALE=1; fi
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
    DEV=cpu; MODEL=tiny; RES=64; FRAMES=8; REPEATS=1; ITERS=20; PARITY_RES=64
else
    DEV=cuda; MODEL=full; RES=768; FRAMES=90; REPEATS=2; ITERS=2000; PARITY_RES=256
fi

# every module the steps import, in seconds: a missing or shadowed one stops the check before it spends the
# device's time (the other steps would all fail at import)
if [ "$DRY" = 1 ]; then NEED=(); else NEED=(--need-triton --need-pytest); fi
step preflight 30 "$PY" -m benchmarks.gpu.preflight --site "$SITE" "${NEED[@]}"
if ! grep -q "^preflight rc=0 " "$STEPS"; then
    echo "preflight failed: nothing else ran (log.txt names the missing modules)" | tee -a "$STEPS"
    tail -n 20 "$LOG"
    exit 1
fi
wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }  # --only a,b: rerun just these steps
wanted env && step env 15 "$PY" -m benchmarks.gpu.env --out "$OUT/env.json"
if [ "$DRY" = 0 ] && wanted kernels; then
    # the interpreted-kernel subprocess test needs Triton's interpreter, which fails with that image's numpy
    step kernels 45 "$PY" -m pytest -c pytest.ini -p no:cacheprovider tests/kernels \
        --deselect tests/kernels/test_interpreted_subprocess.py
fi
# same initial noise on both sides (drawn once on the CPU), fp32 device vs CPU, fp16/bf16 vs fp32
wanted parity && step parity 45 "$PY" -m benchmarks.gpu.parity --device "$DEV" --res "$PARITY_RES" --out "$OUT/parity.json"
# the full-size model at 768 px, 90 frames, 2 repeats with writing, and the reference's execution strategy
# beside it (one snippet per UNet call, VAE batch 4, Adam with its 2000 iterations on the device); a result
# file after every repeat
wanted bench && step bench 115 "$PY" -m rd_engine.cli bench --model "$MODEL" --device "$DEV" --frames "$FRAMES" \
    --repeats "$REPEATS" --res "$RES" --with-baseline --baseline-align-iters "$ITERS" --out "$OUT/bench_${RES}.json"
# every fast path against eager in one process (one warm-up and one run each, no writing), then the compiled
# ones (torch.compile default offline, CUDA graphs for online lag 0), then serial against parallel writers
FAST=("$PY" -m benchmarks.gpu.fastpaths --device "$DEV" --model "$MODEL" --res "$RES" --frames "$FRAMES")
wanted fastpaths && step fastpaths 160 "${FAST[@]}" --set eager --out "$OUT/fastpaths.json"
if [ "$DRY" = 0 ] && wanted compile; then  # on a CPU, tests/backends/test_fast_paths.py checks compile
    step compile 90 "${FAST[@]}" --set compile --out "$OUT/compile.json"
fi
# writing costs the same whatever model made the depth: the tiny one keeps the step short. Offline: the
# writers serial against parallel; online (24 frames): writing inline against on threads beside the model
wanted write && step write 45 "$PY" -m benchmarks.gpu.fastpaths --device "$DEV" --model tiny --res "$RES" \
    --frames "$FRAMES" --set write --out "$OUT/write.json"
echo "results in $OUT:" && ls "$OUT"
# a dry run fails if any step failed; on the GPU every step's result is kept whatever the others did
[ "$DRY" = 0 ] || ! grep -v "rc=0 " "$STEPS" | grep -q .

#!/usr/bin/env bash
# Run on a development machine before asking for a GPU: fetch the wheels the GPU machine lacks into .whl/
# (ignored by git) and check that they and the working tree fit the device tool's carry limit (64 MiB).
# What the GPU image lacks (its package list, /work/.library/device/KINDS.md): diffusers and PyAV.
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS=(diffusers==0.42.1 av==18.1.0)
LIMIT_MIB=64
SPARE_MIB=8   # room to spare: results, a rebuilt file, a log

grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${WHEELS[@]}" 2>&1 | grep -v '^WARNING: Location' || true
for w in "${WHEELS[@]}"; do
    name=${w%%==*}; version=${w##*==}
    ls .whl/"${name}"-"${version}"-*.whl > /dev/null 2>&1 || { echo "prepare: no wheel for $w in .whl/" >&2; exit 1; }
done
n=$(ls .whl/*.whl | wc -l)
[ "$n" -eq "${#WHEELS[@]}" ] || { echo "prepare: .whl/ holds $n wheels, expected ${#WHEELS[@]} (one version each)" >&2; exit 1; }

# what travels: tracked and untracked-not-ignored files, plus the carried .whl/
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
whl=$(stat -c %s .whl/*.whl | awk '{s+=$1} END {print s+0}')
total=$((tree + whl))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
echo "prepare: wheels $(mib "$whl") MiB + working tree $(mib "$tree") MiB = $(mib "$total") MiB of $LIMIT_MIB MiB"
if [ "$total" -gt $(((LIMIT_MIB - SPARE_MIB) * 1048576)) ]; then
    echo "prepare: over the limit less $SPARE_MIB MiB of room: ignore or move large files" >&2
    exit 1
fi
echo "prepare: ready; call the device tool as benchmarks/gpu/README.md says"

#!/usr/bin/env bash
# The device checks of issue 16 as one command (the device tool's `run`, with
# carry [".whl", ".gpu_photos"] from bench/gpu_prepare.sh): install the carried wheels,
# run the engine's tests on the device, then bench/gpu.py; logs, the JSON line and the
# docs section land in $OUT (default ./gpu-out).
#
# Usage: bash bench/gpu_check.sh [DEVICE] [N]   (DEVICE cuda, N 5000 inputs per run)
set -uo pipefail
cd "$(dirname "$0")/.."
device=${1:-cuda}
n=${2:-5000}
out=${OUT:-gpu-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:src
else
    export PYTHONPATH=src
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1
timeout 150 python3 -m pytest -q -p no:cacheprovider --device "$device" \
    tests/test_device_engine.py tests/test_api.py tests/test_folding.py 2>&1 | tee "$out/pytest.log" | tail -5
photos=.gpu_photos
[ -d "$photos" ] || photos=
timeout 420 python3 bench/gpu.py --device "$device" --n "$n" ${photos:+--photos "$photos"} \
    2>&1 | tee "$out/gpu.log" | tail -3
cp docs/results.md "$out/results.md"

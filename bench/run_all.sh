#!/usr/bin/env bash
# Every figure in docs/results.md, in one go (several hours on a 2-core CPU; each script
# writes its own section). Speed first, while the machine is otherwise idle.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY bench/throughput.py
$PY bench/pipeline_cpu.py --limit 150
$PY bench/host_memory.py --limit 150
OMP_NUM_THREADS=1 $PY bench/host_stages.py
OMP_NUM_THREADS=1 $PY bench/codecs.py
OMP_NUM_THREADS=1 $PY bench/large_photos.py
OMP_NUM_THREADS=1 $PY bench/megapixels.py --max-steps 10 --repeats 2
OMP_NUM_THREADS=1 $PY bench/gpu.py --device cpu --n 200 --threads 1
$PY bench/imagenet_sample.py
$PY bench/reproduce_paper.py
OMP_NUM_THREADS=1 $PY bench/privacy_floor.py
OMP_NUM_THREADS=1 $PY bench/detectors.py
OMP_NUM_THREADS=1 $PY bench/faces_table4.py
OMP_NUM_THREADS=1 $PY bench/identity.py
OMP_NUM_THREADS=1 $PY bench/plates.py
OMP_NUM_THREADS=1 $PY bench/loader_variants.py
$PY bench/blackbox.py
OMP_NUM_THREADS=1 $PY bench/video.py --seconds 2 --sizes 1080,720 --write-docs
# On a machine with a GPU: bash bench/gpu_check.sh (prepared here by bench/gpu_prepare.sh)

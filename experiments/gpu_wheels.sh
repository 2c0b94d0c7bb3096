#!/usr/bin/env bash
# The wheels a GPU node with torch, Triton and the scientific stack (but no medical-imaging packages) needs
# for experiments/gpu_check.sh: monai, nibabel, kornia and kornia_rs, nothing else, for its Python.
#
#   bash experiments/gpu_wheels.sh DIR [PYTHON_VERSION]      # default 3.12; then:
#   bash experiments/gpu_check.sh --wheels DIR --out RESULTS
#
# Versions are those the CPU suite runs with; --no-deps, so no torch or CUDA wheel is ever fetched.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bash experiments/gpu_wheels.sh DIR [PYTHON_VERSION]" >&2; exit 2; }
dir=$1 version=${2:-3.12}
mkdir -p "$dir"
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
  "${platforms[@]}" -d "$dir" monai==1.6.1 nibabel==5.4.2 kornia==0.9.0 kornia_rs==0.2.0
ls "$dir"

#!/usr/bin/env bash
# Installs NVRTC (CUDA's run-time compiler, no GPU needed) from its pinned PyPI wheel into
# target/nvrtc-wheel and prints the directory holding libnvrtc.so.13, for LD_LIBRARY_PATH.
# The CUDA kernels' compile check (crates/wanrt-nn/tests/cuda_kernels.rs) loads it from there.
# About 50 MB downloaded once; a later run finds it installed and does nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=13.5.37   # the version the kernel report bench/results/cuda-kernels-sm_90a.json was made with
DIR="${WANRT_NVRTC_DIR:-$PWD/target/nvrtc-wheel}"
LIB="$DIR/nvidia/cu13/lib"
if [ ! -e "$LIB/libnvrtc.so.13" ] || [ ! -e "$DIR/nvidia_cuda_nvrtc-$VERSION.dist-info/METADATA" ]; then
    rm -rf "$DIR"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$DIR" \
        "nvidia-cuda-nvrtc==$VERSION" >&2
fi
echo "$LIB"

#!/usr/bin/env bash
# Builds, on a machine without a GPU, what tools/device/gpu_check.sh runs on a GPU machine: the
# release `wanrt` binary and the CUDA conformance test binary, stripped, in target/device-bundle/
# (≈ 30 MB; pass it to the device run with carry: ["target/device-bundle"]).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUNDLE=target/device-bundle
rm -rf "$BUNDLE" && mkdir -p "$BUNDLE"
cargo build --release -p wanrt-cli --bin wanrt
cp target/release/wanrt "$BUNDLE/wanrt"
# The test binary's path has a hash in it: ask cargo for it.
cargo test --release -p wanrt-nn --test conformance_cuda --no-run --message-format=json \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "conformance_cuda":
        print(m["executable"])
' | while read -r exe; do cp "$exe" "$BUNDLE/conformance_cuda"; done
test -x "$BUNDLE/conformance_cuda"
strip "$BUNDLE/wanrt" "$BUNDLE/conformance_cuda" 2>/dev/null || true
git rev-parse HEAD > "$BUNDLE/COMMIT"
du -sh "$BUNDLE"/*

#!/usr/bin/env bash
# The CUDA backend's checks on a GPU machine, in about 5 minutes (every step has its own timeout):
#   1. library probe: nvidia-smi, and where libcuda / libcublasLt / libnvrtc are found;
#   2. the conformance battery on CUDA (bf16 and f32) against the CPU reference, op by op;
#   3. timings of the main ops at the 1.3B shapes (32,760 tokens) → timings.json;
#   4. the tiny demo pipeline on CUDA (bf16, f32) vs CPU: frames compared (PSNR/SSIM), wall times;
#   4b. `wanrt bench --backend cuda --cuda-graph`: the step eager vs as one CUDA graph (demo model);
#   5. `wanrt bench --ladder --backend cuda` on the demo model (report in ladder-cuda-demo/).
# Everything goes to $OUT (default ./gpu-check-out): gpu_check.log, conformance.log, timings.json,
# pipeline/*.npy and summary.json. It runs the prebuilt binaries of tools/device/build_bundle.sh
# (target/device-bundle, carried to the device) and needs no Rust or CUDA toolkit there.
# A failing step is recorded and the next one still runs; the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu-check-out}"
BUNDLE="${BUNDLE:-target/device-bundle}"
mkdir -p "$OUT/pipeline"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export WANRT_KERNEL_CACHE="${WANRT_KERNEL_CACHE:-${TMPDIR:-/tmp}/wanrt-kernels}"
export WANRT_DEMO_MODEL="${WANRT_DEMO_MODEL:-$PWD/models/demo}"
declare -A STATUS SECONDS_TAKEN
FAILED=0

step() { # step NAME TIMEOUT COMMAND...: runs, times and records one step
    local name=$1 limit=$2; shift 2
    echo "=== $name (timeout ${limit}s): $*" >&2
    local t0; t0=$(date +%s.%N)
    timeout "$limit" "$@"; local rc=$?
    SECONDS_TAKEN[$name]=$(python3 -c "print(round($(date +%s.%N) - $t0, 3))")
    STATUS[$name]=$rc
    [ "$rc" = 0 ] || FAILED=1
    echo "=== $name: exit $rc in ${SECONDS_TAKEN[$name]} s" >&2
}

# ---- 1. libraries ----
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv || true
# CUDA 13 (or 12) libraries from a toolkit or from PyPI wheels (torch's nvidia-* packages).
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/*/lib $(python3 - <<'PY' 2>/dev/null
import glob, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()]
for r in roots:
    for d in sorted(glob.glob(f"{r}/nvidia/*/lib")) + sorted(glob.glob(f"{r}/nvidia/cu1*/lib")):
        print(d)
PY
); do
    [ -d "$d" ] && LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"
for lib in libcuda.so.1 libcublasLt.so.13 libcublasLt.so.12 libnvrtc.so.13 libnvrtc.so.12; do
    found=$( (ldconfig -p 2>/dev/null | grep -o "/[^ ]*$lib\$"; for d in ${LD_LIBRARY_PATH//:/ }; do ls "$d/$lib" 2>/dev/null; done) | head -1)
    echo "library $lib: ${found:-not found}"
done
if [ ! -x "$BUNDLE/conformance_cuda" ] || [ ! -x "$BUNDLE/wanrt" ]; then
    echo "no prebuilt bundle in $BUNDLE: run tools/device/build_bundle.sh and carry target/device-bundle"
    exit 2
fi
echo "bundle built from commit $(cat "$BUNDLE/COMMIT" 2>/dev/null)"

# ---- 2. conformance battery (one op first: compiles the kernels into the cache once) ----
step kernels_compile 120 "$BUNDLE/conformance_cuda" --ignored --exact cuda_bf16::transfers --nocapture
step conformance 240 "$BUNDLE/conformance_cuda" --ignored --skip cuda_timings --test-threads 4 --nocapture \
    > "$OUT/conformance.log" 2>&1
grep -E "^test |test result|panicked|NMSE" "$OUT/conformance.log" | grep -vE "^\s*$" | head -200

# ---- 3. timings at the 1.3B shapes ----
export WANRT_TIMINGS="$OUT/timings.json"
step timings 120 "$BUNDLE/conformance_cuda" --ignored --exact \
    cuda_timings_at_wan_1_3b_shapes --nocapture

# ---- 4. tiny pipeline: CUDA vs CPU ----
gen() { # gen NAME ARGS...
    local name=$1; shift
    step "generate_$name" 120 "$BUNDLE/wanrt" generate --prompt "a red fox running through snow" --seed 7 \
        --save-npy "$OUT/pipeline/$name.npy" -o "$OUT/pipeline/$name.gif" --json "$@" \
        > "$OUT/pipeline/$name.json"
    cat "$OUT/pipeline/$name.json"
}
gen cpu --backend cpu
gen cuda_f32 --backend cuda --dtype f32
gen cuda_bf16 --backend cuda --dtype bf16
gen cuda_bf16_graph --backend cuda --dtype bf16 --cuda-graph
# Tolerances (PSNR vs the CPU f32 frames): bf16 ≥ 40 dB (the CPU's own bf16 backend measures
# 48.6 dB on the demo model, README); f32 ≥ 80 dB (same math, another summation order).
# (psnr null: identical frames.)
PSNR_CHECK='import json, sys; p = json.load(open(sys.argv[1]))["psnr"]; print("psnr", p, "dB, need", sys.argv[2]); sys.exit(0 if p is None or p >= float(sys.argv[2]) else 1)'
for pair in cuda_f32:80 cuda_bf16:40; do
    name=${pair%%:*}
    step "compare_$name" 60 "$BUNDLE/wanrt" eval compare --reference "$OUT/pipeline/cpu.npy" \
        --candidate "$OUT/pipeline/$name.npy" --json > "$OUT/pipeline/compare_$name.json"
    cat "$OUT/pipeline/compare_$name.json"
    step "psnr_$name" 10 python3 -c "$PSNR_CHECK" "$OUT/pipeline/compare_$name.json" "${pair##*:}"
done

# The graph replays run the eager path's kernels: its frames should equal the eager bf16 ones.
step compare_graph 60 "$BUNDLE/wanrt" eval compare --reference "$OUT/pipeline/cuda_bf16.npy" \
    --candidate "$OUT/pipeline/cuda_bf16_graph.npy" --json > "$OUT/pipeline/compare_graph.json"
cat "$OUT/pipeline/compare_graph.json"
step psnr_graph 10 python3 -c "$PSNR_CHECK" "$OUT/pipeline/compare_graph.json" 80

# ---- 4b. one transformer step as a CUDA graph over the planned arena vs eager (demo model) ----
# Step and host launch times, graph nodes, arena bytes vs the live peak, max |eager − graph|.
step cuda_graph 120 "$BUNDLE/wanrt" bench --backend cuda --cuda-graph --repeat 5 --skip-vae --json \
    > "$OUT/cuda-graph-demo.json"
cat "$OUT/cuda-graph-demo.json"

# ---- 5. the bench ladder on CUDA (demo model; issue 19): rungs the CUDA backend runs today ----
# The baseline (bf16), W8A8 int8 and fp8 (cuBLASLt 8-bit GEMMs), + 8-bit attention, the step cache,
# CUDA graph replays.
step ladder_cuda 240 "$BUNDLE/wanrt" bench --ladder --backend cuda --rungs baseline,int8,int8-attn8,fp8,step-cache,graph \
    --videos 8 \
    --artifact-cache "$OUT/ladder-cache" --report "$OUT/ladder-cuda-demo"
cat "$OUT/ladder-cuda-demo/ladder.md" 2>/dev/null | head -40

# ---- summary ----
{
    echo "{"
    echo "  \"commit\": \"$(cat "$BUNDLE/COMMIT" 2>/dev/null)\","
    echo "  \"gpu\": \"$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)\","
    echo "  \"conformance\": \"$(grep -E '^test result' "$OUT/conformance.log" | tail -1)\","
    echo "  \"steps\": {"
    sep=""
    for k in "${!STATUS[@]}"; do
        printf '%s    "%s": {"exit": %s, "seconds": %s}' "$sep" "$k" "${STATUS[$k]}" "${SECONDS_TAKEN[$k]}"
        sep=$',\n'
    done
    printf '\n  }\n}\n'
} > "$OUT/summary.json"
cat "$OUT/summary.json"
exit $FAILED

#!/usr/bin/env python3
"""Would Q8_0 GGUF weights run on the int8 kernels (per-output-channel scales) without losing
fidelity? Requantizes each Q8_0 tensor's decoded values to per-channel int8 and reports relative
L2 errors against the Q8_0 values and against the f32 source, next to Q8_0's own error and plain
per-channel int8 of the f32 source.

    .venv/bin/python tools/bench/q8_requant_error.py $WORKDIR/model-10l-q8_0.gguf \\
        $WORKDIR/model-10l/transformer/diffusion_pytorch_model.safetensors [--tensors 40]

(the files tools/bench/lora_gguf_memory.py builds). Result: bench/results/q8_0-requant-error.log.
"""

import argparse

import gguf
import numpy as np
from safetensors.numpy import load_file


def per_channel_int8(w: np.ndarray) -> np.ndarray:
    s = np.abs(w).max(axis=1, keepdims=True) / 127
    s[s == 0] = 1
    return np.clip(np.round(w / s), -127, 127) * s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf")
    ap.add_argument("safetensors")
    ap.add_argument("--tensors", type=int, default=40)
    args = ap.parse_args()
    source = load_file(args.safetensors)
    sums = {k: [0.0, 0.0] for k in ("Q8_0 vs f32", "requantized vs Q8_0", "requantized vs f32", "per-channel int8 vs f32")}
    used = 0
    for t in gguf.GGUFReader(args.gguf).tensors:
        if t.tensor_type != gguf.GGMLQuantizationType.Q8_0 or used == args.tensors:
            continue
        used += 1
        w = source[t.name].astype(np.float32)
        q8 = gguf.quants.dequantize(t.data, t.tensor_type).reshape(w.shape)
        req = per_channel_int8(q8)
        for k, (a, b) in {
            "Q8_0 vs f32": (q8, w),
            "requantized vs Q8_0": (req, q8),
            "requantized vs f32": (req, w),
            "per-channel int8 vs f32": (per_channel_int8(w), w),
        }.items():
            sums[k][0] += float(((a - b) ** 2).sum())
            sums[k][1] += float((b**2).sum())
    print(f"{used} Q8_0 tensors")
    for k, (num, den) in sums.items():
        print(f"{k:26s} relative L2 error {(num / den) ** 0.5:.3e}")


if __name__ == "__main__":
    main()

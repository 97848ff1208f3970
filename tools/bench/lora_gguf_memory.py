#!/usr/bin/env python3
"""Peak memory of ``wanrt generate`` with a LoRA and with a GGUF transformer (issue 22: "a GGUF or
LoRA-merged model is never held twice").

Builds (once) a diffusers folder with bench_cpu.py's random Wan2.1-1.3B-wide transformer (width 1536,
ffn 8960, text_dim 4096) at ``--layers`` blocks and a 1-layer UMT5-XXL-wide text encoder, then:

* ``model.gguf``: its GGUF twin (diffusers names), every 2-D block weight Q8_0, the rest F32;
* ``lora.safetensors``: a PEFT LoRA of rank ``--rank`` on every attention and FFN linear;

and runs, one process at a time, ``wanrt generate`` (2 steps, CFG, 5x64x64) on: the safetensors
folder; the same with ``--lora`` (merged); with ``--lora --lora-unmerged``; ``--transformer
model.gguf``; the GGUF with ``--lora`` (side path). Peak RSS is the kernel's high-water mark of each
child (``wait4``), next to the ``transformer_weight_bytes`` generate reports.

    .venv/bin/python tools/bench/lora_gguf_memory.py --workdir /tmp/wanrt-mem --layers 10

Writes the log to bench/results/lora-gguf-memory.log.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_cpu as B  # noqa: E402


def write_gguf(model: Path, out: Path) -> None:
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    if out.exists():
        return
    sd = load_file(str(model / "transformer" / "diffusion_pytorch_model.safetensors"))
    w = gguf.GGUFWriter(str(out) + ".tmp", arch="wan")
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    pe = "patch_embedding.weight"
    w.add_array(f"comfy.gguf.orig_shape.{pe}", list(sd[pe].shape))
    for name, t in sd.items():
        t = t.astype(np.float32)
        if name == pe:
            t = t.reshape(t.shape[0], -1)
        if name.startswith("blocks.") and t.ndim == 2 and t.shape[1] % 32 == 0:
            w.add_tensor(name, gguf.quants.quantize(t, gguf.GGMLQuantizationType.Q8_0), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, t, raw_dtype=gguf.GGMLQuantizationType.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.rename(str(out) + ".tmp", out)


def write_lora(model: Path, out: Path, rank: int) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    if out.exists():
        return
    cfg = json.loads((model / "transformer" / "config.json").read_text())
    dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    rng = np.random.default_rng(0)
    shapes = {f"attn{a}.{p}": (dim, dim) for a in (1, 2) for p in ("to_q", "to_k", "to_v", "to_out.0")}
    shapes.update({"ffn.net.0.proj": (cfg["ffn_dim"], dim), "ffn.net.2": (dim, cfg["ffn_dim"])})
    tensors = {}
    for i in range(cfg["num_layers"]):
        for m, (o, k) in shapes.items():
            key = f"transformer.blocks.{i}.{m}"
            tensors[f"{key}.lora_A.weight"] = (rng.standard_normal((rank, k)) / k**0.5).astype(np.float32)
            tensors[f"{key}.lora_B.weight"] = (rng.standard_normal((o, rank)) * 0.01).astype(np.float32)
    save_file(tensors, str(out))


def run(wanrt: Path, model: Path, extra: list[str], work: Path, threads: int, logf) -> dict:
    cmd = [str(wanrt), "generate", "--model", str(model), "--prompt", B.PROMPT, "--steps", "2", "--frames", "5",
           "--height", "64", "--width", "64", "--threads", str(threads), "--json", "-o", str(work / "out.mp4"), *extra]
    # Paths as the command would be typed from the repository root, the work folder as $WORKDIR.
    shown = " ".join(cmd).replace(str(work), "$WORKDIR").replace(str(B.REPO) + "/", "")
    logf.write("$ " + shown + "\n")
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate()
    _, status, usage = os.wait4(p.pid, 0) if p.returncode is None else (p.pid, p.returncode, None)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        logf.write(err.decode())
        raise SystemExit(f"generate failed: {err.decode()[-2000:]}")
    j = json.loads(out)
    return {"wall_s": wall, "peak_rss_bytes": j.get("peak_rss_bytes"), "transformer_weight_bytes": j.get("transformer_weight_bytes"),
            "load_s": j.get("load_s")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/wanrt-mem"))
    ap.add_argument("--wanrt", type=Path, default=B.REPO / "target" / "release" / "wanrt")
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log", type=Path, default=B.REPO / "bench" / "results" / "lora-gguf-memory.log")
    args = ap.parse_args()
    B.TRANSFORMER["num_layers"] = args.layers
    model = args.workdir / f"model-{args.layers}l"
    args.workdir.mkdir(parents=True, exist_ok=True)
    B.build_model(model, te_layers=1)
    gguf_file = args.workdir / f"model-{args.layers}l-q8_0.gguf"
    lora = args.workdir / f"lora-r{args.rank}-{args.layers}l.safetensors"
    write_gguf(model, gguf_file)
    write_lora(model, lora, args.rank)
    size = lambda p: p.stat().st_size  # noqa: E731
    variants = [
        ("safetensors f32", []),
        ("safetensors + --lora (merged)", ["--lora", str(lora)]),
        ("safetensors + --lora --lora-unmerged", ["--lora", str(lora), "--lora-unmerged"]),
        ("GGUF Q8_0", ["--transformer", str(gguf_file)]),
        ("GGUF Q8_0 + --lora (side path)", ["--transformer", str(gguf_file), "--lora", str(lora)]),
    ]
    with open(args.log, "w") as logf:
        logf.write("# Peak RSS of wanrt generate: safetensors vs its GGUF Q8_0 twin, with and without a LoRA\n"
                   f"# command: tools/bench/lora_gguf_memory.py --layers {args.layers} "
                   f"--rank {args.rank} --threads {args.threads}\n")
        logf.write(f"# transformer safetensors {size(model / 'transformer' / 'diffusion_pytorch_model.safetensors')} bytes, "
                   f"GGUF {size(gguf_file)} bytes, LoRA {size(lora)} bytes; machine {os.cpu_count()} cores\n")
        rows = []
        for name, extra in variants:
            r = run(args.wanrt, model, extra, args.workdir, args.threads, logf)
            rows.append((name, r))
            line = (f"{name:40s} peak RSS {r['peak_rss_bytes'] / 2**20:8.1f} MiB   transformer weights "
                    f"{r['transformer_weight_bytes'] / 2**20:8.1f} MiB   load {r['load_s']:.1f} s   wall {r['wall_s']:.1f} s")
            print(line, flush=True)
            logf.write(line + "\n")
            logf.flush()


if __name__ == "__main__":
    main()

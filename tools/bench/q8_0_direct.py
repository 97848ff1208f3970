#!/usr/bin/env python3
"""Where running GGUF Q8_0 weights directly on the int8 kernels pays (issue 22, ``--gguf-int8``).

Builds (once) bench_cpu.py's random Wan2.1-1.3B-wide model (``--layers`` blocks, default all 30)
and its GGUF twin (lora_gguf_memory.py: every 2-D block weight Q8_0, the rest F32), then:

* speed: ``wanrt bench`` one transformer pass (no CFG, ``--height/--width/--frames``) on the GGUF,
  decoded into the f32 product (the default) and with ``--gguf-int8``, next to the f32 safetensors
  folder for scale; ``--rounds`` interleaved rounds, each a fresh process;
* fidelity: ``wanrt generate`` (same seed, ``--steps``) both ways, and the PSNR of the int8 video's
  frames against the decoded one's (and the largest frame difference).

    .venv/bin/python tools/bench/q8_0_direct.py --workdir /tmp/wanrt-q8

Writes bench/results/q8_0-direct-<tag>.{md,log}; the numbers are only comparable within one run.
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
from lora_gguf_memory import write_gguf  # noqa: E402


def shown(cmd: list[str], work: Path) -> str:
    return " ".join(cmd).replace(str(work), "$WORKDIR").replace(str(B.REPO) + "/", "")


def run(cmd: list[str], work: Path, logf) -> str:
    logf.write("$ " + shown(cmd, work) + "\n")
    logf.flush()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        logf.write(p.stderr)
        raise SystemExit(f"failed: {shown(cmd, work)}\n{p.stderr[-2000:]}")
    return p.stdout


def psnr(a, b) -> float:
    import numpy as np

    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    # Frames are in [0, 1].
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def main() -> None:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/wanrt-q8"))
    ap.add_argument("--wanrt", type=Path, default=B.REPO / "target" / "release" / "wanrt")
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--te-layers", type=int, default=1, help="text encoder blocks of the built model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--height", type=int, default=160)
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--tag", default="local")
    args = ap.parse_args()
    B.TRANSFORMER["num_layers"] = args.layers
    model = args.workdir / f"model-{args.layers}l"
    args.workdir.mkdir(parents=True, exist_ok=True)
    B.build_model(model, te_layers=args.te_layers)
    gguf_file = args.workdir / f"model-{args.layers}l-q8_0.gguf"
    write_gguf(model, gguf_file)
    shape = ["--height", str(args.height), "--width", str(args.width), "--frames", str(args.frames)]
    common = ["--model", str(model), "--threads", str(args.threads), *shape]
    variants = [
        ("safetensors f32", []),
        ("GGUF Q8_0, decoded (default)", ["--transformer", str(gguf_file)]),
        ("GGUF Q8_0, --gguf-int8", ["--transformer", str(gguf_file), "--gguf-int8"]),
    ]
    results = os.path.join(B.REPO, "bench", "results")
    log_path = Path(results) / f"q8_0-direct-{args.tag}.log"
    with open(log_path, "w") as logf:
        logf.write(f"# tools/bench/q8_0_direct.py --layers {args.layers} --threads {args.threads} --rounds {args.rounds} "
                   f"--height {args.height} --width {args.width} --frames {args.frames} --steps {args.steps} --tag {args.tag}\n")
        logf.write(f"# machine: {json.dumps(B.machine_info(args.wanrt))}\n")
        steps = {name: [] for name, _ in variants}
        for r in range(args.rounds):
            for name, extra in variants:
                cmd = [str(args.wanrt), "bench", *common, "--no-cfg", "--skip-vae", "--repeat", "2", "--json", *extra]
                j = json.loads(run(cmd, args.workdir, logf))
                steps[name].extend(j["transformer_step_all_s"])
                logf.write(f"round {r} {name}: step {j['transformer_step_all_s']} s, load {j['load_s']:.2f} s, "
                           f"peak RSS {j['peak_rss_bytes'] / 2**30:.2f} GiB, tokens {j['shape']['tokens']}\n")
                logf.flush()
        frames = {}
        for name, extra in variants[1:]:
            npy = args.workdir / f"frames-{len(frames)}.npy"
            cmd = [str(args.wanrt), "generate", *common, "--prompt", B.PROMPT, "--steps", str(args.steps), "--seed", "0",
                   "--save-npy", str(npy), "-o", str(args.workdir / "out.mp4"), *extra]
            t0 = time.perf_counter()
            run(cmd, args.workdir, logf)
            logf.write(f"{name}: generate {time.perf_counter() - t0:.1f} s wall\n")
            frames[name] = np.load(npy)
        (dec, int8) = frames.values()
        quality = {"psnr_db": psnr(int8, dec), "max_abs": float(np.max(np.abs(int8 - dec)))}
        logf.write(f"int8 vs decoded frames: {json.dumps(quality)}\n")

    base = min(steps[variants[1][0]])
    lines = [
        f"# GGUF Q8_0 on the int8 kernels (`--gguf-int8`) vs decoded, {args.tag}",
        "",
        f"`tools/bench/q8_0_direct.py --layers {args.layers} --threads {args.threads} --rounds {args.rounds} "
        f"--height {args.height} --width {args.width} --frames {args.frames} --steps {args.steps} --tag {args.tag}` "
        f"(log: `q8_0-direct-{args.tag}.log`). One transformer pass of the random {args.layers}-block Wan2.1-1.3B-wide "
        "model, no CFG; min and all samples over interleaved rounds, each a fresh process.",
        "",
        "| weights | step min (s) | samples (s) | vs decoded GGUF |",
        "|---|---|---|---|",
    ]
    for name, _ in variants:
        xs = steps[name]
        lines.append(f"| {name} | {min(xs):.2f} | {', '.join(f'{x:.2f}' for x in xs)} | {base / min(xs):.2f}× |")
    lines += ["", f"Fidelity ({args.steps}-step generate, same seed): the `--gguf-int8` video's frames against the decoded "
              f"GGUF's: PSNR {quality['psnr_db']:.1f} dB, max |Δ| {quality['max_abs']:.3g} (frames in [0, 1]).", ""]
    md = "\n".join(lines)
    (Path(results) / f"q8_0-direct-{args.tag}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

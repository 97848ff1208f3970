#!/usr/bin/env python3
"""Fidelity of `wanrt generate --dtype bf16|f16` (a GPU's numerics on the CPU backend) against f32.

1. The bundled demo model: the first N held-out captions (tools/demo/heldout_captions.txt), one
   seed each, generated in f32, bf16 and f16 (same seed: same initial noise); PSNR/SSIM of the
   half-precision videos against the f32 ones by `wanrt eval compare`, max |delta| of the frames.
2. The parity fixtures (fixtures/wan/{a,b,c}: tiny random pipelines with diffusers' reference
   frames): each generated with the fixture's own noise and settings in f32, bf16 and f16, compared
   with diffusers' float32 frames (`video` in ref.safetensors).

Writes bench/results/dtype-fidelity.{md,json}. Needs the release binary and numpy + safetensors
(the reference Python environment of tools/requirements.txt):

    cargo build --release -p wanrt-cli
    .venv/bin/python tools/bench/dtype_fidelity.py            # ~1 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

REPO = Path(__file__).resolve().parents[2]
DTYPES = ["f32", "bf16", "f16"]


def run(cmd: list[str]) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    return r.stdout


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10.0 * np.log10(1.0 / mse) if mse > 0 else float("inf")


def demo_part(wanrt: Path, n: int, work: Path) -> list[dict]:
    captions = [l.strip() for l in (REPO / "tools/demo/heldout_captions.txt").read_text().splitlines() if l.strip() and not l.startswith("#")][:n]
    for dt in DTYPES:
        (work / dt).mkdir(parents=True, exist_ok=True)
        (work / "mp4").mkdir(parents=True, exist_ok=True)
        for i, c in enumerate(captions):
            run([str(wanrt), "generate", "--prompt", c, "--seed", str(i), "--dtype", dt,
                 "--save-npy", str(work / dt / f"{i}.npy"), "-o", str(work / "mp4" / f"{dt}-{i}.mp4"), "--json"])
    rows = []
    for dt in DTYPES[1:]:
        cmp = json.loads(run([str(wanrt), "eval", "compare", "--reference", str(work / "f32"), "--candidate", str(work / dt), "--json"]))
        max_abs = max(float(np.abs(np.load(work / dt / f"{i}.npy") - np.load(work / "f32" / f"{i}.npy")).max()) for i in range(len(captions)))
        rows.append({"dtype": dt, "videos": len(captions), "psnr_db": cmp["psnr"], "ssim": cmp["ssim"], "max_abs_diff": max_abs,
                     "per_video_psnr_db": [it["psnr"] for it in cmp["items"]]})
    return rows


def fixture_part(wanrt: Path, work: Path) -> list[dict]:
    rows = []
    for case in ["a", "b", "c"]:
        d = REPO / "fixtures/wan" / case
        meta = json.loads((d / "meta.json").read_text())
        want = load_file(str(d / "ref.safetensors"))["video"]
        for dt in DTYPES:
            out = work / f"{case}-{dt}.npy"
            cmd = [str(wanrt), "generate", "--model", str(d), "--prompt", meta["prompt"], "--steps", str(meta["num_inference_steps"]),
                   "--guidance", str(meta["guidance_scale"]), "--max-sequence-length", str(meta["max_sequence_length"]),
                   "--noise", str(d / "noise.npy"), "--dtype", dt, "--save-npy", str(out), "-o", str(work / f"{case}-{dt}.mp4"), "--json"]
            if meta.get("negative_prompt") is not None:
                cmd += ["--negative-prompt", meta["negative_prompt"]]
            run(cmd)
            got = np.load(out).reshape(want.shape)
            rows.append({"case": case, "dtype": dt, "psnr_db": psnr(got, want), "max_abs_diff": float(np.abs(got - want).max())})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wanrt", type=Path, default=REPO / "target/release/wanrt")
    ap.add_argument("--videos", type=int, default=8, help="demo-model videos (held-out captions)")
    ap.add_argument("--results", type=Path, default=REPO / "bench/results")
    args = ap.parse_args()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with tempfile.TemporaryDirectory() as tmp:
        demo = demo_part(args.wanrt, args.videos, Path(tmp) / "demo")
        fixtures = fixture_part(args.wanrt, Path(tmp))
    res = {"started_utc": started, "command": "tools/bench/dtype_fidelity.py", "demo_vs_f32": demo, "fixtures_vs_diffusers_f32": fixtures}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "dtype-fidelity.json").write_text(json.dumps(res, indent=1) + "\n")
    md = [f"# `--dtype` fidelity (started {started})", "",
          "Made by `tools/bench/dtype_fidelity.py`. bf16/f16: the CPU backend holding activations and weights in that dtype "
          "with f32 accumulation inside each op (a GPU's numerics); the VAE runs in f32 as in diffusers' Wan pipelines.", "",
          f"## Demo model, {args.videos} held-out captions, against the same model in f32", "",
          "| dtype | PSNR (dB) | SSIM | max abs diff | per-video PSNR |", "|---|---|---|---|---|"]
    for r in demo:
        per = ", ".join("identical" if p is None else f"{p:.1f}" for p in r["per_video_psnr_db"])
        mean = "∞" if r["psnr_db"] is None else f"{r['psnr_db']:.2f}"
        md.append(f"| {r['dtype']} | {mean} | {r['ssim']:.4f} | {r['max_abs_diff']:.3e} | {per} |")
    md += ["", "## Parity fixtures, against diffusers' float32 frames", "", "| case | dtype | PSNR (dB) | max abs diff |", "|---|---|---|---|"]
    for r in fixtures:
        md.append(f"| {r['case']} | {r['dtype']} | {r['psnr_db']:.2f} | {r['max_abs_diff']:.3e} |")
    (args.results / "dtype-fidelity.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

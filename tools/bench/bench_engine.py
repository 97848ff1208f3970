#!/usr/bin/env python3
"""The engine redesign measured: the binary before it against the binary after it, and the bf16
backend's memory against torch, on the real Wan2.1-T2V-1.3B shape (random weights, the folder
bench_cpu.py builds).

Each measurement is a fresh process; the engines are interleaved per round (old / new / new bf16)
so machine noise hits them alike:

1. stages: `wanrt bench` (load, text encoding of the CFG pair at length 512, one transformer step
   of the CFG pair at 17x160x160 after a warm-up step, one VAE decode), old f32 / new f32 / new bf16;
2. whole generate, load included (2 UniPC steps with CFG, 17x160x160, the same noise): new f32,
   new bf16 and diffusers/torch f32 (bench_cpu.py's torch child), wall time and peak RSS (the
   kernel's high-water mark from wait4).

Writes bench/results/engine-redesign.{md,json,log}. Usage (repository root):

    cargo build --release -p wanrt-cli        # the new binary
    .venv/bin/python tools/bench/bench_engine.py --old /path/to/wanrt-before --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_cpu as cpu  # noqa: E402  (the model builder, children and machine facts are shared)

REPO = Path(__file__).resolve().parents[2]


def stages_cmd(wanrt: Path, model: Path, threads: int, extra: list[str]) -> list[str]:
    return [str(wanrt), "bench", "--model", str(model), "--frames", str(cpu.FRAMES), "--height", str(cpu.HEIGHT),
            "--width", str(cpu.WIDTH), "--max-sequence-length", str(cpu.TEXT_LEN), "--repeat", "1",
            "--threads", str(threads), "--json", *extra]


def generate_cmd(wanrt: Path, model: Path, threads: int, noise: Path, out: Path, extra: list[str]) -> list[str]:
    return [str(wanrt), "generate", "--model", str(model), "--prompt", cpu.PROMPT, "--negative-prompt", cpu.NEGATIVE,
            "--frames", str(cpu.FRAMES), "--height", str(cpu.HEIGHT), "--width", str(cpu.WIDTH), "--steps", str(cpu.GEN_STEPS),
            "--guidance", str(cpu.GUIDANCE), "--max-sequence-length", str(cpu.TEXT_LEN), "--noise", str(noise),
            "--threads", str(threads), "--save-npy", str(out.with_suffix(".npy")), "-o", str(out), "--json", *extra]


def best(runs: list[dict], key) -> float | None:
    vals = [key(r) for r in runs]
    vals = [v for v in vals if v is not None]
    return min(vals) if vals else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", type=Path, required=True, help="the wanrt binary from before the redesign")
    ap.add_argument("--new", type=Path, default=REPO / "target/release/wanrt")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/wanrt-bench"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--skip-torch", action="store_true", help="no torch generate (memory ratio left out)")
    ap.add_argument("--results", type=Path, default=REPO / "bench/results")
    args = ap.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    bins = {}
    for name, path in (("old", args.old), ("new", args.new)):
        dst = args.workdir / f"wanrt-{name}"
        shutil.copy2(path, dst)  # a concurrent rebuild cannot change the binary mid-run
        bins[name] = dst
    model = args.workdir / "wan21-1.3b-random"
    noise = args.workdir / "noise.npy"
    args.results.mkdir(parents=True, exist_ok=True)
    logpath = args.results / "engine-redesign.log"
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    with open(logpath, "w") as logf:
        logf.write(f"# engine redesign benchmark, started {started}\n# argv: {' '.join(sys.argv)}\n")
        info = cpu.machine_info(bins["new"])
        logf.write("# machine: " + json.dumps(info) + "\n")
        cpu.build_model(model, 2)
        cpu.make_noise(noise)
        runs: dict[str, list] = {k: [] for k in ("stages_old", "stages_new", "stages_new_bf16", "gen_new", "gen_new_bf16", "gen_torch")}
        for r in range(args.rounds):
            runs["stages_old"].append(cpu.run_child(stages_cmd(bins["old"], model, args.threads, []), logf, f"old stages r{r}", env))
            runs["stages_new"].append(cpu.run_child(stages_cmd(bins["new"], model, args.threads, []), logf, f"new stages r{r}", env))
            runs["stages_new_bf16"].append(cpu.run_child(stages_cmd(bins["new"], model, args.threads, ["--dtype", "bf16"]), logf, f"new bf16 stages r{r}", env))
        for r in range(args.rounds):
            out = args.workdir / f"engine-r{r}"
            runs["gen_new"].append(cpu.run_child(generate_cmd(bins["new"], model, args.threads, noise, out.with_name(out.name + "-f32.mp4"), []), logf, f"new generate r{r}", env))
            runs["gen_new_bf16"].append(cpu.run_child(generate_cmd(bins["new"], model, args.threads, noise, out.with_name(out.name + "-bf16.mp4"), ["--dtype", "bf16"]), logf, f"new bf16 generate r{r}", env))
            if not args.skip_torch:
                runs["gen_torch"].append(cpu.run_child(
                    [sys.executable, str(Path(cpu.__file__).resolve()), "--child", "torch-generate", "--model", str(model), "--threads", str(args.threads),
                     "--noise", str(noise), "--save-npy", str(args.workdir / f"engine-torch-r{r}.npy")],
                    logf, f"torch generate r{r}", env))

    def stage(runs_, key):
        return best(runs_, lambda r: (r["result"] or {}).get(key))

    keys = ["load_s", "text_encoder_s", "text_kv_s", "transformer_step_s", "vae_decode_s"]
    table = {name: {k: stage(runs[name], k) for k in keys} | {"peak_rss_bytes": best(runs[name], lambda r: r["maxrss_bytes"])}
             for name in ("stages_old", "stages_new", "stages_new_bf16")}
    gen = {name: {"wall_s": best(runs[name], lambda r: r["wall_s"]), "peak_rss_bytes": best(runs[name], lambda r: r["maxrss_bytes"])}
           for name in ("gen_new", "gen_new_bf16", "gen_torch") if runs[name]}
    res = {"started_utc": started, "threads": args.threads, "rounds": args.rounds, "machine": info, "stages": table, "generate": gen, "runs": runs}
    (args.results / "engine-redesign.json").write_text(json.dumps(res, indent=1) + "\n")

    gib = 2 ** 30
    md = [f"# Engine redesign: before vs after (started {started})", "",
          f"Made by `tools/bench/bench_engine.py --rounds {args.rounds}` on {info.get('Model name', '?')} "
          f"({info.get('Flags', '')}), {args.threads} threads; best of {args.rounds} interleaved rounds, each a fresh process. "
          "Old = the binary before the redesign (830b7af), new = after. Model: the real Wan2.1-T2V-1.3B transformer and "
          "Wan2.1 VAE shapes, UMT5-XXL width with 2 layers (bench_cpu.py's folder), f32 safetensors.", "",
          "## Stages (`wanrt bench`, 17x160x160, CFG pair, text length 512)", "",
          "| stage | old f32 | new f32 | new/old | new bf16 |", "|---|---|---|---|---|"]
    for k in keys + ["peak_rss_bytes"]:
        o, n, b = (table[x][k] for x in ("stages_old", "stages_new", "stages_new_bf16"))
        fmt = (lambda v: f"{v / gib:.2f} GiB") if k == "peak_rss_bytes" else (lambda v: f"{v:.3f} s")
        ratio = f"{n / o:.3f}" if o and n else "—"
        md.append(f"| {k} | {fmt(o) if o else '—'} | {fmt(n) if n else '—'} | {ratio} | {fmt(b) if b else '—'} |")
    md += ["", "## Whole generate, load included (2 steps, CFG, 17x160x160)", "", "| engine | wall | peak RSS | RSS vs torch f32 |", "|---|---|---|---|"]
    torch_rss = gen.get("gen_torch", {}).get("peak_rss_bytes")
    for name, label in (("gen_torch", "diffusers/torch f32"), ("gen_new", "wanrt f32"), ("gen_new_bf16", "wanrt --dtype bf16")):
        if name in gen:
            g = gen[name]
            rel = f"{g['peak_rss_bytes'] / torch_rss:.2f}x" if torch_rss else "—"
            md.append(f"| {label} | {g['wall_s']:.1f} s | {g['peak_rss_bytes'] / gib:.2f} GiB | {rel} |")
    md += ["", "Load average before/after each process is in the .json and .log (other jobs on the machine inflate absolute times)."]
    (args.results / "engine-redesign.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

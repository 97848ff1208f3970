#!/usr/bin/env python3
"""The optimization ladder of `wanrt optimize`, measured (issue: wanrt optimize).

Three parts, each writing its rows into one JSON + Markdown report:

  demo   Fidelity on the bundled demo model: `wanrt optimize` per mode (int8-weight, int8,
         int8 static, fp8, int8 + 8-bit attention, FFN pruning 20 %), each with its own report
         (PSNR/SSIM of the final videos vs the f32 model on the same prompts and seeds, averaged
         over --report-videos videos; transformer error; weight bytes).
  cache  Step-cache curve on the demo model at 50 steps: transformer evaluations and final-frame
         PSNR/SSIM vs uncached, per --cache-threshold.
  big    Latency on the real Wan2.1-1.3B transformer shape with random weights (the folder
         tools/bench/bench_cpu.py builds): artifacts for W8A8, W8A16, FFN-pruned 20 %, W8A8 +
         pruned; `wanrt bench` transformer step (CFG pair) of each, interleaved with the f32
         model over --rounds rounds, plus torch/diffusers f32 on the same threads.

    cargo build --release -p wanrt-cli
    .venv/bin/python tools/bench/bench_optimize.py --parts demo cache big \\
        --big-model /tmp/wanrt-bench/wan21-1.3b-random --isa avx2

`--isa avx2` sets WANRT_ISA so the int8 GEMM takes its AVX2 path (the issue's "2-core AVX2, no
VNNI" target) even on a CPU with VNNI. Nothing here is a test: ratios only mean something
within one run, and the machine's load is recorded next to them.
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def run_json(cmd, env=None):
    print("$ " + " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(map(str, cmd))}\n{p.stderr[-2000:]}")
    out = p.stdout.strip().splitlines()
    return json.loads(out[-1]), wall


def demo_part(args, env):
    modes = [
        ("int8-weight (W8A16)", ["--quant", "int8-weight"]),
        ("int8 (W8A8, dynamic, SmoothQuant 0.5)", ["--quant", "int8"]),
        ("int8 (W8A8, static scales)", ["--quant", "int8", "--activations", "static"]),
        ("fp8 (E4M3 W+A)", ["--quant", "fp8"]),
        ("int8 + 8-bit attention", ["--quant", "int8", "--attn-quant", "int8"]),
        ("FFN pruned 20% (f32)", ["--quant", "none", "--prune-ffn", "0.2"]),
        ("int8 + FFN pruned 20%", ["--quant", "int8", "--prune-ffn", "0.2"]),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in modes:
            out = Path(tmp) / str(len(rows))
            rep, wall = run_json([args.wanrt, "optimize", "--model", args.demo_model, *flags, "--sensitivity",
                                  "--report-videos", str(args.report_videos), "--threads", args.threads, "--json",
                                  "-o", out], env)
            opt = rep["variants"][1]
            base = rep["variants"][0]
            s = rep["summary"]
            groups = {}
            for layer, err in s["sensitivity"]:
                kind = layer.split(".", 2)[-1] if layer.startswith("blocks.") else layer
                groups.setdefault(kind, []).append(err)
            rows.append({
                "variant": name, "flags": flags,
                "psnr_db": opt["psnr_db"], "ssim": opt["ssim"],
                "transformer_rel_error": s["transformer_error"],
                "weight_bytes": opt["transformer_weight_bytes"], "weight_bytes_f32": base["transformer_weight_bytes"],
                "sensitivity_by_group_max": {k: max(v) for k, v in groups.items()},
                "optimize_wall_s": wall,
            })
    return rows


def psnr_ssim(wanrt, a, b, env):
    rep, _ = run_json([wanrt, "eval", "compare", "--reference", a, "--candidate", b, "--json"], env)
    return rep["psnr"], rep["ssim"]


def cache_part(args, env):
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "ref.npy"
        base = [args.wanrt, "generate", "--model", args.demo_model, "--prompt", args.prompt, "--steps", "50",
                "--seed", "0", "--threads", args.threads, "--json"]
        run_json([*base, "-o", Path(tmp) / "ref.gif", "--save-npy", ref], env)
        for t in args.thresholds:
            npy = Path(tmp) / f"t{t}.npy"
            rep, wall = run_json([*base, "--cache-threshold", t, "-o", Path(tmp) / f"t{t}.gif", "--save-npy", npy], env)
            v = rep["videos"][0]
            psnr, ssim = psnr_ssim(args.wanrt, ref, npy, env) if float(t) > 0 else (None, None)
            evals = v["transformer_evals"]
            rows.append({"threshold": float(t), "transformer_evals": evals, "steps": 50,
                         "evals_reduction": 50 / max(evals, 1), "psnr_db": psnr, "ssim": ssim,
                         "denoising_s": v["timings_s"]["denoising"]})
    return rows


def big_part(args, env):
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    size = ["--frames", "17", "--height", "160", "--width", "160"]
    artifacts = [
        ("W8A8 (int8)", "int8", ["--quant", "int8"]),
        ("W8A16 (int8-weight)", "int8w", ["--quant", "int8-weight"]),
        ("FFN pruned 20% (f32)", "prune20", ["--quant", "none", "--prune-ffn", "0.2"]),
        ("W8A8 + FFN pruned 20%", "int8-prune20", ["--quant", "int8", "--prune-ffn", "0.2"]),
        ("W8A8 + 8-bit attention", "int8-attn", ["--quant", "int8", "--attn-quant", "int8"]),
    ]
    artifacts = [a for a in artifacts if a[1] in args.big_variants]
    made = {}
    for name, dirname, flags in artifacts:
        out = work / f"opt-{dirname}"
        if not (out / "wanrt-artifact.json").is_file():
            shutil.rmtree(out, ignore_errors=True)
            rep, wall = run_json([args.wanrt, "optimize", "--model", args.big_model, *flags, *size, "--calib-prompts", "1",
                                  "--calib-steps", "2", "--samples", "1", "--no-report", "--threads", args.threads,
                                  "--json", "-o", out], env)
            made[name] = {"transformer_rel_error": rep["summary"]["transformer_error"], "optimize_wall_s": wall,
                          "weight_bytes": rep["summary"]["weight_bytes_after"]}
        else:
            made[name] = {"note": "artifact reused from an earlier run"}
    variants = [("f32", args.big_model)] + [(n, work / f"opt-{d}") for n, d, _ in artifacts]
    bench = [args.wanrt, "bench", *size, "--max-sequence-length", "512", "--repeat", "1", "--threads", args.threads,
             "--json", "--skip-vae"]
    rounds = []
    for r in range(args.rounds):
        row = {"uptime_before": uptime()}
        for name, path in variants:
            rep, _ = run_json([*bench, "--model", path], env)
            row[name] = {k: rep.get(k) for k in ("transformer_step_s", "load_s", "peak_rss_bytes", "text_kv_s")}
        if args.torch:
            torch_env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
            p = subprocess.run([sys.executable, str(REPO / "tools/bench/bench_cpu.py"), "--child", "torch-stages",
                                "--model", str(args.big_model), "--threads", str(args.threads), "--repeat", "1"],
                               capture_output=True, text=True, env=torch_env)
            line = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
            row["torch f32"] = json.loads(line[-1][7:]) if line else {"error": p.stderr[-500:]}
        row["uptime_after"] = uptime()
        rounds.append(row)
    return {"artifacts": made, "rounds": rounds}


def render(report):
    md = [f"# wanrt optimize ladder — {report['date']}", "", f"Command: `{report['command']}`", "",
          f"Load before: `{report['uptime_before']}`", ""]
    if "demo" in report:
        md += [f"## Fidelity on the bundled demo model (final frames vs f32, same prompts/seeds, mean of "
               f"{report['report_videos']} videos)", "",
               "| variant | PSNR (dB) | SSIM | transformer rel. error | weights |", "|---|---|---|---|---|"]
        for r in report["demo"]:
            md.append(f"| {r['variant']} | {r['psnr_db']:.2f} | {r['ssim']:.4f} | {r['transformer_rel_error']:.2e} | "
                      f"{r['weight_bytes'] / 2**20:.2f} MiB of {r['weight_bytes_f32'] / 2**20:.2f} MiB |")
        keys = sorted({k for r in report["demo"] for k in r["sensitivity_by_group_max"]})
        md += ["", "Most sensitive layer per group (relative transformer output error with only that layer quantized):", "",
               "| variant | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for r in report["demo"]:
            g = r["sensitivity_by_group_max"]
            if g:
                md.append(f"| {r['variant']} | " + " | ".join(f"{g[k]:.1e}" if k in g else "—" for k in keys) + " |")
        md.append("")
    if "cache" in report:
        md += ["## Step cache on the demo model (50 UniPC steps)", "",
               "| threshold | transformer evaluations | fewer evaluations | PSNR vs uncached (dB) | SSIM | denoising (s) |",
               "|---|---|---|---|---|---|"]
        for r in report["cache"]:
            psnr = "—" if r["psnr_db"] is None else f"{r['psnr_db']:.2f}"
            ssim = "—" if r["ssim"] is None else f"{r['ssim']:.4f}"
            md.append(f"| {r['threshold']} | {r['transformer_evals']} | {r['evals_reduction']:.2f}× | {psnr} | {ssim} | "
                      f"{r['denoising_s']:.2f} |")
        md.append("")
    if "big" in report:
        big = report["big"]
        names = [k for k in big["rounds"][0] if k not in ("uptime_before", "uptime_after")]
        md += ["## Wan2.1-1.3B transformer shape, random weights, 17×160×160 (500 tokens), CFG pair, "
               f"{report['threads']} threads, int8 path `{report['isa']}`", "",
               "| variant | " + " | ".join(f"round {i + 1} step (s)" for i in range(len(big["rounds"])))
               + " | best | vs wanrt f32 | vs torch f32 |", "|---|" + "---|" * (len(big["rounds"]) + 3)]
        best = {n: min(r[n].get("transformer_step_s") or float("inf") for r in big["rounds"]) for n in names}
        for n in names:
            cells = " | ".join(f"{r[n].get('transformer_step_s', float('nan')):.2f}" for r in big["rounds"])
            vs_f32 = best["f32"] / best[n]
            vs_torch = best.get("torch f32", float("nan")) / best[n]
            md.append(f"| {n} | {cells} | {best[n]:.2f} | {vs_f32:.2f}× | {vs_torch:.2f}× |")
        md += ["", "Artifacts: " + json.dumps(big["artifacts"]), ""]
        for i, r in enumerate(big["rounds"]):
            md.append(f"Round {i + 1}: before `{r['uptime_before']}`, after `{r['uptime_after']}`")
        md.append("")
    return "\n".join(md)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["demo", "cache"], choices=["demo", "cache", "big"])
    ap.add_argument("--wanrt", default=str(REPO / "target/release/wanrt"))
    ap.add_argument("--demo-model", default=str(REPO / "models/demo"))
    ap.add_argument("--big-model", default="/tmp/wanrt-bench/wan21-1.3b-random")
    ap.add_argument("--workdir", default="/tmp/wanrt-bench/optimize")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--isa", default=None, help="WANRT_ISA for the int8 kernels (scalar, avx2, avxvnni, avx512vnni)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--big-variants", nargs="+", default=["int8", "int8w", "prune20", "int8-prune20"],
                    choices=["int8", "int8w", "prune20", "int8-prune20", "int8-attn"], help="big: artifacts timed next to f32")
    ap.add_argument("--report-videos", type=int, default=8, help="demo: videos per variant the fidelity is averaged over")
    ap.add_argument("--no-torch", dest="torch", action="store_false")
    ap.add_argument("--prompt", default="a red circle moves left on a blue background")
    ap.add_argument("--thresholds", nargs="+", default=["0", "0.02", "0.05", "0.1", "0.2", "0.3", "0.5", "1.0"])
    ap.add_argument("--out", default=str(REPO / "bench/results/optimize-ladder"))
    args = ap.parse_args()
    env = dict(os.environ)
    if args.isa:
        env["WANRT_ISA"] = args.isa
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(sys.argv), "uptime_before": uptime(), "threads": args.threads,
              "isa": args.isa or "detected", "report_videos": args.report_videos}
    if "demo" in args.parts:
        report["demo"] = demo_part(args, env)
    if "cache" in args.parts:
        report["cache"] = cache_part(args, env)
    if "big" in args.parts:
        report["big"] = big_part(args, env)
    report["uptime_after"] = uptime()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = "-".join(args.parts)
    Path(f"{out}-{suffix}.json").write_text(json.dumps(report, indent=1) + "\n")
    Path(f"{out}-{suffix}.md").write_text(render(report))
    print(render(report))


if __name__ == "__main__":
    main()

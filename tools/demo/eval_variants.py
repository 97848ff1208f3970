"""Prompt accuracy and domain Fréchet distance of the bundled demo model and its optimized
variants, all run by the Rust engine (issue 7: "… and of its INT8/pruned variants").

For each variant: `wanrt optimize` (the source model itself for `f32`), `wanrt generate --prompts`
on the 50 held-out captions (2 videos each, seeds 0, 1 per caption; scored as the H.264 MP4 files
`generate` writes, which costs the f32 model 0.04 of accuracy against its raw frames, see
crates/wanrt-cli/tests/demo_model.rs), `wanrt eval domain` against
real dataset clips of the same captions (seeds 900000+). Also the real-vs-real floor (seeds
950000+). Writes a Markdown table (and the raw JSON beside it).

    cargo build --release -p wanrt-cli
    .venv/bin/python tools/demo/eval_variants.py --out bench/results/demo-variants-domain
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1].parent
sys.path.insert(0, str(REPO / "tools/demo"))
import dataset as ds  # noqa: E402

VARIANTS = [
    ("f32 (bundled model)", None),
    ("int8-weight (W8A16)", ["--quant", "int8-weight"]),
    ("int8 (W8A8)", ["--quant", "int8"]),
    ("int8 + 8-bit attention", ["--quant", "int8", "--attn-quant", "int8"]),
    ("int8 + text encoder int8-weight", ["--quant", "int8", "--text-encoder", "int8-weight"]),
    ("fp8", ["--quant", "fp8"]),
    ("FFN pruned 20 % (f32)", ["--quant", "none", "--prune-ffn", "0.2"]),
]


def run(cmd):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{p.stderr[-2000:]}")
    return p.stdout


def write_clips(folder: Path, captions, seed_base: int, k: int):
    folder.mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(captions):
        for j in range(k):
            np.save(folder / f"{i:03d}_{j}.npy", ds.render(c, seed_base + i * k + j))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wanrt", default=str(REPO / "target/release/wanrt"))
    ap.add_argument("--model", default=str(REPO / "models/demo"))
    ap.add_argument("--work", default=str(REPO / "out/demo-variants"))
    ap.add_argument("--videos-per-caption", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench/results/demo-variants-domain"))
    args = ap.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    _, held_out = ds.caption_split()
    k = args.videos_per_caption
    prompts = work / "heldout.txt"
    prompts.write_text("".join(f"{c.text()}\n" for c in held_out))
    write_clips(work / "real", held_out, 900_000, k)
    write_clips(work / "real_b", held_out, 950_000, k)
    floor = json.loads(run([args.wanrt, "eval", "domain", "--videos", work / "real_b", "--real", work / "real", "--json"]))

    rows = []
    for name, flags in VARIANTS:
        slug = "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")
        model = Path(args.model)
        if flags:
            model = work / f"model-{slug}"
            run([args.wanrt, "optimize", "--model", args.model, *flags, "--no-report", "--json", "-o", model])
        videos = work / f"videos-{slug}"
        run([args.wanrt, "generate", "--model", model, "--prompts", prompts, "--videos-per-prompt", k,
             "-o", videos, "--json"])
        res = json.loads(run([args.wanrt, "eval", "domain", "--videos", videos, "--prompts",
                              videos / "prompts.json", "--real", work / "real", "--json"]))
        rows.append({"variant": name, "flags": flags or [], "prompt_accuracy": res["prompt_accuracy"],
                     "attributes": res["attributes"], "fd": res["fd"]})
        print(f"{name}: accuracy {res['prompt_accuracy']:.3f}, FD {res['fd']:.1f}", flush=True)

    n = len(held_out) * k
    md = ["# Demo model and its optimized variants: domain prompt accuracy and FD (Rust engine)", "",
          f"Command: `tools/demo/eval_variants.py` ({len(held_out)} held-out captions × {k} videos = {n} per "
          f"variant, wanrt's own noise, seeds 0..{k - 1} per caption, scored as the MP4 files `wanrt generate` "
          f"writes; FD against {n} real clips of the same captions). Real-vs-real FD floor: {floor['fd']:.1f}.", "",
          "| variant | prompt accuracy | shape | colour | direction | background | domain FD |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        a = r["attributes"]
        md.append(f"| {r['variant']} | {r['prompt_accuracy']:.3f} | {a['shape']:.2f} | {a['colour']:.2f} | "
                  f"{a['direction']:.2f} | {a['background']:.2f} | {r['fd']:.1f} |")
    out = Path(args.out)
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"floor_fd": floor["fd"], "rows": rows}, indent=1) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

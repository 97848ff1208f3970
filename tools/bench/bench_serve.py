#!/usr/bin/env python3
"""Load benchmark of ``wanrt serve``: throughput (videos/hour) and latency (p50/p95) of the
scheduler settings, side by side on the same machine, in one run.

For each configuration it starts a fresh ``wanrt serve`` (its own SQLite queue and outputs
folder in a temporary directory, bound to 127.0.0.1 only), submits ``--jobs`` jobs at once from
``--clients`` concurrent HTTP clients (a burst, different prompts and seeds, the model's default
size and steps unless overridden), waits until every job is completed, downloads each video,
and stops the server. Then:

* throughput = jobs / (last completion - first submission), in videos/hour;
* latency = each job's submission-to-completion time as the server measured it
  (``timings.total`` of the video object), p50 and p95 (nearest rank);
* per-stage medians from the same timings (queue_wait, text_encoder, denoising, vae_decode, write).

Configurations (``--configs``, default all four):

* ``one-at-a-time``: ``--batch 1 --overlap off`` — the baseline: one job through all stages, then the next;
* ``overlap``: ``--batch 1 --overlap on`` — text encoding / VAE decode of one job beside the
  transformer steps of the next;
* ``batch4``: ``--batch 4 --overlap on`` — up to 4 compatible jobs share each transformer call;
* ``batch8``: ``--batch 8 --overlap on``.

The order of configurations is repeated ``--rounds`` times (interleaved, since machines are noisy);
the table reports the median over rounds. Results go to bench/results/serve-load.{json,md}.
Only the Python standard library is needed. Usage (from the repository root):

    cargo build --release -p wanrt-cli
    python3 tools/bench/bench_serve.py                       # demo model, 48 jobs, 8 clients, 2 rounds
    python3 tools/bench/bench_serve.py --model DIR --jobs 16 --steps 4 --size 160x160 --frames 17
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CONFIGS = {
    "one-at-a-time": ["--batch", "1", "--overlap", "off"],
    "overlap": ["--batch", "1", "--overlap", "on"],
    "batch4": ["--batch", "4", "--overlap", "on"],
    "batch8": ["--batch", "8", "--overlap", "on"],
}


def request(method: str, url: str, body: dict | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


def start_server(cmd: list[str], workdir: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    args = cmd + ["--bind", "127.0.0.1:0", "--db", str(workdir / "jobs.sqlite"),
                  "--outputs", str(workdir / "videos")] + extra
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert p.stdout is not None
    for line in p.stdout:
        if line.startswith("listening on "):
            base = line.split()[-1].strip()
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            return p, base
    raise SystemExit(f"server exited before listening: {' '.join(args)}")


def run_config(name: str, cmd: list[str], extra: list[str], a: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="wanrt-serve-bench-") as tmp:
        proc, base = start_server(cmd, Path(tmp), extra)
        try:
            body = {}
            if a.steps:
                body["num_inference_steps"] = a.steps
            if a.size:
                body["size"] = a.size
            if a.frames:
                body["num_frames"] = a.frames
            ids: list[str] = []
            lock = threading.Lock()
            errors: list[str] = []

            def client(c: int) -> None:
                for j in range(c, a.jobs, a.clients):
                    st, raw = request("POST", f"{base}/v1/videos",
                                      dict(body, prompt=f"benchmark prompt {j}: a red ball rolls", seed=j))
                    if st != 202:
                        errors.append(f"POST {st}: {raw[:200]!r}")
                        return
                    with lock:
                        ids.append(json.loads(raw)["id"])

            t0 = time.monotonic()
            threads = [threading.Thread(target=client, args=(c,)) for c in range(a.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise SystemExit(f"{name}: {errors[0]}")
            done: dict[str, dict] = {}
            while len(done) < len(ids):
                for i in ids:
                    if i in done:
                        continue
                    st, raw = request("GET", f"{base}/v1/videos/{i}")
                    v = json.loads(raw)
                    if v["status"] == "completed":
                        done[i] = v
                    elif v["status"] in ("failed", "cancelled"):
                        raise SystemExit(f"{name}: job {i} {v['status']}: {v.get('error')}")
                time.sleep(0.05)
            makespan = time.monotonic() - t0
            for i in ids:
                st, raw = request("GET", f"{base}/v1/videos/{i}/content")
                if st != 200 or raw[4:8] != b"ftyp":
                    raise SystemExit(f"{name}: content of {i}: HTTP {st}")
            st, metrics = request("GET", f"{base}/metrics")
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    lat = [v["timings"]["total"] for v in done.values()]
    stages = {}
    for k in ("queue_wait", "text_encoder", "denoising", "vae_decode", "write"):
        vals = [v["timings"][k] for v in done.values() if k in v["timings"]]
        if vals:
            stages[k] = statistics.median(vals)
    batch_sum = batch_count = 0.0
    for line in metrics.decode().splitlines():
        if line.startswith("wanrt_batch_size_sum "):
            batch_sum = float(line.split()[1])
        if line.startswith("wanrt_batch_size_count "):
            batch_count = float(line.split()[1])
    first = next(iter(done.values()))["parameters"]
    return {
        "config": name,
        "flags": extra,
        "jobs": len(ids),
        "makespan_s": makespan,
        "videos_per_hour": len(ids) / makespan * 3600.0,
        "latency_p50_s": percentile(lat, 50),
        "latency_p95_s": percentile(lat, 95),
        "mean_batch": batch_sum / batch_count if batch_count else None,
        "stage_median_s": stages,
        "video": {k: first[k] for k in ("width", "height", "num_frames", "num_inference_steps", "guidance_scale")},
    }


def render(rows: list[dict], meta: dict) -> str:
    base = next((r for r in rows if r["config"] == "one-at-a-time"), rows[0])
    v = rows[0]["video"]
    out = [
        f"# `wanrt serve` load benchmark ({meta['date']})",
        "",
        f"{meta['jobs']} jobs submitted at once by {meta['clients']} clients; model `{meta['model']}`, "
        f"{v['width']}x{v['height']}, {v['num_frames']} frames, {v['num_inference_steps']} steps, "
        f"guidance {v['guidance_scale']}; {meta['cpus']} CPUs (1-min load average {meta['loadavg_1min'][0]:.1f} "
        f"at start, {meta['loadavg_1min'][1]:.1f} at end); median of {meta['rounds']} interleaved rounds.",
        f"Command: `{meta['command']}`",
        "",
        "| config | flags | videos/hour | vs one-at-a-time | p50 latency s | p95 latency s | mean batch |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['config']} | `{' '.join(r['flags'])}` | {r['videos_per_hour']:.0f} | "
            f"{r['videos_per_hour'] / base['videos_per_hour']:.2f}x | {r['latency_p50_s']:.2f} | "
            f"{r['latency_p95_s']:.2f} | {r['mean_batch'] or 0:.2f} |"
        )
    out += ["", "Median seconds per stage (per job; denoising is per batch):", "",
            "| config | queue_wait | text_encoder | denoising | vae_decode | write |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        s = r["stage_median_s"]
        out.append(f"| {r['config']} | " + " | ".join(f"{s.get(k, 0):.3f}" for k in
                   ("queue_wait", "text_encoder", "denoising", "vae_decode", "write")) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wanrt", default=str(ROOT / "target/release/wanrt"), help="the wanrt binary")
    ap.add_argument("--model", default=str(ROOT / "models/demo"))
    ap.add_argument("--jobs", type=int, default=48)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="num_inference_steps (default: the model's)")
    ap.add_argument("--size", default=None, help="WxH (default: the model's)")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--out", default=str(ROOT / "bench/results/serve-load"), help="writes OUT.json and OUT.md")
    a = ap.parse_args()
    if not Path(a.wanrt).is_file():
        raise SystemExit(f"{a.wanrt} not found: cargo build --release -p wanrt-cli")
    cmd = [a.wanrt, "serve", "--model", a.model]
    results: dict[str, list[dict]] = {c: [] for c in a.configs}
    load_start = os.getloadavg()[0]
    for rnd in range(a.rounds):
        for c in a.configs:
            r = run_config(c, cmd, CONFIGS[c], a)
            results[c].append(r)
            print(f"round {rnd + 1} {c:>14}: {r['videos_per_hour']:8.0f} videos/h  p50 {r['latency_p50_s']:.2f} s"
                  f"  p95 {r['latency_p95_s']:.2f} s  mean batch {r['mean_batch'] or 0:.2f}", file=sys.stderr)
    load_end = os.getloadavg()[0]
    rows = []
    for c in a.configs:
        rs = results[c]
        # Each figure is its own median over rounds; the stage table comes from the median-throughput round.
        rep = sorted(rs, key=lambda r: r["videos_per_hour"])[(len(rs) - 1) // 2]
        row = dict(rep)
        for k in ("videos_per_hour", "latency_p50_s", "latency_p95_s", "makespan_s"):
            row[k] = statistics.median(r[k] for r in rs)
        row["rounds"] = [{k: r[k] for k in ("videos_per_hour", "latency_p50_s", "latency_p95_s")} for r in rs]
        rows.append(row)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "jobs": a.jobs,
        "clients": a.clients,
        "rounds": a.rounds,
        "model": os.path.basename(os.path.normpath(a.model)),
        "cpus": os.cpu_count(),
        "loadavg_1min": [load_start, load_end],
        "command": "python3 tools/bench/bench_serve.py " + " ".join(sys.argv[1:]),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out + ".json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    md = render(rows, meta)
    Path(a.out + ".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

"""Evaluate the bundled demo model with the domain evaluator (Python reference numbers).

For each of the 50 held-out captions (tools/demo/dataset.py caption_split; captions the
generator never saw in training) it generates K videos with diffusers' WanPipeline from
the model folder (defaults from its wanrt.json; video j of caption i uses
torch.Generator seed = seed + i*K + j), then with models/demo-evaluator:

  prompt accuracy   fraction of videos whose four predicted attributes (shape, colour,
                    direction, background) all equal the caption's; per-attribute too
  domain FD         Fréchet distance between evaluator features (128-d, float64,
                    mu/sigma with np.cov, scipy sqrtm) of the generated videos and of
                    real dataset clips of the same captions (seeds 900000+)
  FD baseline       the same distance between two disjoint sets of real clips of the
                    same size (what "as good as the data" looks like at this sample size)

The same is reported for 50 training captions (--train-captions) for comparison.

    python tools/demo/eval_demo.py --model models/demo --json out/demo-eval.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset as ds  # noqa: E402
import evaluator as ev  # noqa: E402
import sample as sp  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def frechet(f1: np.ndarray, f2: np.ndarray) -> float:
    from scipy import linalg

    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    if not np.isfinite(covmean).all():
        off = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + off).dot(s2 + off))
    covmean = covmean.real
    d = mu1 - mu2
    return float(d.dot(d) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def real_clips(captions: list[ds.Caption], k: int, seed_base: int) -> torch.Tensor:
    clips = [ds.render(c, seed_base + i * k + j) for i, c in enumerate(captions) for j in range(k)]
    return torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3).contiguous()


def score(m, videos: torch.Tensor, captions: list[ds.Caption], k: int) -> tuple[np.ndarray, dict]:
    feats, pred = ev.predict(m, videos)
    labels = {a: torch.tensor([c.labels()[a] for c in captions for _ in range(k)]) for a in ds.ATTRIBUTES}
    ok = torch.ones(videos.shape[0], dtype=torch.bool)
    res = {}
    for a in ds.ATTRIBUTES:
        hit = pred[a] == labels[a]
        res[a] = float(hit.float().mean())
        ok &= hit
    res["prompt_accuracy"] = float(ok.float().mean())
    res["failures"] = [
        {"caption": captions[i // k].text(), "predicted": {a: ds.ATTRIBUTES[a][int(pred[a][i])] for a in ds.ATTRIBUTES}}
        for i in range(videos.shape[0])
        if not ok[i]
    ]
    return feats.numpy(), res


def evaluate(pipe, defaults, m, captions, k: int, seed: int) -> dict:
    t0 = time.time()
    prompts = [c.text() for c in captions for _ in range(k)]
    vids = sp.generate(pipe, defaults, prompts, seed)  # (N, F, H, W, 3)
    gen_s = time.time() - t0
    vids = np.round(np.clip(vids, 0, 1) * 255) / 255  # as wanrt eval: uint8 quantization first
    fake = torch.from_numpy(vids.astype(np.float32)).permute(0, 4, 1, 2, 3).contiguous()
    f_fake, res = score(m, fake, captions, k)
    real_a = real_clips(captions, k, 900_000)
    real_b = real_clips(captions, k, 950_000)
    f_a, res_real = score(m, real_a, captions, k)
    f_b, _ = score(m, real_b, captions, k)
    res["fd_model_vs_real"] = frechet(f_fake, f_a)
    res["fd_real_vs_real_baseline"] = frechet(f_b, f_a)
    res["real_clips_prompt_accuracy"] = res_real["prompt_accuracy"]
    res["n_videos"] = len(prompts)
    res["generation_seconds"] = round(gen_s, 1)
    return res, vids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "demo"))
    ap.add_argument("--evaluator", default=os.path.join(ROOT, "models", "demo-evaluator"))
    ap.add_argument("--videos-per-caption", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--train-captions", action="store_true", help="also score 50 training captions")
    ap.add_argument("--no-held-out", action="store_true", help="skip the held-out captions (tune settings on --train-captions only)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument("--sheet", default=None, help="write a PNG contact sheet of the held-out videos")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pipe, d = sp.load(a.model)
    if a.steps is not None:
        d["num_inference_steps"] = a.steps
    if a.guidance is not None:
        d["guidance_scale"] = a.guidance
    m = ev.load(a.evaluator)
    train, held = ds.caption_split()
    out = {"model": os.path.relpath(a.model, ROOT), "settings": d, "seed": a.seed}
    if not a.no_held_out:
        out["held_out"], vids = evaluate(pipe, d, m, held, a.videos_per_caption, a.seed)
        print("held_out", json.dumps({k: v for k, v in out["held_out"].items() if k != "failures"}), flush=True)
    if a.train_captions:
        sel = [train[i] for i in np.random.default_rng(0).choice(len(train), 50, replace=False)]
        out["train"], _ = evaluate(pipe, d, m, sel, a.videos_per_caption, a.seed)
        print("train", json.dumps({k: v for k, v in out["train"].items() if k != "failures"}), flush=True)
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    if a.sheet and not a.no_held_out:
        from PIL import Image

        rows = [(sp.strip(v) * 255).round().astype(np.uint8) for v in vids]
        cols = 2
        rows += [np.zeros_like(rows[0])] * (-len(rows) % cols)
        grid = np.concatenate([np.concatenate(rows[i : i + cols], axis=1) for i in range(0, len(rows), cols)], axis=0)
        Image.fromarray(grid).save(a.sheet)


if __name__ == "__main__":
    main()

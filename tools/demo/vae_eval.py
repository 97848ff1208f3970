"""Reconstruction prompt accuracy of a demo VAE (the ceiling for the generator).

Renders K real clips for each of the 50 held-out captions (seeds 900000+, as eval_demo.py),
encodes them (posterior mode), decodes with AutoencoderKLWan.decode (clamped), quantizes to
uint8 and scores them with models/demo-evaluator: per-attribute and all-four accuracy, L1.

    python tools/demo/vae_eval.py --vae models/demo/vae
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset as ds  # noqa: E402
import evaluator as ev  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@torch.no_grad()
def recon_accuracy(vae, m, captions, k: int = 2, seed_base: int = 900_000, bs: int = 10) -> dict:
    clips = [ds.render(c, seed_base + i * k + j) for i, c in enumerate(captions) for j in range(k)]
    x = torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3).contiguous()  # [0,1]
    recs = []
    for i in range(0, x.shape[0], bs):
        xb = x[i : i + bs] * 2 - 1
        z = vae.encode(xb.to(vae.dtype)).latent_dist.mode()
        recs.append(((vae.decode(z).sample.float().clamp(-1, 1) + 1) / 2))
    rec = torch.cat(recs)
    rec = torch.round(rec * 255) / 255
    _, pred = ev.predict(m, rec)
    ok = torch.ones(rec.shape[0], dtype=torch.bool)
    res = {}
    for a in ds.ATTRIBUTES:
        lab = torch.tensor([c.labels()[a] for c in captions for _ in range(k)])
        hit = pred[a] == lab
        res[a] = round(float(hit.float().mean()), 3)
        ok &= hit
    res["prompt_accuracy"] = round(float(ok.float().mean()), 3)
    res["l1"] = round(float((rec - x).abs().mean()), 4)
    res["n"] = int(rec.shape[0])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vae", default=os.path.join(ROOT, "models", "demo", "vae"))
    ap.add_argument("--evaluator", default=os.path.join(ROOT, "models", "demo-evaluator"))
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan.from_pretrained(a.vae, torch_dtype=torch.float32).eval()
    _, held = ds.caption_split()
    print(json.dumps(recon_accuracy(vae, ev.load(a.evaluator), held, a.k)))


if __name__ == "__main__":
    main()

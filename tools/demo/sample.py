"""Generate videos with diffusers' WanPipeline from a saved demo-model folder.

Uses the folder's wanrt.json for defaults (size, frames, steps, guidance, max_sequence_length).
Writes one PNG strip per prompt (frames 0, 4, 8, 12, 16 side by side) and one contact sheet.

    python tools/demo/sample.py --model models/demo --out out/demo-samples \
        --prompt "a green square moves right on a black background" --prompt "..."
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch


def load(model: str, dtype=torch.float32):
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(model, torch_dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    with open(os.path.join(model, "wanrt.json")) as f:
        defaults = json.load(f)
    return pipe, defaults


@torch.no_grad()
def generate(pipe, defaults: dict, prompts: list[str], seed: int, batch: int = 8, **over) -> np.ndarray:
    """(N, F, H, W, 3) float32 in [0, 1]; prompt i uses generator seed `seed + i`."""
    kw = dict(
        height=defaults["height"],
        width=defaults["width"],
        num_frames=defaults["num_frames"],
        num_inference_steps=defaults["num_inference_steps"],
        guidance_scale=defaults["guidance_scale"],
        max_sequence_length=defaults["max_sequence_length"],
    )
    kw.update(over)
    out = []
    for i0 in range(0, len(prompts), batch):
        ps = prompts[i0 : i0 + batch]
        gens = [torch.Generator().manual_seed(seed + i0 + j) for j in range(len(ps))]
        neg = [defaults.get("negative_prompt", "")] * len(ps)
        v = pipe(prompt=ps, negative_prompt=neg, generator=gens, output_type="np", **kw).frames
        out.append(np.asarray(v, dtype=np.float32))
    return np.concatenate(out)


def strip(video: np.ndarray) -> np.ndarray:
    f = video.shape[0]
    idx = [round(i * (f - 1) / 4) for i in range(5)]
    return np.concatenate([video[i] for i in idx], axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/demo")
    ap.add_argument("--out", default="out/demo-samples")
    ap.add_argument("--prompt", action="append", default=[])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from PIL import Image

    os.makedirs(a.out, exist_ok=True)
    pipe, d = load(a.model)
    over = {}
    if a.steps is not None:
        over["num_inference_steps"] = a.steps
    if a.guidance is not None:
        over["guidance_scale"] = a.guidance
    prompts = a.prompt or ["a green square moves right on a black background"]
    vids = generate(pipe, d, prompts, a.seed, **over)
    rows = []
    for i, (p, v) in enumerate(zip(prompts, vids)):
        s = (np.clip(strip(v), 0, 1) * 255).round().astype(np.uint8)
        Image.fromarray(s).save(os.path.join(a.out, f"{i:02d}.png"))
        rows.append(s)
        print(f"{i:02d}.png  {p}")
    sheet = np.concatenate(rows, axis=0)
    Image.fromarray(sheet).resize((sheet.shape[1] * 2, sheet.shape[0] * 2), Image.NEAREST).save(os.path.join(a.out, "sheet.png"))


if __name__ == "__main__":
    main()

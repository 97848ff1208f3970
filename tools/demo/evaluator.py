"""Domain evaluator for the demo model: a small Conv3d video classifier.

Predicts the four caption attributes (shape, colour, direction, background) of a
17x32x32 clip; its 128-d penultimate features (after global average pooling) give a
Fréchet distance for this domain, its predictions a prompt accuracy.

Architecture (exactly what models/demo-evaluator/config.json describes):

    x: (B, 3, 17, 32, 32) RGB float in [0, 1]  ->  (x - 0.5) / 0.5
    conv3d  3->16  k(1,3,3) s1 p(0,1,1) + relu -> (16, 17, 32, 32)
    conv3d 16->32  k3 s(1,2,2) p1 + relu       -> (32, 17, 16, 16)
    conv3d 32->64  k3 s2       p1 + relu       -> (64,  9,  8,  8)
    conv3d 64->128 k3 s2       p1 + relu       -> (128, 5,  4,  4)
    global average pool over (T, H, W)     -> features (128)
    heads: linear 128->3 (shape), 128->5 (colour), 128->4 (direction), 128->4 (background)

Trained on freshly rendered clips of all 240 captions with light augmentation
(Gaussian blur, pixel noise, small brightness jitter) so that it reads the slightly
soft videos a generator produces; tested on clips from seeds never used in training.

    python tools/demo/evaluator.py train   # -> models/demo-evaluator/{model.safetensors,config.json}
    python tools/demo/evaluator.py test    # held-out accuracy per attribute
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset as ds  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "models", "demo-evaluator")

# (in, out, kernel, stride, padding)
CONVS = [
    (3, 16, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    (16, 32, (3, 3, 3), (1, 2, 2), (1, 1, 1)),
    (32, 64, (3, 3, 3), (2, 2, 2), (1, 1, 1)),
    (64, 128, (3, 3, 3), (2, 2, 2), (1, 1, 1)),
]
FEATURE_DIM = CONVS[-1][1]
MEAN, STD = 0.5, 0.5
TRAIN_SEED_BASE = 1_000_000  # training clips: seeds >= this; test clips: seeds < 100_000
TEST_SEED_BASE = 50_000


class Evaluator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout, k, s, p in CONVS:
            layers += [nn.Conv3d(cin, cout, k, s, p), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({k: nn.Linear(FEATURE_DIM, len(v)) for k, v in ds.ATTRIBUTES.items()})

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        """video: (B, 3, T, H, W) in [0, 1] -> (B, 128) penultimate features."""
        x = (video - MEAN) / STD
        return self.features(x).mean(dim=(2, 3, 4))

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        f = self.embed(video)
        return f, {k: h(f) for k, h in self.heads.items()}


def config_json() -> dict:
    layers = []
    for i, (cin, cout, k, s, p) in enumerate(CONVS):
        layers.append(
            {
                "type": "conv3d",
                "in_channels": cin,
                "out_channels": cout,
                "kernel_size": list(k),
                "stride": list(s),
                "padding": list(p),
                "padding_mode": "zeros",
                "weight": f"features.{2 * i}.weight",
                "bias": f"features.{2 * i}.bias",
            }
        )
        layers.append({"type": "relu"})
    layers.append({"type": "global_avg_pool", "dims": ["T", "H", "W"]})
    return {
        "name": "wanrt demo-domain evaluator",
        "input": {
            "layout": "NCTHW",
            "channels": "RGB",
            "frames": ds.NUM_FRAMES,
            "height": ds.SIZE,
            "width": ds.SIZE,
            "range": [0.0, 1.0],
            "normalize": {"mean": [MEAN] * 3, "std": [STD] * 3, "formula": "(x - mean) / std"},
            "uint8_to_float": "x / 255",
        },
        "layers": layers,
        "feature_dim": FEATURE_DIM,
        "features": "output of global_avg_pool (post-ReLU), used for the Fréchet distance",
        "heads": {
            k: {"type": "linear", "in_features": FEATURE_DIM, "out_features": len(v), "weight": f"heads.{k}.weight", "bias": f"heads.{k}.bias", "classes": v}
            for k, v in ds.ATTRIBUTES.items()
        },
        "prediction": "argmax of each head's logits; a video matches its caption when all four heads agree with it",
        "dtype": "float32",
        "caption_template": "a {colour} {shape} moves {direction} on a {background} background",
    }


def load(path: str = OUT) -> Evaluator:
    from safetensors.torch import load_file

    m = Evaluator()
    m.load_state_dict(load_file(os.path.join(path, "model.safetensors")))
    return m.eval()


def render_batch(seeds, captions) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    clips, labels = [], {k: [] for k in ds.ATTRIBUTES}
    for s in seeds:
        c = captions[s % len(captions)]
        clips.append(ds.render(c, int(s)))
        for k, v in c.labels().items():
            labels[k].append(v)
    x = torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3).contiguous()
    return x, {k: torch.tensor(v) for k, v in labels.items()}


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    # random Gaussian blur (sigma 0.2..0.7 px) on 30% of the batch
    out = []
    for i in range(b):
        xi = x[i]
        if torch.rand(1, generator=gen).item() < 0.3:
            sigma = 0.2 + 0.5 * torch.rand(1, generator=gen).item()
            r = 2
            k = torch.exp(-((torch.arange(-r, r + 1, dtype=torch.float32)) ** 2) / (2 * sigma * sigma))
            k = k / k.sum()
            c, t, h, w = xi.shape
            y = xi.reshape(c * t, 1, h, w)
            y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
            y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
            xi = y.reshape(c, t, h, w)
        out.append(xi)
    x = torch.stack(out)
    x = x * (1 + 0.08 * (torch.rand(b, 1, 1, 1, 1, generator=gen) - 0.5))
    x = x + 0.03 * torch.rand(b, 1, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    return x.clamp(0, 1)


def train(a) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    caps = ds.all_captions()
    m = Evaluator()
    opt = torch.optim.AdamW(m.parameters(), lr=a.lr, weight_decay=1e-4)
    os.makedirs(a.out, exist_ok=True)
    logf = os.path.join(a.out, "train_log.txt")
    open(logf, "w").close()
    t0 = time.time()
    rng = np.random.default_rng(a.seed)
    for step in range(1, a.steps + 1):
        lr = a.lr * min(1.0, step / 50) * 0.5 * (1 + math.cos(math.pi * step / a.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        seeds = TRAIN_SEED_BASE + rng.integers(0, 10**9, a.batch)
        x, y = render_batch(seeds, caps)
        x = augment(x, gen)
        _, logits = m(x)
        losses = {k: F.cross_entropy(logits[k], y[k]) for k in logits}
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 0 or step == 1:
            acc = {k: (logits[k].argmax(1) == y[k]).float().mean().item() for k in logits}
            msg = f"step {step} loss {loss.item():.4f} " + " ".join(f"{k} {v:.2f}" for k, v in acc.items()) + f" lr {lr:.1e} {time.time() - t0:.0f}s"
            print(msg, flush=True)
            with open(logf, "a") as f:
                f.write(msg + "\n")
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(a.out, "model.safetensors"))
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config_json(), f, indent=2)
        f.write("\n")


@torch.no_grad()
def predict(m: Evaluator, videos: torch.Tensor, batch: int = 32) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """videos: (N, 3, T, H, W) in [0, 1] -> (features (N, 128) float64, predictions {attr: (N,)})."""
    feats, preds = [], {k: [] for k in ds.ATTRIBUTES}
    for i in range(0, videos.shape[0], batch):
        f, lg = m(videos[i : i + batch].float())
        feats.append(f.double())
        for k in preds:
            preds[k].append(lg[k].argmax(1))
    return torch.cat(feats), {k: torch.cat(v) for k, v in preds.items()}


def test(a) -> dict:
    m = load(a.out)
    caps = ds.all_captions()
    _, held = ds.caption_split()
    res = {}
    for name, cs, n in [("all_captions", caps, a.n), ("held_out_captions", held, 200)]:
        seeds = TEST_SEED_BASE + np.arange(n)
        correct = {k: 0 for k in ds.ATTRIBUTES}
        allc = 0
        for i in range(0, n, 40):
            x, y = render_batch(seeds[i : i + 40], cs)
            _, p = predict(m, x)
            ok = torch.ones(x.shape[0], dtype=torch.bool)
            for k in correct:
                correct[k] += int((p[k] == y[k]).sum())
                ok &= p[k] == y[k]
            allc += int(ok.sum())
        res[name] = {k: v / n for k, v in correct.items()} | {"all_attributes": allc / n, "n": n}
        print(name, json.dumps(res[name]))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["train", "test"])
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--n", type=int, default=480, help="test: clips")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    {"train": train, "test": test}[a.cmd](a)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The demo domain's held-out set that `wanrt bench --ladder` uses out of the box: the 50 held-out
captions (never trained on; tools/demo/dataset.py caption_split) and real clips of each, rendered
by the domain's generator, so the ladder can score the demo model's prompt accuracy and its
domain Fréchet distance against real data without Python.

Writes ``models/demo-evaluator/heldout/``:
- ``captions.txt``        the 50 captions, one per line (the ladder's default prompts)
- ``real/<i>_<j>.gif``    clip j (seed 900000 + 2i + j, as tools/demo/eval_variants.py) of caption i,
                          lossless GIF (one exact palette; checked by reading back)

Run from the repository root (nothing downloaded, a few seconds):
    .venv/bin/python tools/demo/make_heldout_real.py
"""

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "demo"))
sys.path.insert(0, str(REPO / "tools" / "fixtures"))
import dataset as ds  # noqa: E402
from make_domain_fixtures import write_gif  # noqa: E402

CLIPS_PER_CAPTION = 2
SEED_BASE = 900_000


def main():
    out = REPO / "models" / "demo-evaluator" / "heldout"
    _, held_out = ds.caption_split()
    out.mkdir(parents=True, exist_ok=True)
    (out / "captions.txt").write_text("".join(f"{c.text()}\n" for c in held_out))
    for i, c in enumerate(held_out):
        for j in range(CLIPS_PER_CAPTION):
            clip = ds.render(c, SEED_BASE + i * CLIPS_PER_CAPTION + j)
            u8 = np.round(np.clip(clip, 0, 1) * 255).astype(np.uint8)
            write_gif(out / "real" / f"{i}_{j}.gif", u8)
    print(f"wrote {len(held_out)} captions and {len(held_out) * CLIPS_PER_CAPTION} real clips to {out}")


if __name__ == "__main__":
    main()

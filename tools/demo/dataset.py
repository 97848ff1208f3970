"""Procedural text-to-video dataset for wanrt's bundled demo model.

Every clip is a flat-coloured background with one flat-coloured shape that moves
across the frame in a straight line; its caption names all four attributes:

    "a red circle moves left on a gray background"

Attributes (3 x 5 x 4 x 4 = 240 captions):
    shape      circle, square, triangle
    colour     red, green, blue, yellow, white
    direction  left, right, up, down
    background black, gray, purple, brown

Nuisance variables drawn per clip from its seed: shape size, start position
along the motion axis, position on the cross axis, speed.

A clip is float32 (F, H, W, 3) in [0, 1] with F = 17, H = W = 32 (F = 4k+1 and
H, W multiples of 16, as Wan2.1 needs; 32x32 keeps CPU training within budget). Everything is deterministic: the same
(caption, seed) gives the same clip bit for bit (numpy only, no global RNG).

Split: 50 of the 240 captions are held out (never seen by the generator's
training) and chosen so that every pair of attribute values still occurs in
the training captions; see `caption_split()`.

    python tools/demo/dataset.py --out /tmp/demo_samples   # writes a few PNG strips
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass

import numpy as np

SHAPES = ["circle", "square", "triangle"]
COLOURS = ["red", "green", "blue", "yellow", "white"]
DIRECTIONS = ["left", "right", "up", "down"]
BACKGROUNDS = ["black", "gray", "purple", "brown"]
ATTRIBUTES = {
    "shape": SHAPES,
    "colour": COLOURS,
    "direction": DIRECTIONS,
    "background": BACKGROUNDS,
}

RGB = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 70, 255),
    "yellow": (250, 230, 20),
    "white": (250, 250, 250),
    "black": (0, 0, 0),
    "gray": (110, 110, 110),
    "purple": (100, 20, 120),
    "brown": (110, 65, 20),
}

NUM_FRAMES = 17
SIZE = 32
SUPERSAMPLE = 4  # anti-aliasing: render at 4x and box-filter down
NUM_HELD_OUT = 50
SPLIT_SEED = 7


@dataclass(frozen=True)
class Caption:
    shape: str
    colour: str
    direction: str
    background: str

    def text(self) -> str:
        return f"a {self.colour} {self.shape} moves {self.direction} on a {self.background} background"

    def labels(self) -> dict[str, int]:
        return {k: ATTRIBUTES[k].index(getattr(self, k)) for k in ATTRIBUTES}

    @staticmethod
    def parse(text: str) -> "Caption":
        w = text.strip().split()
        # a <colour> <shape> moves <direction> on a <background> background
        if len(w) != 9 or w[0] != "a" or w[3] != "moves" or w[5:7] != ["on", "a"] or w[8] != "background":
            raise ValueError(f"not a demo caption: {text!r}")
        c = Caption(shape=w[2], colour=w[1], direction=w[4], background=w[7])
        for k, v in ATTRIBUTES.items():
            if getattr(c, k) not in v:
                raise ValueError(f"unknown {k} {getattr(c, k)!r} in {text!r}")
        return c


def all_captions() -> list[Caption]:
    return [Caption(s, c, d, b) for s, c, d, b in itertools.product(SHAPES, COLOURS, DIRECTIONS, BACKGROUNDS)]


def _pairs(c: Caption):
    keys = list(ATTRIBUTES)
    return {(a, getattr(c, a), b, getattr(c, b)) for a, b in itertools.combinations(keys, 2)}


def caption_split() -> tuple[list[Caption], list[Caption]]:
    """(train, held_out): 50 held-out captions, deterministic, such that every
    attribute-value pair (e.g. red+triangle, left+gray) still appears in train."""
    caps = all_captions()
    rng = np.random.default_rng(SPLIT_SEED)
    order = rng.permutation(len(caps))
    held: list[Caption] = []
    train_set = set(caps)
    for i in order:
        if len(held) == NUM_HELD_OUT:
            break
        c = caps[i]
        rest = train_set - {c}
        covered = set().union(*(_pairs(r) for r in rest))
        if _pairs(c) <= covered:
            held.append(c)
            train_set = rest
    assert len(held) == NUM_HELD_OUT
    train = [c for c in caps if c in train_set]
    held.sort(key=caps.index)
    return train, held


def _shape_mask(shape: str, cx: float, cy: float, r: float, n: int) -> np.ndarray:
    """Coverage in [0,1] on an n x n grid (pixel centres at i+0.5), supersampled."""
    ss = SUPERSAMPLE
    g = (np.arange(n * ss, dtype=np.float64) + 0.5) / ss
    x, y = np.meshgrid(g, g)  # x: columns, y: rows (down)
    dx, dy = x - cx, y - cy
    if shape == "circle":
        m = dx * dx + dy * dy <= r * r
    elif shape == "square":
        h = r * 0.85  # similar area to the circle
        m = (np.abs(dx) <= h) & (np.abs(dy) <= h)
    elif shape == "triangle":
        # upward-pointing isoceles triangle inscribed in a circle of radius ~1.15r
        R = r * 1.2
        top = -R
        base = R * 0.6
        half_w = R * 0.95
        # inside if below top..base and within slanted sides
        t = (dy - top) / (base - top)  # 0 at apex, 1 at base
        m = (t >= 0) & (t <= 1) & (np.abs(dx) <= t * half_w)
    else:
        raise ValueError(shape)
    m = m.astype(np.float32).reshape(n, ss, n, ss).mean(axis=(1, 3))
    return m


def render(caption: Caption, seed: int, num_frames: int = NUM_FRAMES, size: int = SIZE) -> np.ndarray:
    """Clip for (caption, seed): float32 (F, H, W, 3) in [0, 1]."""
    rng = np.random.default_rng([seed, 0x57A7])
    r = rng.uniform(0.16, 0.21) * size  # radius
    travel = rng.uniform(0.3, 0.4) * size  # distance covered over the clip
    margin = r + 0.04 * size
    start = rng.uniform(margin, size - margin - travel)
    cross = rng.uniform(margin + 0.06 * size, size - margin - 0.06 * size)
    fg = np.array(RGB[caption.colour], np.float32) / 255.0
    bg = np.array(RGB[caption.background], np.float32) / 255.0
    out = np.empty((num_frames, size, size, 3), np.float32)
    for f in range(num_frames):
        p = start + travel * f / (num_frames - 1)
        if caption.direction == "right":
            cx, cy = p, cross
        elif caption.direction == "left":
            cx, cy = size - p, cross
        elif caption.direction == "down":
            cx, cy = cross, p
        else:  # up
            cx, cy = cross, size - p
        m = _shape_mask(caption.shape, cx, cy, r, size)[..., None]
        out[f] = bg * (1.0 - m) + fg * m
    return out


def sample(index: int, captions: list[Caption], base_seed: int = 0) -> tuple[Caption, np.ndarray]:
    """index-th clip of a stream over `captions` (caption cycles, seed = base_seed + index)."""
    c = captions[index % len(captions)]
    return c, render(c, base_seed * 1_000_003 + index)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/demo_samples")
    ap.add_argument("--n", type=int, default=6)
    args = ap.parse_args()
    import os

    from PIL import Image

    os.makedirs(args.out, exist_ok=True)
    train, held = caption_split()
    print(f"{len(train)} train captions, {len(held)} held out; e.g. held: {held[0].text()!r}")
    for i in range(args.n):
        c, clip = sample(i * 37, train)
        strip = np.concatenate(list(clip[::4]), axis=1)
        Image.fromarray((strip * 255).round().astype(np.uint8)).save(f"{args.out}/{i}.png")
        print(i, c.text())


if __name__ == "__main__":
    main()

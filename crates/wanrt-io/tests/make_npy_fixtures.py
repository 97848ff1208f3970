"""Writes the small .npy/.npz fixtures of wanrt-io's npy tests into tests/data/.

Run by hand when fixtures change:
    .venv/bin/python crates/wanrt-io/tests/make_npy_fixtures.py
"""

from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "data"
OUT.mkdir(exist_ok=True)

a = (np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 5) / 4
np.save(OUT / "f32_v1.npy", a)
with open(OUT / "f64_v2.npy", "wb") as f:
    np.lib.format.write_array(f, a.astype(np.float64), version=(2, 0))
with open(OUT / "i64_v3.npy", "wb") as f:
    np.lib.format.write_array(f, np.array([-3, 0, 2**40], dtype=np.int64), version=(3, 0))
np.save(OUT / "u8.npy", np.array([[0, 128, 255]], dtype=np.uint8))
np.save(OUT / "f16.npy", np.array([0.5, -2.0, 65504.0], dtype=np.float16))
np.save(OUT / "i32_scalar.npy", np.array(-7, dtype=np.int32))
np.save(OUT / "fortran.npy", np.asfortranarray(a[0]))
np.save(OUT / "big_endian.npy", a.astype(">f4"))

# pytorch-fid statistics layout: mu (2048,), sigma (2048, 2048) in float64; tiny here.
rng = np.random.default_rng(0)
mu = rng.standard_normal(4)
x = rng.standard_normal((4, 4))
sigma = x @ x.T
np.savez(OUT / "stats.npz", mu=mu, sigma=sigma)
np.savez_compressed(OUT / "stats_deflated.npz", mu=mu, sigma=sigma)
np.save(OUT / "stats_mu.npy", mu)
np.save(OUT / "stats_sigma.npy", sigma)
print("wrote npy fixtures")

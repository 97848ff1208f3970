"""Writes the small .pth fixtures of wanrt-io's pth tests into tests/data/.

Run by hand when fixtures change (CI does not need torch):
    .venv/bin/python crates/wanrt-io/tests/make_pth_fixtures.py
Expected values go to tests/data/pth_expected.json as {file: {name: {dtype, shape, values}}}
with values flattened in row-major order.
"""

import json
import os
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent / "data"
OUT.mkdir(exist_ok=True)
torch.manual_seed(0)

expected = {"_meta": {"torch": torch.__version__}}


def record(fname, tensors):
    expected[fname] = {
        name: {
            "dtype": str(t.dtype).removeprefix("torch."),
            "shape": list(t.shape),
            "values": t.detach().to(torch.float64).reshape(-1).tolist(),
        }
        for name, t in tensors.items()
    }


# 1. Plain dtypes, a non-contiguous transpose, an offset strided slice, a scalar, an empty tensor.
base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 8
tensors = {
    "f32": torch.randn(2, 3),
    "f16": torch.tensor([0.5, -1.25, 65504.0, 1e-3], dtype=torch.float16),
    "bf16": torch.tensor([[1.0, -2.5], [3.0e10, 0.0078125], [7.0, -0.0]], dtype=torch.bfloat16),
    "f64": torch.tensor([1.0 / 3.0, -2.0], dtype=torch.float64),
    "i64": torch.tensor([0, -1, 2**40, -(2**40), 7], dtype=torch.int64),
    "i32": torch.tensor([[1, -2], [3, 2**30]], dtype=torch.int32),
    "u8": torch.tensor([0, 1, 255], dtype=torch.uint8),
    "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
    "bool": torch.tensor([True, False, True]),
    "transposed": base.t(),  # shape (6, 4), strides (1, 6)
    "sliced": base[1:, ::2],  # offset 6, strides (6, 2)
    "scalar": torch.tensor(2.5),
    "empty": torch.zeros(0, 3),
}
assert not tensors["transposed"].is_contiguous() and tensors["sliced"].storage_offset() == 6
torch.save(tensors, OUT / "dtypes.pth")
record("dtypes.pth", tensors)

# 2. A small nn.Module's state_dict (OrderedDict with _metadata, Parameters).
model = torch.nn.Sequential(
    torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Conv1d(2, 2, 3)
)
sd = model.state_dict()
torch.save(sd, OUT / "module.pth")
record("module.pth", sd)

# 3. A wrapped checkpoint: nested dicts, a list, non-tensor values.
nested = {
    "model": {"blocks": {"0": {"weight": torch.ones(2, 2)}}, "head.bias": torch.zeros(3)},
    "epoch": 7,
    "name": "demo",
    "lrs": [torch.tensor([0.1]), 0.2],
}
torch.save(nested, OUT / "nested.pth")
record(
    "nested.pth",
    {
        "model.blocks.0.weight": nested["model"]["blocks"]["0"]["weight"],
        "model.head.bias": nested["model"]["head.bias"],
        "lrs.0": nested["lrs"][0],
    },
)

# 4. Parameters saved directly (torch._utils._rebuild_parameter) and shared storage.
shared = torch.arange(6, dtype=torch.float32)
params = {
    "p": torch.nn.Parameter(torch.tensor([1.0, 2.0])),
    "view_a": shared[:3],
    "view_b": shared[3:].view(3, 1),
}
torch.save(params, OUT / "params.pth")
record("params.pth", params)


# 4b. Pickle protocol 4 (FRAME, MEMOIZE, SHORT_BINUNICODE, STACK_GLOBAL) and a copy of
# dtypes.pth re-zipped with deflate (torch never compresses; tests the inflate path).
torch.save(params, OUT / "params_proto4.pth", pickle_protocol=4)
record("params_proto4.pth", params)
import zipfile  # noqa: E402

with zipfile.ZipFile(OUT / "dtypes.pth") as src, zipfile.ZipFile(
    OUT / "dtypes_deflated.pth", "w", compression=zipfile.ZIP_DEFLATED
) as dst:
    for info in src.infolist():
        dst.writestr(info.filename, src.read(info.filename))
assert torch.load(OUT / "dtypes_deflated.pth", weights_only=True)["f32"].equal(tensors["f32"])
expected["dtypes_deflated.pth"] = expected["dtypes.pth"]

# 5. A malicious pickle: torch.load(weights_only=False) would run os.system.
class Evil:
    def __reduce__(self):
        return (os.system, ("echo PWNED > /tmp/wanrt-pwned",))


torch.save({"weight": torch.ones(1), "evil": Evil()}, OUT / "malicious.pth")
try:
    torch.load(OUT / "malicious.pth", weights_only=True)
    raise SystemExit("torch loaded the malicious file with weights_only=True?!")
except Exception as e:  # noqa: BLE001 - torch refuses it too; so must we
    print("torch refuses malicious.pth:", type(e).__name__)

# 6. The legacy (non-zip) format must be rejected clearly.
torch.save({"w": torch.ones(2)}, OUT / "legacy.pth", _use_new_zipfile_serialization=False)

with open(OUT / "pth_expected.json", "w") as f:
    json.dump(expected, f, indent=1)
print("wrote", sorted(p.name for p in OUT.glob("*.pth")))

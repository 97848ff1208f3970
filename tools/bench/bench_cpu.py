#!/usr/bin/env python3
"""CPU benchmark: wanrt vs diffusers/torch on the real Wan2.1-T2V-1.3B shapes (random weights).

Builds (once, deterministically) a diffusers ``WanPipeline`` folder with random weights:

* transformer: the real Wan2.1-T2V-1.3B ``WanTransformer3DModel`` shape (12 heads x 128, 30 layers,
  ffn 8960, text_dim 4096, freq_dim 256, in/out 16, patch (1, 2, 2)) -- 1.42 B parameters;
* vae: the real Wan2.1 ``AutoencoderKLWan()`` (diffusers defaults, 127 M parameters);
* text_encoder: ``UMT5EncoderModel`` with the real UMT5-XXL width (d_model 4096, 64 heads x 64,
  d_ff 10240, gated-gelu) but only ``--te-layers`` (default 2) layers instead of 24 and a tiny
  vocabulary, so that it fits next to everything else in 24 GB (the real one has ~5.7 B params);
* tokenizer: a small Unigram ``T5TokenizerFast`` trained here (<pad>=0, </s>=1, <unk>=2);
* scheduler: ``UniPCMultistepScheduler`` with flow sigmas, flow_shift 3.0 (what Wan2.1 ships).

Then times, one process at a time (never both engines in memory together), interleaved
torch / wanrt / torch / wanrt, with torch.set_num_threads(T) and ``wanrt --threads T``:

1. stages (one process per engine per round; same order of work on both sides):
   load, text encoding of the CFG pair, one transformer forward of the CFG pair (batch 2,
   17 frames 160x160 -> latents 16x5x20x20 -> 500 tokens, text length 512) after one warm-up
   forward, and one VAE decode of 5 latent frames 20x20 (-> 17x160x160);
   torch side: diffusers in float32 under ``torch.inference_mode()``; wanrt side: ``wanrt bench``;
2. the whole generate, load included (2 steps, CFG, 17x160x160, same initial noise):
   ``WanPipeline.from_pretrained(...)(...)`` in a fresh Python process vs ``wanrt generate``, wall
   time of the process measured from outside, peak RSS from ``wait4`` (the kernel's high-water
   mark of the child). The decoded frames of both are compared (max |delta|) as a sanity check.

Configurations: ``--storage bf16`` stores the transformer in bfloat16 (as the widely shared
repackaged checkpoints are; torch widens it to float32 at load, wanrt in its packing pass);
``--wanrt-dtype bf16`` runs wanrt's bf16 compute path against torch float32; ``--wanrt-model DIR``
runs wanrt on an ``optimize`` artifact of the same model (e.g. W8A8) against torch on the original.

Writes bench/results/<name>.{json,md,log} (``--name``, default cpu-bench). Usage (from the
repository root):

    .venv/bin/python tools/bench/bench_cpu.py                  # ~20-25 min on 2 cores
    .venv/bin/python tools/bench/bench_cpu.py --rounds 3 --threads 4 --workdir /scratch/wb
    .venv/bin/python tools/bench/bench_cpu.py --storage bf16 --wanrt-dtype bf16 --name cpu-bench-bf16

See tools/bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_VERSION = 1  # bump when the built model changes

# The benchmarked workload.
FRAMES, HEIGHT, WIDTH = 17, 160, 160
TEXT_LEN = 512
GEN_STEPS = 2
GUIDANCE = 5.0
PROMPT = "a red fox runs through the snowy forest at dawn"
NEGATIVE = "blurry, low quality, static"
SEED = 20261128
if os.environ.get("WANRT_BENCH_SMOKE"):  # quick check of the script itself, not a benchmark
    FRAMES, HEIGHT, WIDTH, TEXT_LEN = 5, 32, 32, 32

TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
)
TEXT_ENCODER = dict(d_model=4096, d_kv=64, num_heads=64, d_ff=10240)  # UMT5-XXL width

CORPUS = """
a red fox runs through the snowy forest at dawn
blurry low quality static ugly distorted worst quality jpeg artifacts
a blue bird flying over the ocean near a small island
an old man reading a book in a quiet library
a mountain lake with tall pine trees drifting clouds and a wooden boat
the camera slowly pans across a busy city street at night with neon lights
a cat sleeping on a sofa next to a window while the sun goes down
a dog plays with a ball in the green park on a sunny afternoon
two children build a sand castle on the beach near the waves
a train crosses an old stone bridge over a river in the mountains
Photorealistic, high quality, detailed, cinematic lighting, 4k.
""".strip().splitlines()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# Building the model folder
# --------------------------------------------------------------------------------------------


def build_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=256,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        shrinking_factor=0.75,
        max_piece_length=8,
        n_sub_iterations=2,
    )
    tok.train_from_iterator(CORPUS, trainer)
    vocab = json.loads(tok.to_str())["model"]["vocab"]
    assert [p for p, _ in vocab[:3]] == ["<pad>", "</s>", "<unk>"], vocab[:4]
    # Canonical order (the trainer orders near-ties by hash-map order): round the scores, sort
    # by (score, piece), so the same corpus always gives the same tokenizer.json.
    rest = sorted(((p, round(float(s), 4)) for p, s in vocab[3:]), key=lambda ps: (-ps[1], ps[0]))
    vocab = [(p, float(s)) for p, s in vocab[:3]] + rest
    t5 = T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=TEXT_LEN)
    assert t5.pad_token_id == 0 and t5.eos_token_id == 1 and t5.unk_token_id == 2
    return t5


def randomize_(module, seed: int, gain: float = 1.0, rules=()) -> None:
    """Seeded N(0, (gain/sqrt(fan_in))^2) matrices, N(0, 0.02^2) biases, 1 + N(0, 0.05^2) norms."""
    import re

    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            shape = tuple(p.shape)
            val = None
            for pat, fn in rules:
                if re.search(pat, name):
                    val = fn(shape, gen)
                    break
            if val is None:
                leaf = name.rsplit(".", 1)[-1]
                if leaf == "gamma" or (leaf == "weight" and p.ndim == 1):
                    val = 1.0 + 0.05 * torch.randn(shape, generator=gen)
                elif leaf == "bias":
                    val = 0.02 * torch.randn(shape, generator=gen)
                else:
                    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
                    val = torch.randn(shape, generator=gen).mul_(gain / math.sqrt(fan_in))
            p.copy_(val.reshape(shape))


def build_model(model_dir: Path, te_layers: int) -> None:
    """Writes a diffusers WanPipeline folder, component by component (bounded memory)."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    stamp = {"version": BUILD_VERSION, "te_layers": te_layers, "transformer": TRANSFORMER, "text_encoder": TEXT_ENCODER}
    stamp_file = model_dir / "bench-build.json"
    want = json.loads(json.dumps(stamp))
    have = json.loads(stamp_file.read_text()) if stamp_file.exists() else {}
    if all(have.get(k) == v for k, v in want.items()):
        log(f"model folder {model_dir} already built")
        return
    if model_dir.exists():
        shutil.rmtree(model_dir)
    tmp = model_dir.with_name(model_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    torch.manual_seed(SEED)
    t0 = time.perf_counter()

    tok = build_tokenizer()
    tok.backend_tokenizer.no_padding()
    tok.backend_tokenizer.no_truncation()
    tok.save_pretrained(str(tmp / "tokenizer"))
    if not (tmp / "tokenizer" / "special_tokens_map.json").exists():
        stm = {"eos_token": tok.eos_token, "pad_token": tok.pad_token, "unk_token": tok.unk_token}
        (tmp / "tokenizer" / "special_tokens_map.json").write_text(json.dumps(stm, indent=2) + "\n")
    sched = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0
    )
    sched.save_pretrained(str(tmp / "scheduler"))

    # model_index.json exactly as diffusers writes it: save a pipeline with stand-in tiny models.
    tiny_te = UMT5EncoderModel(UMT5Config(vocab_size=len(tok), d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2))
    tiny_tr = WanTransformer3DModel(num_attention_heads=1, attention_head_dim=8, num_layers=1, ffn_dim=8, text_dim=8, freq_dim=8)
    tiny_vae = AutoencoderKLWan(base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
    idx_dir = tmp / "_index"
    WanPipeline(tokenizer=tok, text_encoder=tiny_te, transformer=tiny_tr, vae=tiny_vae, scheduler=sched).save_pretrained(
        str(idx_dir)
    )
    shutil.copy(idx_dir / "model_index.json", tmp / "model_index.json")
    shutil.rmtree(idx_dir)
    del tiny_te, tiny_tr, tiny_vae

    log("building text encoder (UMT5-XXL width, %d layers)" % te_layers)
    cfg = UMT5Config(
        vocab_size=len(tok),
        d_model=TEXT_ENCODER["d_model"],
        d_kv=TEXT_ENCODER["d_kv"],
        d_ff=TEXT_ENCODER["d_ff"],
        num_layers=te_layers,
        num_decoder_layers=te_layers,
        num_heads=TEXT_ENCODER["num_heads"],
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.0,
        layer_norm_epsilon=1e-6,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    te = UMT5EncoderModel(cfg).eval()
    randomize_(
        te,
        SEED + 1,
        rules=[
            (r"(shared|embed_tokens)\.weight$", lambda s, g: torch.randn(s, generator=g)),
            (r"relative_attention_bias\.weight$", lambda s, g: 0.5 * torch.randn(s, generator=g)),
        ],
    )
    te.save_pretrained(str(tmp / "text_encoder"))
    del te

    log("building transformer (Wan2.1-T2V-1.3B shape)")
    tr = WanTransformer3DModel(**TRANSFORMER).eval()
    dim = TRANSFORMER["num_attention_heads"] * TRANSFORMER["attention_head_dim"]
    randomize_(
        tr,
        SEED + 2,
        rules=[
            (r"scale_shift_table$", lambda s, g: torch.randn(s, generator=g) / math.sqrt(dim)),
            (r"proj_out\.weight$", lambda s, g: torch.randn(s, generator=g) * (0.7 / math.sqrt(s[1]))),
        ],
    )
    n_tr = sum(p.numel() for p in tr.parameters())
    tr.save_pretrained(str(tmp / "transformer"), safe_serialization=True)
    del tr

    log("building VAE (AutoencoderKLWan() defaults)")
    vae = AutoencoderKLWan().eval()
    randomize_(
        vae,
        SEED + 3,
        rules=[
            (r"^decoder\.conv_out\.weight$", lambda s, g: torch.randn(s, generator=g) * (0.6 / math.sqrt(math.prod(s[1:])))),
            (r"^decoder\.conv_out\.bias$", lambda s, g: 0.02 * torch.randn(s, generator=g)),
        ],
    )
    n_vae = sum(p.numel() for p in vae.parameters())
    vae.save_pretrained(str(tmp / "vae"), safe_serialization=True)
    del vae

    stamp["transformer_params"] = n_tr
    stamp["vae_params"] = n_vae
    (tmp / "bench-build.json").write_text(json.dumps(stamp, indent=1) + "\n")
    tmp.rename(model_dir)
    log(f"built {model_dir} in {time.perf_counter() - t0:.0f} s (transformer {n_tr / 1e9:.3f} B, vae {n_vae / 1e6:.1f} M params)")


def make_noise(path: Path) -> None:
    import numpy as np
    import torch

    t = (FRAMES - 1) // 4 + 1
    g = torch.Generator().manual_seed(SEED + 99)
    z = torch.randn((1, 16, t, HEIGHT // 8, WIDTH // 8), generator=g, dtype=torch.float32)
    np.save(path, z.numpy())


# --------------------------------------------------------------------------------------------
# Torch children (each run in its own process)
# --------------------------------------------------------------------------------------------


def torch_setup(threads: int):
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        pass
    return torch


def child_torch_stages(args) -> None:
    torch = torch_setup(args.threads)
    from diffusers import WanPipeline

    out = {"threads": torch.get_num_threads()}
    with torch.inference_mode():
        t0 = time.perf_counter()
        pipe = WanPipeline.from_pretrained(args.model, torch_dtype=torch.float32)
        out["load_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        pe, ne = pipe.encode_prompt(
            prompt=PROMPT, negative_prompt="", do_classifier_free_guidance=True, max_sequence_length=TEXT_LEN
        )
        out["text_encoder_s"] = time.perf_counter() - t0
        ctx = torch.cat([pe, ne])
        t = (FRAMES - 1) // 4 + 1
        shape = (2, 16, t, HEIGHT // 8, WIDTH // 8)
        n = math.prod(shape)
        lat = ((torch.arange(n, dtype=torch.int64) * 7919 % 1000).float() / 500.0 - 1.0).reshape(shape)
        ts = torch.full((2,), 900.0)
        tr = pipe.transformer

        def fwd():
            return tr(hidden_states=lat, timestep=ts, encoder_hidden_states=ctx, return_dict=False)[0]

        t0 = time.perf_counter()
        y = fwd()  # warm-up, as wanrt bench does
        out["transformer_warmup_s"] = time.perf_counter() - t0
        out["transformer_out_finite"] = bool(torch.isfinite(y).all())
        out["transformer_out_std"] = float(y.std())
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fwd()
            times.append(time.perf_counter() - t0)
        out["transformer_step_all_s"] = times
        out["transformer_step_s"] = min(times)
        z = lat[:1].contiguous()
        t0 = time.perf_counter()
        v = pipe.vae.decode(z, return_dict=False)[0]
        out["vae_decode_s"] = time.perf_counter() - t0
        out["vae_out_shape"] = list(v.shape)
        out["vae_out_finite"] = bool(torch.isfinite(v).all())
    out["peak_rss_bytes"] = peak_rss_self()
    print("RESULT " + json.dumps(out), flush=True)


def child_torch_generate(args) -> None:
    t_start = time.perf_counter()
    torch = torch_setup(args.threads)
    import numpy as np
    from diffusers import WanPipeline

    out = {"threads": torch.get_num_threads(), "import_s": time.perf_counter() - t_start}
    noise = torch.from_numpy(np.load(args.noise))
    with torch.inference_mode():
        t0 = time.perf_counter()
        pipe = WanPipeline.from_pretrained(args.model, torch_dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        out["load_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        frames = pipe(
            prompt=PROMPT,
            negative_prompt=NEGATIVE,
            height=HEIGHT,
            width=WIDTH,
            num_frames=FRAMES,
            num_inference_steps=GEN_STEPS,
            guidance_scale=GUIDANCE,
            latents=noise,
            max_sequence_length=TEXT_LEN,
            output_type="np",
        ).frames[0]
        out["call_s"] = time.perf_counter() - t0
    np.save(args.save_npy, np.asarray(frames, dtype=np.float32))
    out["frames_shape"] = list(frames.shape)
    out["peak_rss_bytes"] = peak_rss_self()
    print("RESULT " + json.dumps(out), flush=True)


def peak_rss_self():
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def run_child(cmd: list[str], logf, label: str, env=None) -> dict:
    """Runs cmd, returns wall time (perf_counter around the process), peak RSS (wait4) and output."""
    log(f"{label}: {' '.join(cmd)}")
    la0 = loadavg()
    logf.write(f"\n### {label}  load {la0}\n$ {' '.join(cmd)}\n")
    logf.flush()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
    chunks = []
    for line in iter(p.stdout.readline, b""):
        chunks.append(line)
        logf.write(line.decode(errors="replace"))
    p.stdout.close()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    la1 = loadavg()
    logf.write(f"### {label}: exit {p.returncode}, wall {wall:.2f} s, maxrss {ru.ru_maxrss} KiB, load {la1}\n")
    logf.flush()
    if p.returncode != 0:
        raise SystemExit(f"{label} failed (exit {p.returncode}); see the log")
    text = b"".join(chunks).decode(errors="replace")
    res = None
    for line in text.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[len("RESULT "):])
        elif line.startswith("{") and res is None:
            try:
                res = json.loads(line)
            except json.JSONDecodeError:
                pass
    log(f"{label}: {wall:.1f} s wall, peak RSS {ru.ru_maxrss / 2**20:.2f} GiB, load {la0[0]:.2f}->{la1[0]:.2f}")
    return {"wall_s": wall, "maxrss_bytes": ru.ru_maxrss * 1024, "load_before": la0, "load_after": la1, "result": res}


def stats(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"min": min(xs), "median": statistics.median(xs), "all": xs}


def machine_info(wanrt: Path) -> dict:
    import diffusers
    import torch
    import transformers

    info = {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "platform": platform.platform()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            k, _, v = line.partition(":")
            if k.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "Flags"):
                v = v.strip()
                if k.strip() == "Flags":
                    v = " ".join(f for f in v.split() if f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16"))
                info[k.strip()] = v
    except OSError:
        pass
    info["nproc"] = os.cpu_count()
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["mem_total_gib"] = round(int(mem) / 2**20, 1)
    except OSError:
        pass
    try:
        info["wanrt_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        info["wanrt_tree_dirty"] = bool(subprocess.run(["git", "status", "--porcelain", "--", "crates"], cwd=REPO, capture_output=True, text=True).stdout.strip())
    except OSError:
        pass
    import hashlib

    info["wanrt_binary_sha256"] = hashlib.sha256(wanrt.read_bytes()).hexdigest()[:16]
    info["wanrt_binary_mtime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wanrt.stat().st_mtime))
    info["torch_parallel_info"] = " | ".join(l.strip() for l in torch.__config__.parallel_info().splitlines() if "MKL" in l or "OpenMP" in l or "ATen parallel" in l)
    info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    # Instruction-set caps of both engines (an AVX2 run on an AVX-512 machine sets all three).
    info["isa_caps"] = {k: os.environ[k] for k in ("WANRT_ISA", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS") if k in os.environ}
    return info


def fmt_s(st):
    if st is None:
        return "–"
    return f"{st['min']:.2f} / {st['median']:.2f}"


def gib(b):
    return "–" if b is None else f"{b / 2**30:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/wanrt-bench"), help="model folder + scratch (outside the repo)")
    ap.add_argument("--wanrt", type=Path, default=REPO / "target" / "release" / "wanrt")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved torch/wanrt rounds per measurement")
    ap.add_argument("--repeat", type=int, default=1, help="timed transformer forwards per stage process (after 1 warm-up)")
    ap.add_argument("--te-layers", type=int, default=2, help="UMT5 layers (the real UMT5-XXL has 24)")
    ap.add_argument("--storage", choices=["f32", "bf16"], default="f32",
                    help="dtype the transformer checkpoint is stored in (bf16: a converted copy of the f32 build, other components shared)")
    ap.add_argument("--wanrt-dtype", choices=["f32", "bf16"], default="f32", help="wanrt --dtype (torch always computes in float32)")
    ap.add_argument("--wanrt-model", type=Path, help="wanrt runs this folder (an optimize artifact of the same model) instead")
    ap.add_argument("--wanrt-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for every wanrt run (repeatable), e.g. --wanrt-arg=--no-prepack")
    ap.add_argument("--name", default="cpu-bench", help="basename of the result files")
    ap.add_argument("--skip-generate", action="store_true")
    ap.add_argument("--skip-stages", action="store_true", help="only the whole-generate measurement")
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--rerender", type=Path, help="recompute the table of an existing cpu-bench.json and rewrite the .md")
    ap.add_argument("--child", choices=["torch-stages", "torch-generate", "build-bf16"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--noise", help=argparse.SUPPRESS)
    ap.add_argument("--save-npy", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child == "torch-stages":
        return child_torch_stages(args)
    if args.child == "torch-generate":
        return child_torch_generate(args)
    if args.child == "build-bf16":
        build_bf16_copy(Path(args.model))
        return None

    if args.rerender:
        res = json.loads(args.rerender.read_text())
        res["rows"] = compute_rows(res["runs"], not res["runs"].get("torch_generate"))
        args.threads, args.rounds, args.repeat = res["threads"], res["rounds"], res["repeat"]
        args.rerender.write_text(json.dumps(res, indent=1) + "\n")
        args.rerender.with_suffix(".md").write_text(render_md(res, args) + "\n")
        return log(f"rewrote {args.rerender} and its .md")

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    built = args.wanrt.resolve()
    if not built.exists():
        raise SystemExit(f"{built} missing: cargo build --release -p wanrt-cli")
    args.results.mkdir(parents=True, exist_ok=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    # Snapshot the binary: another build may replace target/release/wanrt during the run.
    wanrt = args.workdir / "wanrt"
    shutil.copy2(built, wanrt)
    logpath = (args.workdir / "smoke.log") if os.environ.get("WANRT_BENCH_SMOKE") else (args.results / f"{args.name}.log")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t_all = time.perf_counter()
    with open(logpath, "w") as logf:
        logf.write(f"# wanrt CPU benchmark, started {started}\n# argv: {' '.join(sys.argv)}\n")
        import torch

        torch.set_num_threads(args.threads)
        info = machine_info(wanrt)
        logf.write("# machine: " + json.dumps(info) + "\n")
        model_dir = args.workdir / "wan21-1.3b-random"
        build_model(model_dir, args.te_layers)
        if args.storage == "bf16":
            # In a child: the state dict would stay in this process's heap, and every child forked
            # from here would report it in its peak RSS (wait4's ru_maxrss counts the pre-exec image).
            subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", "build-bf16", "--model", str(model_dir)], check=True)
            model_dir = model_dir.with_name(model_dir.name + "-bf16")
        wanrt_model = args.wanrt_model or model_dir
        wanrt_dtype = ["--dtype", args.wanrt_dtype] + args.wanrt_arg
        noise = args.workdir / "noise.npy"
        make_noise(noise)
        del torch
        py = sys.executable
        me = str(Path(__file__).resolve())
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = str(args.threads)
        env["MKL_NUM_THREADS"] = str(args.threads)

        runs = {"torch_stages": [], "wanrt_stages": [], "torch_generate": [], "wanrt_generate": []}
        for r in range(0 if args.skip_stages else args.rounds):
            runs["torch_stages"].append(run_child(
                [py, me, "--child", "torch-stages", "--model", str(model_dir), "--threads", str(args.threads), "--repeat", str(args.repeat)],
                logf, f"torch stages r{r}", env))
            runs["wanrt_stages"].append(run_child(
                [str(wanrt), "bench", "--model", str(wanrt_model), "--frames", str(FRAMES), "--height", str(HEIGHT), "--width", str(WIDTH),
                 "--max-sequence-length", str(TEXT_LEN), "--repeat", str(args.repeat), "--threads", str(args.threads), "--json"] + wanrt_dtype,
                logf, f"wanrt stages r{r}", env))
        if not args.skip_generate:
            for r in range(args.rounds):
                tnpy = args.workdir / f"torch-frames-r{r}.npy"
                wnpy = args.workdir / f"wanrt-frames-r{r}.npy"
                runs["torch_generate"].append(run_child(
                    [py, me, "--child", "torch-generate", "--model", str(model_dir), "--threads", str(args.threads),
                     "--noise", str(noise), "--save-npy", str(tnpy)],
                    logf, f"torch generate r{r}", env))
                runs["wanrt_generate"].append(run_child(
                    [str(wanrt), "generate", "--model", str(wanrt_model), "--prompt", PROMPT, "--negative-prompt", NEGATIVE,
                     "--frames", str(FRAMES), "--height", str(HEIGHT), "--width", str(WIDTH), "--steps", str(GEN_STEPS),
                     "--guidance", str(GUIDANCE), "--max-sequence-length", str(TEXT_LEN), "--noise", str(noise),
                     "--threads", str(args.threads), "--save-npy", str(wnpy), "-o", str(args.workdir / f"wanrt-r{r}.mp4"), "--json"] + wanrt_dtype,
                    logf, f"wanrt generate r{r}", env))

        rows = compute_rows(runs, args.skip_generate)
        parity = []
        if not args.skip_generate:
            import numpy as np

            for r in range(args.rounds):
                a = np.load(args.workdir / f"torch-frames-r{r}.npy")
                b = np.load(args.workdir / f"wanrt-frames-r{r}.npy")
                parity.append({"round": r, "torch_shape": list(a.shape), "wanrt_shape": list(b.shape),
                               "max_abs_diff": float(np.abs(a.astype(np.float64) - b.reshape(a.shape)).max()) if a.size == b.size else None,
                               "torch_frames_std": float(a.std())})
        total = time.perf_counter() - t_all
        result = {
            "started_utc": started,
            "total_s": total,
            "workload": {"frames": FRAMES, "height": HEIGHT, "width": WIDTH, "latent": [16, (FRAMES - 1) // 4 + 1, HEIGHT // 8, WIDTH // 8],
                         "tokens": ((FRAMES - 1) // 4 + 1) * (HEIGHT // 16) * (WIDTH // 16), "text_len": TEXT_LEN, "cfg_batch": 2,
                         "generate_steps": GEN_STEPS, "guidance": GUIDANCE, "te_layers": args.te_layers,
                         "transformer": TRANSFORMER, "text_encoder": TEXT_ENCODER},
            "threads": args.threads, "rounds": args.rounds, "repeat": args.repeat,
            "config": {"storage": args.storage, "wanrt_dtype": args.wanrt_dtype, "wanrt_args": args.wanrt_arg,
                       "wanrt_model": args.wanrt_model.name if args.wanrt_model else None, "name": args.name},
            "machine": info,
            "rows": rows,
            "generate_frames_parity": parity,
            "runs": runs,
        }
        if os.environ.get("WANRT_BENCH_SMOKE"):
            args.results = args.workdir / "smoke-results"
            args.results.mkdir(exist_ok=True)
        out_json = args.results / f"{args.name}.json"
        out_json.write_text(json.dumps(result, indent=1) + "\n")
        (args.results / f"{args.name}.md").write_text(render_md(result, args) + "\n")
        logf.write(f"\n# done in {total:.0f} s\n")
    log(f"wrote {out_json}, {args.name}.md, {args.name}.log ({total:.0f} s)")


def build_bf16_copy(model_dir: Path) -> Path:
    """The f32 build with its transformer stored in bfloat16 (round to nearest even, torch's
    ``.to(torch.bfloat16)``); the other components are symlinks to the f32 build's."""
    import torch
    from safetensors.torch import load_file, save_file

    out = model_dir.with_name(model_dir.name + "-bf16")
    stamp = (model_dir / "bench-build.json").read_text()
    if (out / "bench-build.json").exists() and (out / "bench-build.json").read_text() == stamp:
        log(f"bf16 copy {out} already built")
        return out
    if out.exists():
        shutil.rmtree(out)
    (out / "transformer").mkdir(parents=True)
    for entry in model_dir.iterdir():
        if entry.name not in ("transformer", "bench-build.json"):
            (out / entry.name).symlink_to(entry.resolve())
    src = model_dir / "transformer"
    shutil.copy2(src / "config.json", out / "transformer" / "config.json")
    for f in sorted(src.glob("*.safetensors")):
        sd = load_file(str(f))
        save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in sd.items()}, str(out / "transformer" / f.name))
        del sd
    (out / "bench-build.json").write_text(stamp)
    log(f"built bf16 copy {out}")
    return out


def compute_rows(runs: dict, skip_generate: bool) -> list:
    def col(kind, key):
        return stats([(x["result"] or {}).get(key) for x in runs[kind]])

    def col_sum(kind, keys):
        vals = []
        for x in runs[kind]:
            r = x["result"] or {}
            vals.append(None if any(r.get(k) is None for k in keys) else sum(r[k] for k in keys))
        return stats(vals)

    def gen_inner(kind):  # in-process time after load: torch call_s, wanrt sum of its stage timings
        vals = []
        for x in runs[kind]:
            r = x["result"] or {}
            if "call_s" in r:
                vals.append(r["call_s"])
            elif r.get("videos"):
                vals.append(sum(v for v in r["videos"][0].get("timings_s", {}).values() if isinstance(v, (int, float))))
        return stats(vals)

    rows = []

    def add(name, t, w, t_rss=None, w_rss=None):
        ratio = None if not t or not w else {"min": t["min"] / w["min"], "median": t["median"] / w["median"]}
        rows.append({"measurement": name, "torch_s": t, "wanrt_s": w, "ratio_torch_over_wanrt": ratio,
                     "torch_peak_rss_bytes": t_rss, "wanrt_peak_rss_bytes": w_rss})

    def rss(kind):
        return max((x["maxrss_bytes"] for x in runs[kind]), default=None)

    tokens = ((FRAMES - 1) // 4 + 1) * (HEIGHT // 16) * (WIDTH // 16)
    add("load (stage process; torch maps lazily, see note)", col("torch_stages", "load_s"), col("wanrt_stages", "load_s"))
    add(f"text encoding, CFG pair, {TEXT_LEN} tokens (UMT5 width, 2 layers)", col("torch_stages", "text_encoder_s"), col("wanrt_stages", "text_encoder_s"))
    add(f"transformer forward, CFG pair (2×{tokens} tokens, text {TEXT_LEN}) — wanrt per-step (text K/V cached)",
        col("torch_stages", "transformer_step_s"), col("wanrt_stages", "transformer_step_s"))
    add("transformer forward, same work as torch's (wanrt step + once-per-generation text K/V)",
        col("torch_stages", "transformer_step_s"), col_sum("wanrt_stages", ["transformer_step_s", "text_kv_s"]))
    add(f"VAE decode 16×{(FRAMES - 1) // 4 + 1}×{HEIGHT // 8}×{WIDTH // 8} → {FRAMES}×{HEIGHT}×{WIDTH}",
        col("torch_stages", "vae_decode_s"), col("wanrt_stages", "vae_decode_s"))
    add("stage process total (wall)", stats([x["wall_s"] for x in runs["torch_stages"]]), stats([x["wall_s"] for x in runs["wanrt_stages"]]),
        rss("torch_stages"), rss("wanrt_stages"))
    if not skip_generate and runs["torch_generate"]:
        add(f"**whole generate, {GEN_STEPS} steps CFG, load included (process wall)**",
            stats([x["wall_s"] for x in runs["torch_generate"]]), stats([x["wall_s"] for x in runs["wanrt_generate"]]),
            rss("torch_generate"), rss("wanrt_generate"))
        add("  of which load (in-process)", col("torch_generate", "load_s"), col("wanrt_generate", "load_s"))
        add("  of which pipeline after load (in-process)", gen_inner("torch_generate"), gen_inner("wanrt_generate"))
    return rows


def render_md(res: dict, args) -> str:
    m = res["machine"]
    cfg = res.get("config") or {"storage": "f32", "wanrt_dtype": "f32", "wanrt_model": None, "name": "cpu-bench"}
    loads = [x["load_before"][0] for k in res["runs"] for x in res["runs"][k]] + [x["load_after"][0] for k in res["runs"] for x in res["runs"][k]]
    lines = [
        "# wanrt vs diffusers/torch on CPU (Wan2.1-T2V-1.3B shape, random weights)",
        "",
        f"Run {res['started_utc']}, {res['total_s'] / 60:.1f} min, by `.venv/bin/python tools/bench/bench_cpu.py"
        + (f" --threads {args.threads}" if args.threads != 2 else "")
        + (f" --rounds {args.rounds}" if args.rounds != 2 else "")
        + (f" --repeat {args.repeat}" if args.repeat != 1 else "")
        + "".join(f" --{k.replace('_', '-')} {v}" for k, v in cfg.items()
                  if v and k != "wanrt_args" and v != {"storage": "f32", "wanrt_dtype": "f32", "name": "cpu-bench"}.get(k))
        + "".join(f" --wanrt-arg={a}" for a in cfg.get("wanrt_args") or [])
        + "` (see tools/bench/README.md).",
        "",
        f"Configuration: transformer checkpoint stored in **{cfg['storage']}**; torch computes in float32 "
        f"(widening a bf16 checkpoint at load); wanrt computes in **{cfg['wanrt_dtype']}**"
        + (f" on the optimize artifact `{cfg['wanrt_model']}`" if cfg.get("wanrt_model") else "")
        + (f", with `{' '.join(cfg['wanrt_args'])}`" if cfg.get("wanrt_args") else "")
        + ".",
        "",
        f"Workload: {FRAMES} frames {HEIGHT}×{WIDTH} → latents 16×{res['workload']['latent'][1]}×{HEIGHT // 8}×{WIDTH // 8} → "
        f"{res['workload']['tokens']} tokens, text length {TEXT_LEN}, CFG pair (batch 2), "
        f"{res['threads']} threads (torch.set_num_threads / `wanrt --threads`). Transformer: real 1.3B shape "
        f"(30 layers, 12×128 heads, ffn 8960); VAE: `AutoencoderKLWan()` defaults (127 M); UMT5 with the real XXL width "
        f"but {res['workload']['te_layers']} of 24 layers. Engines run one at a time, interleaved torch/wanrt × {res['rounds']} rounds; "
        "each transformer time is one timed forward after a warm-up forward in the same process.",
        "",
        "Times are **min / median** over rounds, seconds. Ratio = torch / wanrt (> 1: wanrt faster), from the minima "
        "(medians in brackets). Peak RSS = kernel high-water mark of the whole process (wait4), max over rounds.",
        "",
        "| measurement | torch (s) | wanrt (s) | torch / wanrt | peak RSS torch (GiB) | peak RSS wanrt (GiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        ratio = r["ratio_torch_over_wanrt"]
        rs = "–" if ratio is None else f"**{ratio['min']:.2f}×** ({ratio['median']:.2f}×)"
        lines.append(f"| {r['measurement']} | {fmt_s(r['torch_s'])} | {fmt_s(r['wanrt_s'])} | {rs} | "
                     f"{gib(r['torch_peak_rss_bytes']) if r['torch_peak_rss_bytes'] else ''} | {gib(r['wanrt_peak_rss_bytes']) if r['wanrt_peak_rss_bytes'] else ''} |")
    lines += ["", "All samples (s):", ""]
    for r in res["rows"]:
        t = r["torch_s"]["all"] if r["torch_s"] else []
        w = r["wanrt_s"]["all"] if r["wanrt_s"] else []
        lines.append(f"- {r['measurement'].strip('* ')}: torch {', '.join(f'{x:.2f}' for x in t)}; wanrt {', '.join(f'{x:.2f}' for x in w)}")
    lines += [
        "",
        "Notes: wanrt computes the cross-attention keys/values of the text once per generation and reuses them "
        "in every step (`wanrt bench` reports them as `text_kv_s`, outside the step time); diffusers recomputes them "
        "in every forward. The second transformer row adds them back, so it compares the same work. diffusers maps the "
        "f32 safetensors lazily (load ≈ 1 s; a bf16 checkpoint it widens at load) and pays the page-in during the first forward; wanrt, by default, maps the checkpoint "
        "too and packs each weight inside its products (`--prepack always` packs at load). The whole-generate row "
        "contains all of it.",
    ]
    if res["generate_frames_parity"]:
        lines += ["", "Sanity check — same initial noise, decoded frames of the whole generate, max |torch − wanrt|: "
                  + ", ".join(f"{p['max_abs_diff']:.2e}" if p["max_abs_diff"] is not None else "shape mismatch" for p in res["generate_frames_parity"])
                  + f" (frames std {res['generate_frames_parity'][0]['torch_frames_std']:.3f})."]
    lines += [
        "",
        "Machine:",
        "",
        f"- CPU: {m.get('Model name', '?')}, {m.get('nproc')} logical CPUs visible ({m.get('Thread(s) per core', '?')} thread(s)/core), "
        f"flags {m.get('Flags', '?')}, {m.get('mem_total_gib', '?')} GiB RAM; torch CPU capability {m.get('torch_cpu_capability')}",
        *([f"- instruction sets capped by the environment: {', '.join(f'{k}={v}' for k, v in m['isa_caps'].items())}"] if m.get("isa_caps") else []),
        f"- Python {m['python']}, torch {m['torch']}, diffusers {m['diffusers']}, transformers {m['transformers']}",
        f"- wanrt commit {m.get('wanrt_commit')}{' (crates/ had uncommitted changes)' if m.get('wanrt_tree_dirty') else ''}, "
        f"binary built {m.get('wanrt_binary_mtime')}",
        f"- load average (1 min) during the run: {min(loads):.2f} – {max(loads):.2f} "
        f"({'other jobs shared the CPU: absolute times are inflated, interleaving keeps the ratio comparable' if max(loads) > res['threads'] + 0.5 else 'machine otherwise idle'})",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

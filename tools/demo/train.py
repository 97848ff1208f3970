"""Train wanrt's bundled demo model: a tiny Wan2.1 (real diffusers/transformers classes).

Stages (run in order; each is deterministic given its seed; see tools/demo/README.md):

    vae      AutoencoderKLWan (base_dim 16, z_dim 8, Wan's 4x temporal / 8x spatial
             compression) trained on dataset clips with L1 + L2 + small KL; afterwards
             latents_mean / latents_std are measured on 17-frame clips and written
             into its config (WanPipeline decodes z = z_norm * std + mean).
    text     Unigram tokenizer trained with `tokenizers` on the caption vocabulary and
             saved as T5TokenizerFast (<pad>=0, </s>=1, <unk>=2); a tiny
             UMT5EncoderModel with random, frozen weights (seeded).
    latents  encodes N training clips to normalized latents (z - mean) / std and the
             prompt embeddings exactly as WanPipeline.encode_prompt makes them.
    dit      WanTransformer3DModel trained with rectified flow matching:
             x_t = (1 - s) x0 + s n, target n - x0, s = shift(logit-normal), t = 1000 s;
             10% caption dropout (empty prompt) for classifier-free guidance.
             Exports a full WanPipeline folder to --out every --export-every steps.
    export   writes the WanPipeline folder (+ wanrt.json) from the latest checkpoints.

All stages use one CPU thread by default (torch.set_num_threads(1)).
Working files go to --work (default out/demo-work, git-ignored).
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
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset as ds  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# ---- model sizes -----------------------------------------------------------------
VAE_CONFIG = dict(
    base_dim=16,
    z_dim=8,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=1,
    attn_scales=[],
    temperal_downsample=[False, True, True],
    dropout=0.0,
)
TEXT_CONFIG = dict(
    d_model=64,
    d_kv=16,
    d_ff=128,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    dropout_rate=0.0,
    feed_forward_proj="gated-gelu",
    is_encoder_decoder=False,
    use_cache=False,
    tie_word_embeddings=False,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)
DIT_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=4,
    attention_head_dim=32,
    in_channels=8,
    out_channels=8,
    text_dim=64,
    freq_dim=256,
    ffn_dim=512,
    num_layers=4,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
FLOW_SHIFT = 3.0
MAX_SEQ_LEN = 16
WANRT_DEFAULTS = dict(
    height=ds.SIZE,
    width=ds.SIZE,
    num_frames=ds.NUM_FRAMES,
    num_inference_steps=20,
    guidance_scale=4.0,
    max_sequence_length=MAX_SEQ_LEN,
    negative_prompt="",
    fps=8,
)


def log(path: str, msg: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    print(line, flush=True)
    with open(path, "a") as f:
        f.write(line + "\n")


def clip_batch(rng: np.random.Generator, captions, n: int, frames: int, labels: list | None = None) -> torch.Tensor:
    """(n, 3, frames, H, W) in [-1, 1]; a random temporal window of a random clip.
    The captions drawn are appended to `labels` when given."""
    out = []
    for _ in range(n):
        c = captions[rng.integers(len(captions))]
        if labels is not None:
            labels.append(c)
        clip = ds.render(c, int(rng.integers(2**31)))
        s = int(rng.integers(0, ds.NUM_FRAMES - frames + 1))
        out.append(clip[s : s + frames])
    x = torch.from_numpy(np.stack(out)).permute(0, 4, 1, 2, 3)
    return x * 2.0 - 1.0


def adaptive_threads(n: int) -> int:
    """n threads only while the machine is otherwise idle (1-minute load, less this
    process's own threads, below 0.5), else 1."""
    return n if os.getloadavg()[0] < torch.get_num_threads() + 0.5 else 1


def recon_eval(vae, n: int) -> dict:
    """Reconstruction prompt accuracy on n held-out clips (tools/demo/vae_eval.py)."""
    import evaluator as ev
    import vae_eval

    _, held = ds.caption_split()
    return vae_eval.recon_accuracy(vae, ev.load(), held[:: max(1, len(held) // n)][:n], k=1)


# ---- stage: vae ------------------------------------------------------------------
def decode_unclamped(vae, z: torch.Tensor) -> torch.Tensor:
    """AutoencoderKLWan._decode without the final clamp to [-1, 1] (which would zero the
    gradient of saturated pixels); same modules, same causal frame-by-frame caching."""
    vae.clear_cache()
    x = vae.post_quant_conv(z)
    outs = []
    for i in range(z.shape[2]):
        vae._conv_idx = [0]
        outs.append(vae.decoder(x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=(i == 0)))
    vae.clear_cache()
    return torch.cat(outs, 2)


def train_pixel_shape_head(a, train, logf: str) -> torch.nn.Module:
    """Small 2D CNN shape classifier on single real frames (training-only, not shipped), frozen
    and applied to the VAE's decoded frames (`--shape-pix`): a shape-aware reconstruction loss.
    The L1/L2 pixel losses let the decoder round every shape into a blob (the corners are a few
    pixels); this loss needs the shape visibly right in the pixels, so the decoder has to draw
    corners and the encoder has to carry the shape. Loaded from --pix-init, else trained here
    for --pix-steps steps on real frames of the training captions and saved to
    <work>/pix_head.pt. Tried for v3 and NOT used: in practice the loss is adversarial (the
    decoder learns artifacts that move the frozen head; see tools/demo/README.md)."""
    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.SiLU(),
                torch.nn.Conv2d(32, 64, 3, stride=2, padding=1), torch.nn.SiLU(),
                torch.nn.Conv2d(64, 64, 3, stride=2, padding=1), torch.nn.SiLU(),
                torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.SiLU(),
                torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, len(ds.SHAPES)),
            )

        def forward(self, x):  # (n, 3, H, W) in [-1, 1] -> shape logits, from the silhouette:
            m = (x - x[..., :1, :1]).abs().sum(1, keepdim=True)  # distance to the background colour
            return self.net(m / (m.amax(dim=(2, 3), keepdim=True) + 1e-3))  # (top-left pixel)

    head = Head()
    if a.pix_init:
        head.load_state_dict(torch.load(a.pix_init))
    else:
        rng = np.random.default_rng(a.seed + 7)
        opt = torch.optim.AdamW(head.parameters(), lr=2e-3)
        for step in range(1, a.pix_steps + 1):
            caps: list = []
            x = clip_batch(rng, train, 32, 1, caps)[:, :, 0]
            # half the batch blurred (3x3 binomial, random strength) + noise: a smoother decision
            # function than one fitted to crisp frames only, i.e. useful gradients on blurry decodes
            k = torch.tensor([1.0, 2.0, 1.0])
            k = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
            blur = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=3)
            t = torch.rand(32, 1, 1, 1) * (torch.arange(32) % 2 == 0).view(-1, 1, 1, 1)
            x = (1 - t) * x + t * blur + 0.03 * torch.randn(x.shape)
            y = torch.tensor([ds.SHAPES.index(c.shape) for c in caps])
            loss = F.cross_entropy(head(x), y, label_smoothing=0.1)  # bounded logits: bounded gradients
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 50 == 0:
                log(logf, f"pixel shape head step {step} ce {loss.item():.4f}")
        with torch.no_grad():  # accuracy on real frames of the held-out captions
            caps = []
            x = clip_batch(rng, ds.caption_split()[1], 256, 1, caps)[:, :, 0]
            acc = (head(x).argmax(1) == torch.tensor([ds.SHAPES.index(c.shape) for c in caps])).float().mean()
        log(logf, f"pixel shape head: held-out frame accuracy {acc:.3f}")
        torch.save(head.state_dict(), os.path.join(a.work, "pix_head.pt"))
    head.eval().requires_grad_(False)
    return head


def stage_vae(a) -> None:
    from diffusers import AutoencoderKLWan

    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    train, _ = ds.caption_split()
    z = VAE_CONFIG["z_dim"]
    if a.init:
        vae = AutoencoderKLWan.from_pretrained(a.init)
    else:
        vae = AutoencoderKLWan(**VAE_CONFIG, latents_mean=[0.0] * z, latents_std=[1.0] * z)
        # At default init the encoder's mean barely differs between clips (between-clip std
        # ~0.03) and joint training stalls at predicting the average clip; amplify the mean
        # head 10x and start with a narrow posterior (std ~0.05) so the decoder sees signal.
        with torch.no_grad():
            vae.quant_conv.weight[:z] *= 10.0
            vae.quant_conv.bias[:z] *= 10.0
            vae.quant_conv.weight[z:] *= 0.1
            vae.quant_conv.bias[z:] = -6.0
    logf = os.path.join(a.work, "vae_log.txt")
    log(logf, f"vae stage: init {a.init or 'scratch'} steps {a.steps} batch {a.batch} frames {a.frames} lr {a.lr} fg_weight {a.fg_weight}")
    log(logf, f"vae options {vars(a)}")
    if a.freeze_encoder:  # decoder-only fine-tuning: latents (and their statistics) stay fixed
        for mod in (vae.encoder, vae.quant_conv):
            mod.requires_grad_(False)
    params = [p for p in vae.parameters() if p.requires_grad]
    aux = None
    if a.shape_aux:
        # Auxiliary shape classifier on the posterior mean (training-only, not shipped): without
        # it the encoder ignores the shape (a linear/MLP probe of its latents is at chance, and
        # every object decodes to a blob), since the shape is a few % of the pixel loss.
        # 3x3 spatial context: the object spans ~2x2 latent cells.
        aux = torch.nn.Sequential(
            torch.nn.Conv3d(z, 64, (1, 3, 3), padding=(0, 1, 1)), torch.nn.SiLU(),
            torch.nn.Conv3d(64, 64, (1, 3, 3), padding=(0, 1, 1)), torch.nn.SiLU(),
            torch.nn.Conv3d(64, len(ds.SHAPES), 1),
        )
        if a.aux_init:  # the head saved by an earlier run (<work>/aux_head.pt)
            aux.load_state_dict(torch.load(a.aux_init))
    pix = train_pixel_shape_head(a, train, logf) if a.shape_pix else None
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    if aux is not None:  # the fresh head learns 10x faster than the pretrained VAE
        opt.add_param_group({"params": list(aux.parameters()), "lr": a.lr * 10, "lr_mult": 10.0})
    ce_avg = 1.0986
    log(logf, f"vae params {sum(p.numel() for p in vae.parameters())} config {VAE_CONFIG}")
    t0 = time.time()
    for step in range(1, min(a.steps, a.stop_after or a.steps) + 1):
        lr = a.lr * 0.5 * (1 + math.cos(math.pi * step / a.steps)) if step > 50 else a.lr * step / 50
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_mult", 1.0)
        if a.frames == -1:  # alternate 5- and 9-frame clips
            frames = 5 if step % 2 else 9
        elif a.frames == -2:  # alternate 5-frame clips (batch) and 17-frame clips (batch / 4)
            frames = 5 if step % 2 else 17
        elif a.frames in (-3, -4):  # alternate single frames (batch) and 17-frame clips (batch / 8 or / 4)
            frames = 1 if step % 2 else 17
        else:
            frames = a.frames or (9 if step > a.steps * 0.8 else 5)
        bs = a.batch if frames == 5 or a.frames else max(1, a.batch // 2)
        if a.frames == -2 and frames == 17:
            bs = max(1, a.batch // 4)
        if a.frames == -3 and frames == 17:
            bs = max(1, a.batch // 8)
        if a.frames == -4 and frames == 17:
            bs = max(1, a.batch // 4)
        caps: list = []
        x = clip_batch(rng, train, bs, frames, caps)
        bg = x[..., :1, :1].clone()  # top-left pixel of a full frame is always background
        if a.crop:  # random spatial crop (the VAE is fully convolutional): 4x cheaper steps
            i, j = (int(v) for v in rng.integers(0, ds.SIZE - a.crop + 1, 2))
            x = x[..., i : i + a.crop, j : j + a.crop].contiguous()
        # foreground weighting: the shape covers ~7% of the pixels; weight pixels that differ
        # from the background colour (the top-left pixel is always background) by 1 + fg_weight
        fg = ((x - bg).abs().sum(1, keepdim=True) > 0.05).float()
        w = 1.0 + a.fg_weight * fg
        if a.edge_weight:  # shape boundary (+1 pixel): what tells a circle from a square
            d = F.max_pool3d(fg, (1, 3, 3), 1, (0, 1, 1))
            e = -F.max_pool3d(-fg, (1, 3, 3), 1, (0, 1, 1))
            w = w + a.edge_weight * (d - e)
        with torch.set_grad_enabled(not a.freeze_encoder):
            post = vae.encode(x).latent_dist
        zz = post.mean + post.std * torch.randn(post.mean.shape, generator=torch.Generator().manual_seed(step))
        rec = decode_unclamped(vae, zz)
        l1 = ((rec - x).abs() * w).mean()
        l2 = (((rec - x) ** 2) * w).mean()
        kl = 0.5 * (post.mean**2 + post.var - 1.0 - post.logvar).mean()
        loss = l1 + l2 + a.kl * kl
        if aux is not None:  # logits max-pooled over latent positions; per latent frame or averaged
            logits = aux(post.mean).amax(dim=(3, 4))
            target = torch.tensor([ds.SHAPES.index(c.shape) for c in caps])
            if a.aux_per_frame:  # every latent frame must carry the shape, not only the first
                ce = F.cross_entropy(logits.transpose(1, 2).flatten(0, 1), target.repeat_interleave(logits.shape[2]))
            else:
                ce = F.cross_entropy(logits.mean(2), target)
            loss = loss + a.shape_aux * ce
            ce_avg = 0.95 * ce_avg + 0.05 * ce.item()
        if pix is not None:  # frozen pixel-space shape classifier on every decoded frame
            logits = pix(rec.transpose(1, 2).flatten(0, 1))
            target = torch.tensor([ds.SHAPES.index(c.shape) for c in caps]).repeat_interleave(rec.shape[2])
            pce = F.cross_entropy(logits, target)
            loss = loss + a.shape_pix * pce
        if a.grad_weight:  # L1 on spatial finite differences (sharp edges instead of blobs)
            gl = sum(((rec.diff(dim=k) - x.diff(dim=k)).abs()).mean() for k in (3, 4))
            loss = loss + a.grad_weight * gl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if a.adaptive_threads and step % 20 == 0:
            torch.set_num_threads(adaptive_threads(a.threads))
        if a.eval_every and step % a.eval_every == 0:
            vae.eval()
            log(logf, f"step {step} held-out recon {recon_eval(vae, a.eval_clips)}")
            vae.train()
        if step % 10 == 0 or step == 1:
            extra = f" shape_ce {ce.item():.3f} avg {ce_avg:.3f}" if aux is not None else ""
            extra += f" pix_ce {pce.item():.3f}" if pix is not None else ""
            log(logf, f"step {step} frames {frames} loss {loss.item():.4f} l1 {l1.item():.4f} l2 {l2.item():.5f} kl {kl.item():.3f}{extra} lr {lr:.2e} {time.time() - t0:.0f}s")
        if step % a.save_every == 0:
            vae.save_pretrained(os.path.join(a.work, "vae"))
            if aux is not None:
                torch.save(aux.state_dict(), os.path.join(a.work, "aux_head.pt"))
    if a.stop_after and a.stop_after < a.steps:
        vae.save_pretrained(os.path.join(a.work, "vae"))
        if aux is not None:
            torch.save(aux.state_dict(), os.path.join(a.work, "aux_head.pt"))
        log(logf, f"stopped after {a.stop_after} of {a.steps} steps (no statistics; run --steps 0 --init)")
        return
    # latent statistics on full 17-frame clips
    vae.eval()
    stat_rng = np.random.default_rng(a.seed + 1)
    zs = []
    with torch.no_grad():
        for _ in range(32):
            x = clip_batch(stat_rng, train, 8, ds.NUM_FRAMES)
            zs.append(vae.encode(x).latent_dist.mode())
        rec = vae.decode(zs[-1]).sample
    zs = torch.cat(zs)
    mean = zs.mean(dim=(0, 2, 3, 4))
    std = zs.std(dim=(0, 2, 3, 4))
    l1 = (rec - x).abs().mean().item()
    vae.register_to_config(latents_mean=[round(float(v), 5) for v in mean], latents_std=[round(float(v), 5) for v in std])
    vae.save_pretrained(os.path.join(a.work, "vae"))
    log(logf, f"done {time.time() - t0:.0f}s; 17-frame recon L1 {l1:.4f}; latents_mean {mean.tolist()} latents_std {std.tolist()}")


# ---- stage: text -----------------------------------------------------------------
def build_tokenizer(path: str):
    """Unigram tokenizer (tokenizers) saved as T5TokenizerFast: <pad>=0, </s>=1, <unk>=2.

    Piece scores are log-frequencies estimated on the caption corpus: one piece per
    whole word ("▁red", ...) plus single characters as a fallback for unknown words.
    (tokenizers' UnigramTrainer prunes whole words away on a corpus this small and ends
    with a character-level vocabulary, so the unigram LM is estimated directly.)"""
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    corpus = [c.text() for c in ds.all_captions()]
    counts = Counter(w for t in corpus for w in t.split())
    total = sum(counts.values())
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("▁" + w, math.log(n / total)) for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    vocab += [("▁", -12.0)] + [(ch, -14.0) for ch in "abcdefghijklmnopqrstuvwxyz0123456789"]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    assert tok.token_to_id("<pad>") == 0 and tok.token_to_id("</s>") == 1 and tok.token_to_id("<unk>") == 2
    t5 = T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0)
    t5.model_max_length = 512
    t5.save_pretrained(path)
    return t5


def stage_text(a) -> None:
    from transformers import T5TokenizerFast, UMT5Config, UMT5EncoderModel

    logf = os.path.join(a.work, "text_log.txt")
    build_tokenizer(os.path.join(a.work, "tokenizer"))
    tok = T5TokenizerFast.from_pretrained(os.path.join(a.work, "tokenizer"))
    for c in ds.all_captions()[:3] + [ds.Caption("triangle", "yellow", "down", "purple")]:
        ids = tok(c.text()).input_ids
        log(logf, f"{c.text()!r} -> {ids} {tok.convert_ids_to_tokens(ids)}")
    torch.manual_seed(a.seed)
    cfg = UMT5Config(vocab_size=len(tok), **TEXT_CONFIG)
    te = UMT5EncoderModel(cfg).eval()
    te.save_pretrained(os.path.join(a.work, "text_encoder"))
    log(logf, f"vocab {len(tok)}; text encoder params {sum(p.numel() for p in te.parameters())}")


# ---- pipeline assembly -----------------------------------------------------------
def make_scheduler():
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        num_train_timesteps=1000,
        flow_shift=FLOW_SHIFT,
    )


def load_pipeline(work: str, transformer=None, dtype=torch.float32):
    from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel
    from transformers import T5TokenizerFast, UMT5EncoderModel

    if transformer is None:
        transformer = WanTransformer3DModel.from_pretrained(os.path.join(work, "transformer"), torch_dtype=dtype)
    return WanPipeline(
        tokenizer=T5TokenizerFast.from_pretrained(os.path.join(work, "tokenizer")),
        text_encoder=UMT5EncoderModel.from_pretrained(os.path.join(work, "text_encoder"), torch_dtype=dtype),
        vae=AutoencoderKLWan.from_pretrained(os.path.join(work, "vae"), torch_dtype=dtype),
        transformer=transformer,
        scheduler=make_scheduler(),
    )


def export(work: str, out: str, transformer=None) -> None:
    """Write the WanPipeline folder in bfloat16 (+ wanrt.json), atomically replacing `out`."""
    import copy
    import shutil

    pipe = load_pipeline(work, transformer=copy.deepcopy(transformer) if transformer is not None else None)
    pipe.to(torch.bfloat16)
    tmp = out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    for sub in os.listdir(tmp):  # from_pretrained records the work path: keep configs machine-free
        cfg = os.path.join(tmp, sub, "config.json")
        if os.path.exists(cfg):
            with open(cfg) as f:
                d = json.load(f)
            if d.pop("_name_or_path", None) is not None:
                with open(cfg, "w") as f:
                    json.dump(d, f, indent=2, sort_keys=True)
                    f.write("\n")
    with open(os.path.join(tmp, "wanrt.json"), "w") as f:
        json.dump(WANRT_DEFAULTS, f, indent=2)
        f.write("\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


# ---- stage: latents --------------------------------------------------------------
@torch.no_grad()
def stage_latents(a) -> None:
    from diffusers import AutoencoderKLWan
    from transformers import T5TokenizerFast, UMT5EncoderModel

    logf = os.path.join(a.work, "latents_log.txt")
    vae = AutoencoderKLWan.from_pretrained(os.path.join(a.work, "vae")).eval()
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    train, _ = ds.caption_split()
    n = len(train) * a.per_caption
    lat, cap = [], []
    t0 = time.time()
    bs = 8
    for i0 in range(0, n, bs):
        idx = range(i0, min(n, i0 + bs))
        clips = [ds.sample(i, train, base_seed=a.seed) for i in idx]
        x = torch.from_numpy(np.stack([c[1] for c in clips])).permute(0, 4, 1, 2, 3) * 2 - 1
        z = vae.encode(x).latent_dist.mode()
        lat.append(((z - mean) / std).to(torch.float32))
        cap += [i % len(train) for i in idx]
        if (i0 // bs) % 50 == 0:
            log(logf, f"encoded {i0 + len(idx)}/{n} {time.time() - t0:.0f}s")
    lat = torch.cat(lat)
    # prompt embeddings exactly as WanPipeline.encode_prompt produces them
    from diffusers import WanPipeline

    pipe = WanPipeline(
        tokenizer=T5TokenizerFast.from_pretrained(os.path.join(a.work, "tokenizer")),
        text_encoder=UMT5EncoderModel.from_pretrained(os.path.join(a.work, "text_encoder")).eval(),
        vae=vae,
        transformer=None,
        scheduler=make_scheduler(),
    )
    texts = [c.text() for c in train] + [""]
    emb, _ = pipe.encode_prompt(texts, do_classifier_free_guidance=False, max_sequence_length=MAX_SEQ_LEN)
    torch.save({"latents": lat, "caption_index": torch.tensor(cap), "text_embeds": emb.float(), "texts": texts}, os.path.join(a.work, "latents.pt"))
    log(logf, f"latents {tuple(lat.shape)} mean {lat.mean():.3f} std {lat.std():.3f}; text_embeds {tuple(emb.shape)}; {time.time() - t0:.0f}s")


# ---- stage: dit ------------------------------------------------------------------
def sample_sigmas(gen: torch.Generator, n: int) -> torch.Tensor:
    """Logit-normal(0, 1) then the same shift the sampler uses: s' = k s / (1 + (k-1) s)."""
    s = torch.sigmoid(torch.randn(n, generator=gen))
    return FLOW_SHIFT * s / (1 + (FLOW_SHIFT - 1) * s)


def stage_dit(a) -> None:
    from diffusers import WanTransformer3DModel

    logf = os.path.join(a.work, "dit_log.txt")
    data = torch.load(os.path.join(a.work, "latents.pt"))
    lat, cap, emb = data["latents"], data["caption_index"], data["text_embeds"]
    empty = emb.shape[0] - 1
    short = None
    if a.short_captions > 0:  # "a green square moves right": the template without its background clause
        short = short_caption_embeds(a.work, data["texts"][:empty])
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    model = WanTransformer3DModel(**DIT_CONFIG)
    if a.init:  # warm start (e.g. from an earlier run's transformer folder)
        model.load_state_dict(WanTransformer3DModel.from_pretrained(a.init, torch_dtype=torch.float32).state_dict())
    ema = WanTransformer3DModel(**DIT_CONFIG)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    start = 0
    ck = os.path.join(a.work, "dit_ckpt.pt")
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01, betas=(0.9, 0.99))
    if a.resume and os.path.exists(ck):
        st = torch.load(ck)
        model.load_state_dict(st["model"]); ema.load_state_dict(st["ema"]); opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"]); start = st["step"]
    log(logf, f"dit params {sum(p.numel() for p in model.parameters())} config {DIT_CONFIG}; data {tuple(lat.shape)}; start {start}")
    t0 = time.time()
    run = 0.0
    for step in range(start + 1, a.steps + 1):
        warm = min(1.0, step / 200)
        lr = a.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / a.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, lat.shape[0], (a.batch,), generator=gen)
        x0 = lat[idx]
        c = cap[idx].clone()
        drop = torch.rand(a.batch, generator=gen) < a.cfg_drop
        c[drop] = empty
        ctx = emb[c]
        if short is not None:
            cut = (torch.rand(a.batch, generator=gen) < a.short_captions) & ~drop
            ctx[cut] = short[c[cut]]
        noise = torch.randn(x0.shape, generator=gen)
        s = sample_sigmas(gen, a.batch)
        sv = s.view(-1, 1, 1, 1, 1)
        xt = (1 - sv) * x0 + sv * noise
        pred = model(hidden_states=xt, timestep=s * 1000, encoder_hidden_states=ctx, return_dict=False)[0]
        loss = F.mse_loss(pred, noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        d = min(a.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - d)
        run = loss.item() if step == start + 1 else 0.98 * run + 0.02 * loss.item()
        if a.adaptive_threads and step % 25 == 0:
            torch.set_num_threads(adaptive_threads(a.threads))
        if step % 25 == 0:
            log(logf, f"step {step} loss {loss.item():.4f} avg {run:.4f} lr {lr:.2e} {time.time() - t0:.0f}s")
        if step % a.export_every == 0 or step == a.steps:
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "step": step}, ck)
            ema.save_pretrained(os.path.join(a.work, "transformer"))
            export(a.work, a.out, transformer=ema)
            log(logf, f"exported step {step} -> {a.out}")


def short_caption_embeds(work: str, texts: list[str]) -> torch.Tensor:
    """Prompt embeddings (as WanPipeline.encode_prompt makes them) of each training caption with its
    ' on a … background' clause removed: users type such shorter prompts (the README's first command
    does), which the full-template captions never showed the model."""
    from diffusers import WanPipeline
    from transformers import T5TokenizerFast, UMT5EncoderModel

    pipe = WanPipeline(
        tokenizer=T5TokenizerFast.from_pretrained(os.path.join(work, "tokenizer")),
        text_encoder=UMT5EncoderModel.from_pretrained(os.path.join(work, "text_encoder")).eval(),
        vae=None,
        transformer=None,
        scheduler=make_scheduler(),
    )
    cut = [t.split(" on a ")[0] for t in texts]
    with torch.no_grad():
        emb, _ = pipe.encode_prompt(cut, do_classifier_free_guidance=False, max_sequence_length=MAX_SEQ_LEN)
    return emb.float()


def stage_export(a) -> None:
    export(a.work, a.out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["vae", "text", "latents", "dit", "export"])
    ap.add_argument("--work", default=os.path.join(ROOT, "out", "demo-work"))
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "demo"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--kl", type=float, default=1e-4, help="vae: KL weight")
    ap.add_argument("--init", default=None, help="vae: continue from this AutoencoderKLWan folder; dit: start from this transformer folder")
    ap.add_argument("--frames", type=int, default=0, help="vae: clip length (0 = 5, then 9 for the last 20%%; -1 = alternate 5 and 9; -2 = alternate 5 and 17; -3 = alternate 1 and 17, 17-frame batch / 8; -4 = the same with 17-frame batch / 4)")
    ap.add_argument("--short-captions", type=float, default=0.0,
                    help="dit: fraction of samples conditioned on the caption without its background clause")
    ap.add_argument("--stop-after", type=int, default=0, help="vae: save and exit after this many steps")
    ap.add_argument("--freeze-encoder", action="store_true", help="vae: train the decoder only")
    ap.add_argument("--crop", type=int, default=0, help="vae: train on random square crops of this size")
    ap.add_argument("--edge-weight", type=float, default=0.0, help="vae: extra loss weight on shape-boundary pixels")
    ap.add_argument("--grad-weight", type=float, default=0.0, help="vae: weight of the spatial-gradient L1 loss")
    ap.add_argument("--shape-aux", type=float, default=0.0, help="vae: weight of the auxiliary shape-classification loss on the latents")
    ap.add_argument("--aux-per-frame", action="store_true", help="vae: shape-aux loss on every latent frame (default: on the logits averaged over latent frames)")
    ap.add_argument("--aux-init", default=None, help="vae: load the auxiliary shape head from this aux_head.pt")
    ap.add_argument("--shape-pix", type=float, default=0.0, help="vae: weight of the shape-classification loss of a frozen pixel-space classifier on the decoded frames")
    ap.add_argument("--pix-steps", type=int, default=400, help="vae: training steps of that classifier (on real frames) when no --pix-init")
    ap.add_argument("--pix-init", default=None, help="vae: load that classifier from this pix_head.pt")
    ap.add_argument("--eval-every", type=int, default=0, help="vae: reconstruction prompt accuracy every N steps")
    ap.add_argument("--eval-clips", type=int, default=50, help="vae: held-out clips for --eval-every")
    ap.add_argument("--adaptive-threads", action="store_true", help="use --threads only while the machine is idle, else 1")
    ap.add_argument("--fg-weight", type=float, default=0.0, help="vae: extra loss weight on shape pixels")
    ap.add_argument("--save-every", type=int, default=200, help="vae: checkpoint every N steps")
    ap.add_argument("--per-caption", type=int, default=24, help="latents: clips per training caption")
    ap.add_argument("--cfg-drop", type=float, default=0.1)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--export-every", type=int, default=500)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    defaults = {"vae": (450, 4, 3e-4), "dit": (4000, 32, 5e-4)}.get(a.stage, (0, 0, 0.0))
    a.steps = a.steps if a.steps is not None else defaults[0]
    a.batch = a.batch if a.batch is not None else defaults[1]
    a.lr = a.lr if a.lr is not None else defaults[2]
    torch.set_num_threads(adaptive_threads(a.threads) if a.adaptive_threads else a.threads)
    os.makedirs(a.work, exist_ok=True)
    {"vae": stage_vae, "text": stage_text, "latents": stage_latents, "dit": stage_dit, "export": stage_export}[a.stage](a)


if __name__ == "__main__":
    main()

"""diffusers/torch reference row of `wanrt bench --ladder` (run by the ladder with the Python the
user names in --reference-python; embedded in the wanrt binary).

Generates the ladder's first videos with diffusers' WanPipeline on the same model folder, size,
steps, prompts and seeds, and prints one JSON object: load time, per-step times (one denoising
step: both CFG passes and the scheduler update, timed between step-end callbacks, first step
excluded as warm-up), end-to-end time per video, peak memory and weight bytes.

    python diffusers_reference.py '{"model": DIR, "prompts": [...], "seeds": [...], "frames": F,
        "height": H, "width": W, "steps": N, "threads": T | null, "device": "cpu" | "cuda"}'
"""

import json
import resource
import sys
import time


def main():
    cfg = json.loads(sys.argv[1])
    import torch
    import diffusers
    from diffusers import WanPipeline

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    cuda = cfg["device"] == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32

    def sync():
        if cuda:
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    pipe = WanPipeline.from_pretrained(cfg["model"], torch_dtype=dtype)
    # diffusers keeps the VAE in float32 for Wan, as wanrt does.
    pipe.vae.to(torch.float32)
    pipe.to(cfg["device"])
    load_s = time.perf_counter() - t0
    weight_bytes = sum(p.numel() * p.element_size() for m in (pipe.transformer, pipe.text_encoder) for p in m.parameters())

    steps_s, videos_s = [], []
    marks = []

    def on_step_end(_pipe, _i, _t, kwargs):
        sync()
        marks.append(time.perf_counter())
        return kwargs

    for prompt, seed in zip(cfg["prompts"], cfg["seeds"]):
        marks.clear()
        sync()
        start = time.perf_counter()
        marks.append(start)
        pipe(
            prompt=prompt,
            negative_prompt=cfg.get("negative_prompt", ""),
            num_frames=cfg["frames"],
            height=cfg["height"],
            width=cfg["width"],
            num_inference_steps=cfg["steps"],
            generator=torch.Generator("cpu").manual_seed(int(seed)),
            output_type="np",
            callback_on_step_end=on_step_end,
        )
        sync()
        videos_s.append(time.perf_counter() - start)
        # marks[0] is the call's start (text encoding precedes step 1): step k is marks[k+1] - marks[k], k ≥ 1.
        steps_s.extend(b - a for a, b in zip(marks[1:], marks[2:]))

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = {
        "name": "diffusers",
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
        "device": cfg["device"],
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "load_s": load_s,
        "step_s_all": steps_s,
        "end_to_end_s_all": videos_s,
        "peak_rss_bytes": peak,
        "peak_device_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "weight_bytes": weight_bytes,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

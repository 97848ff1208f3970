//! The ladder's report: `ladder.json` (a `rungs` list with DESIGN.md's stable keys; metrics
//! not measured are `null`) and `ladder.md` (the same figures as tables, with what they mean).

use super::quality::RungQuality;
use super::reference::ReferenceRow;
use super::stats::Spread;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One rung's figures.
#[derive(Debug, Clone, Serialize)]
pub struct RungRow {
    pub name: String,
    pub label: String,
    /// The artifact folder the rung ran (`null`: the source model).
    pub artifact: Option<String>,
    /// Whether the artifact came from the cache (`null` without one).
    pub artifact_cached: Option<bool>,
    pub optimize_flags: Vec<String>,
    pub cache_threshold: Option<f64>,
    /// Median transformer step (the CFG pair), warm-up excluded.
    pub step_seconds: Option<f64>,
    pub step_spread: Option<Spread>,
    /// The baseline's median step over this rung's.
    pub speedup: Option<f64>,
    /// The baseline's denoise s/step over this rung's (the step cache's skipped passes count).
    pub denoise_speedup: Option<f64>,
    /// Denoising time per scheduler step in the generations (fewer transformer passes with the
    /// step cache), mean over videos.
    pub denoise_seconds_per_step: Option<f64>,
    pub transformer_evals_per_video: Option<f64>,
    /// Mean per video of text encoding + denoising + decoding + writing (the model load is in
    /// `stages_seconds.load`).
    pub end_to_end_seconds: Option<f64>,
    pub stages_seconds: BTreeMap<String, f64>,
    pub peak_memory_bytes: Option<u64>,
    /// Transformer + text encoder weights as held in memory.
    pub weight_bytes: Option<u64>,
    pub transformer_weight_bytes: Option<u64>,
    pub ops_per_step: Option<u64>,
    pub ops_by_kind: BTreeMap<String, u64>,
    #[serde(flatten)]
    pub quality: RungQuality,
}

impl RungRow {
    pub fn speedup_label(&self) -> String {
        self.speedup.map_or("—".into(), |s| format!("{s:.2}×"))
    }
}

/// What the whole run was.
#[derive(Debug, Clone, Serialize)]
pub struct LadderHeader {
    pub command: String,
    pub model: String,
    pub model_sha256: String,
    pub backend: String,
    pub threads: usize,
    pub machine: String,
    pub load_before: String,
    pub load_after: String,
    pub videos: usize,
    pub prompts: usize,
    pub seeds: usize,
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub steps: usize,
    pub seed: u64,
    pub bench_repeats: usize,
    pub bootstrap_resamples: usize,
    pub metrics: Vec<String>,
    pub review_command: String,
    pub wall_seconds: f64,
}

/// `ladder.json`: Estimate objects (`{value, ci95, n}`) become the value under the metric's key
/// and `<key>_ci95` beside it, so every metric key holds a number or null.
pub fn to_json(header: &LadderHeader, rungs: &[RungRow], references: &[ReferenceRow]) -> serde_json::Value {
    let mut rows = serde_json::to_value(rungs).expect("rows serialize");
    for row in rows.as_array_mut().into_iter().flatten() {
        flatten_estimates(row);
    }
    serde_json::json!({
        "wanrt": env!("CARGO_PKG_VERSION"),
        "header": header,
        "rungs": rows,
        "references": references,
    })
}

fn flatten_estimates(row: &mut serde_json::Value) {
    let Some(obj) = row.as_object_mut() else { return };
    let keys: Vec<String> = obj.keys().cloned().collect();
    for k in keys {
        let est =
            obj[&k].as_object().filter(|o| o.len() == 3 && o.contains_key("value") && o.contains_key("ci95")).cloned();
        if let Some(e) = est {
            obj.insert(k.clone(), e["value"].clone());
            obj.insert(format!("{k}_ci95"), e["ci95"].clone());
            obj.insert(format!("{k}_n"), e["n"].clone());
        }
    }
    for v in obj.get_mut("videos").and_then(|v| v.as_array_mut()).into_iter().flatten() {
        flatten_estimates(v);
    }
}

fn bytes(b: Option<u64>) -> String {
    b.map_or("—".into(), wanrt_io::format_size)
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.filter(|v| v.is_finite()).map_or("—".into(), |v| format!("{v:.digits$}"))
}

fn est(e: &Option<super::stats::Estimate>, digits: usize) -> String {
    match e {
        Some(e) => match e.ci95 {
            Some([lo, hi]) => format!("{:.digits$} [{lo:.digits$}, {hi:.digits$}]", e.value),
            None => format!("{:.digits$}", e.value),
        },
        None => "—".into(),
    }
}

/// `ladder.md`.
pub fn to_markdown(h: &LadderHeader, rungs: &[RungRow], references: &[ReferenceRow]) -> String {
    let mut md = String::from("# wanrt bench --ladder\n\n");
    let _ = writeln!(md, "Command: `{}`\n", h.command);
    let _ = writeln!(
        md,
        "Model `{}` (sha256 {}…), backend {}, {} threads on {}. Load average before {}, after {}.\n",
        h.model,
        &h.model_sha256[..h.model_sha256.len().min(12)],
        h.backend,
        h.threads,
        h.machine,
        h.load_before,
        h.load_after
    );
    let _ = writeln!(
        md,
        "Every rung generated the same {} videos ({} prompts × {} seeds from seed {}, the same initial noise) at \
         {}×{}×{} (frames×height×width), {} steps. Transformer step: median of {} timed passes of the CFG pair, each \
         `wanrt bench` process after one warm-up pass, the rungs interleaved in rounds (forward, then backward). Peak memory: the generating process's peak RSS. Total \
         wall time {:.0} s.\n",
        h.videos, h.prompts, h.seeds, h.seed, h.frames, h.height, h.width, h.steps, h.bench_repeats, h.wall_seconds
    );
    md += "## Speed and memory\n\n";
    md += "| rung | what | step (s) median [min–max] | speedup | denoise s/step | denoise speedup | transformer evals/video | end-to-end s/video | peak memory | weights | ops/step |\n";
    md += "|---|---|---|---|---|---|---|---|---|---|---|\n";
    for r in rungs {
        let step = match &r.step_spread {
            Some(s) => format!("{:.4} [{:.4}–{:.4}]", s.median, s.min, s.max),
            None => "—".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.label,
            step,
            r.speedup_label(),
            num(r.denoise_seconds_per_step, 4),
            r.denoise_speedup.map_or("—".into(), |s| format!("{s:.2}×")),
            num(r.transformer_evals_per_video, 1),
            num(r.end_to_end_seconds, 3),
            bytes(r.peak_memory_bytes),
            bytes(r.weight_bytes),
            r.ops_per_step.map_or("—".into(), |o| o.to_string()),
        );
    }
    md += "\n### End to end by stage (s; per video, mean; the model load once per rung)\n\n";
    md += "| rung | load | text encoder | denoising | VAE decode | write |\n|---|---|---|---|---|---|\n";
    for r in rungs {
        let st = |k: &str| num(r.stages_seconds.get(k).copied(), 3);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            r.name,
            st("load"),
            st("text_encoder"),
            st("denoising"),
            st("vae_decode"),
            st("write")
        );
    }
    md += "\n## Quality against the baseline\n\n";
    md += "Per-video metrics compare each rung's raw frames with the baseline's video of the same prompt and seed; \
           intervals are 95 % percentile-bootstrap intervals over videos (none below 3 videos).\n\n";
    md += "| rung | PSNR (dB) | SSIM | LPIPS | FID vs baseline | FVD vs baseline | CLIPScore | prompt accuracy | domain FD vs baseline |\n";
    md += "|---|---|---|---|---|---|---|---|---|\n";
    for r in rungs {
        let q = &r.quality;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            est(&q.psnr, 2),
            est(&q.ssim, 4),
            est(&q.lpips, 4),
            num(q.fid_vs_baseline, 2),
            num(q.fvd_vs_baseline, 2),
            est(&q.clip_score, 2),
            est(&q.prompt_accuracy, 3),
            est(&q.domain_fd_vs_baseline, 1),
        );
    }
    if rungs.iter().any(|r| {
        r.quality.fid_vs_real.is_some() || r.quality.fvd_vs_real.is_some() || r.quality.domain_fd_vs_real.is_some()
    }) {
        md += "\n### Against real videos\n\n| rung | FID vs real | FVD vs real | domain FD vs real |\n|---|---|---|---|\n";
        for r in rungs {
            let q = &r.quality;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                r.name,
                num(q.fid_vs_real, 2),
                num(q.fvd_vs_real, 2),
                est(&q.domain_fd_vs_real, 1)
            );
        }
    }
    if !references.is_empty() {
        md += "\n## Reference stacks, measured in this run\n\n";
        md +=
            "Same model folder, size, steps, prompts and seeds (the ladder's first videos). Step: one denoising step \
               (both CFG passes and the scheduler update), warm-up excluded; compared with the baseline's denoise \
               s/step above.\n\n";
        md += "| stack | detail | step (s) median | baseline's speedup over it | end-to-end s/video (median) | peak memory | weights |\n|---|---|---|---|---|---|---|\n";
        let base = rungs.first().and_then(|r| r.denoise_seconds_per_step);
        for x in references {
            let step = x.step_seconds.map(|s| s.median);
            let ratio = step.zip(base).map(|(s, b)| format!("{:.2}×", s / b)).unwrap_or_else(|| "—".into());
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                x.name,
                x.detail,
                num(step, 4),
                ratio,
                num(x.end_to_end_seconds.map(|s| s.median), 3),
                bytes(x.peak_memory_bytes),
                bytes(x.weight_bytes)
            );
        }
    }
    md += "\n## Reading the numbers\n\n";
    let frames = rungs.iter().find_map(|r| r.quality.fid_frames);
    match frames {
        Some(n) => {
            let _ = writeln!(
                md,
                "- FID here is computed from {n} frames per set. FID is biased upward at small sample sizes (the bias \
                 shrinks roughly as 1/N and is large below ~10 000 Inception features), so these values are only \
                 comparable with each other — same N, same prompts — never with published FIDs. FID/FVD against the \
                 baseline measure how far a rung's set moved; against real videos, how far from the data."
            );
        }
        None => md += "- FID, FVD, LPIPS and CLIPScore need their networks' weights (`--inception`, `--i3d`, `--lpips`, `--clip`): not given, not measured.\n",
    }
    md += "- Step speedups are of the transformer pass alone; the step cache's gain shows in denoise s/step and transformer evals/video.\n";
    md += "- Denoise s/step is a generation's denoising time over its steps: it includes the first pass's warm-up (page faults, caches), so with few steps it exceeds the transformer step.\n";
    md += "- Timings on a shared machine move with its load (recorded above); compare rungs within one run.\n";
    let _ = writeln!(md, "\n## Blind review\n\nEvery rung's videos are in `videos/<rung>/`. To rate them blind against the baseline:\n\n```\n{}\n```", h.review_command);
    md
}

#[cfg(test)]
mod tests {
    use super::super::stats::Estimate;
    use super::*;

    fn row(name: &str, step: f64) -> RungRow {
        RungRow {
            name: name.into(),
            label: format!("{name} label"),
            artifact: None,
            artifact_cached: None,
            optimize_flags: vec![],
            cache_threshold: None,
            step_seconds: Some(step),
            step_spread: Some(Spread { median: step, min: step * 0.9, max: step * 1.2, mad: 0.0, n: 3 }),
            speedup: Some(0.5 / step),
            denoise_speedup: Some(0.5 / step),
            denoise_seconds_per_step: Some(step),
            transformer_evals_per_video: Some(20.0),
            end_to_end_seconds: Some(step * 25.0),
            stages_seconds: BTreeMap::new(),
            peak_memory_bytes: Some(64 << 20),
            weight_bytes: Some(5 << 20),
            transformer_weight_bytes: Some(4 << 20),
            ops_per_step: Some(212),
            ops_by_kind: BTreeMap::new(),
            quality: RungQuality::default(),
        }
    }

    fn header() -> LadderHeader {
        LadderHeader {
            command: "wanrt bench --ladder --report out".into(),
            model: "models/demo".into(),
            model_sha256: "0123456789abcdef".into(),
            backend: "cpu/f32".into(),
            threads: 2,
            machine: "test cpu".into(),
            load_before: "0.1".into(),
            load_after: "0.2".into(),
            videos: 4,
            prompts: 4,
            seeds: 1,
            frames: 17,
            height: 32,
            width: 32,
            steps: 20,
            seed: 0,
            bench_repeats: 5,
            bootstrap_resamples: 1000,
            metrics: vec!["psnr".into()],
            review_command: "wanrt review serve --study ladder".into(),
            wall_seconds: 12.0,
        }
    }

    #[test]
    fn json_keeps_the_stable_keys_as_numbers_or_null() {
        let mut int8 = row("int8", 0.25);
        int8.quality.psnr = Some(Estimate { value: 34.5, ci95: Some([33.0, 36.0]), n: 4 });
        let j = to_json(&header(), &[row("baseline", 0.5), int8], &[]);
        let r = &j["rungs"][1];
        for key in [
            "name",
            "step_seconds",
            "end_to_end_seconds",
            "peak_memory_bytes",
            "weight_bytes",
            "psnr",
            "ssim",
            "lpips",
            "fid_vs_baseline",
            "clip_score",
            "prompt_accuracy",
        ] {
            assert!(r.get(key).is_some(), "missing key {key}");
        }
        assert_eq!(r["psnr"], 34.5);
        assert_eq!(r["psnr_ci95"], serde_json::json!([33.0, 36.0]));
        assert!(r["ssim"].is_null() && r["fid_vs_baseline"].is_null());
        assert_eq!(r["speedup"], 2.0);
        assert_eq!(j["rungs"][0]["name"], "baseline");
    }

    #[test]
    fn markdown_has_a_row_per_rung_and_states_what_was_not_measured() {
        let mut int8 = row("int8", 0.25);
        int8.quality.psnr = Some(Estimate { value: 34.5, ci95: Some([33.0, 36.0]), n: 4 });
        let md = to_markdown(&header(), &[row("baseline", 0.5), int8], &[]);
        assert!(md.contains("| int8 | int8 label | 0.2500 [0.2250–0.3000] | 2.00× |"), "{md}");
        assert!(md.contains("| int8 | 34.50 [33.00, 36.00] | — |"), "{md}");
        assert!(md.contains("not given, not measured"));
        assert!(md.contains("wanrt review serve --study ladder"));
        assert!(!md.contains("Reference stacks"));
        let reference = ReferenceRow {
            name: "diffusers (torch)".into(),
            detail: "torch 2".into(),
            step_seconds: Some(Spread { median: 1.0, min: 1.0, max: 1.0, mad: 0.0, n: 3 }),
            end_to_end_seconds: None,
            load_seconds: None,
            peak_memory_bytes: None,
            weight_bytes: None,
            videos: 2,
        };
        let md = to_markdown(&header(), &[row("baseline", 0.5)], &[reference]);
        assert!(md.contains("| diffusers (torch) | torch 2 | 1.0000 | 2.00× |"), "{md}");
    }
}

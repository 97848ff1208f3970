//! Reference rows measured in the same run: the stacks people use on the same model, size,
//! steps, prompts and seeds — diffusers/torch (through a Python the user names) and
//! stable-diffusion.cpp (a binary the user names, with its own model files).

use super::children::{run, run_json, Args};
use super::stats::{spread, Spread};
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

const DIFFUSERS_SCRIPT: &str = include_str!("diffusers_reference.py");

/// One reference stack's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ReferenceRow {
    pub name: String,
    /// Versions, device and dtype as the stack reports them.
    pub detail: String,
    /// One denoising step (both CFG passes and the scheduler update), warm-up excluded.
    pub step_seconds: Option<Spread>,
    pub end_to_end_seconds: Option<Spread>,
    pub load_seconds: Option<f64>,
    pub peak_memory_bytes: Option<u64>,
    pub weight_bytes: Option<u64>,
    pub videos: usize,
}

/// The videos a reference makes: the ladder's first ones.
pub struct ReferenceJob<'a> {
    pub model: &'a Path,
    pub videos: &'a [(String, u64)],
    pub size: [usize; 3],
    pub steps: usize,
    pub threads: Option<usize>,
    pub cuda: bool,
}

/// diffusers' WanPipeline through `python`.
pub fn diffusers(python: &Path, job: &ReferenceJob, scratch: &Path) -> Result<ReferenceRow> {
    let script = scratch.join("diffusers_reference.py");
    std::fs::write(&script, DIFFUSERS_SCRIPT).with_context(|| format!("writing {}", script.display()))?;
    let cfg = serde_json::json!({
        "model": job.model,
        "prompts": job.videos.iter().map(|v| &v.0).collect::<Vec<_>>(),
        "seeds": job.videos.iter().map(|v| v.1).collect::<Vec<_>>(),
        "frames": job.size[0], "height": job.size[1], "width": job.size[2],
        "steps": job.steps,
        "threads": job.threads,
        "device": if job.cuda { "cuda" } else { "cpu" },
    });
    let out =
        run_json(python, &Args::default().arg(&script).arg(cfg.to_string()), "--reference-python (diffusers)", || {})?;
    let j = &out;
    let all = |key: &str| -> Vec<f64> { j[key].as_array().into_iter().flatten().filter_map(|v| v.as_f64()).collect() };
    Ok(ReferenceRow {
        name: "diffusers (torch)".into(),
        detail: format!(
            "torch {}, diffusers {}, {} {}, {} threads",
            j["versions"]["torch"].as_str().unwrap_or("?"),
            j["versions"]["diffusers"].as_str().unwrap_or("?"),
            j["device"].as_str().unwrap_or("?"),
            j["dtype"].as_str().unwrap_or("?"),
            j["threads"]
        ),
        step_seconds: spread(&all("step_s_all")),
        end_to_end_seconds: spread(&all("end_to_end_s_all")),
        load_seconds: j["load_s"].as_f64(),
        peak_memory_bytes: j["peak_device_bytes"].as_u64().or(j["peak_rss_bytes"].as_u64()),
        weight_bytes: j["weight_bytes"].as_u64(),
        videos: job.videos.len(),
    })
}

/// stable-diffusion.cpp: `bin` with the user's `extra` arguments (its model files, sampler, …)
/// plus the video's prompt, size, frames, steps and seed; timed per video from outside (sd.cpp
/// loads its model in every run, so its times include loading), peak memory from /proc.
pub fn sdcpp(bin: &Path, extra: &[String], job: &ReferenceJob, scratch: &Path) -> Result<ReferenceRow> {
    let mut walls = Vec::new();
    let mut peak = None;
    for (i, (prompt, seed)) in job.videos.iter().enumerate() {
        let args = Args::default()
            .extend(extra)
            .flag("-p", prompt)
            .flag("-W", job.size[2])
            .flag("-H", job.size[1])
            .flag("--video-frames", job.size[0])
            .flag("--steps", job.steps)
            .flag("-s", seed)
            .path("-o", &scratch.join(format!("sdcpp_{i}.avi")));
        let (wall, rss) = run_measured(bin, &args, &format!("--sdcpp {}", bin.display()))?;
        walls.push(wall);
        peak = peak.max(rss);
    }
    Ok(ReferenceRow {
        name: "stable-diffusion.cpp".into(),
        detail: format!("{} {}", bin.display(), extra.join(" ")),
        step_seconds: None,
        end_to_end_seconds: spread(&walls),
        load_seconds: None,
        peak_memory_bytes: peak,
        weight_bytes: None,
        videos: job.videos.len(),
    })
}

/// Runs a program to completion: its wall time and its peak resident memory (`VmHWM`, read
/// from /proc while it runs; `None` off Linux).
fn run_measured(bin: &Path, args: &Args, what: &str) -> Result<(f64, Option<u64>)> {
    let t0 = Instant::now();
    let mut peak = None;
    run(bin, args, what, |pid| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
        if let Some(b) = status.as_deref().and_then(crate::sysinfo::hwm_bytes) {
            peak = Some(b);
        }
    })?;
    Ok((t0.elapsed().as_secs_f64(), peak))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_peak_from_proc_status() {
        let hwm = crate::sysinfo::hwm_bytes;
        assert_eq!(hwm("Name:\tsd\nVmPeak:\t 9 kB\nVmHWM:\t  123456 kB\n"), Some(123456 * 1024));
        assert_eq!(hwm("Name:\tsd\n"), None);
    }

    #[cfg(unix)]
    #[test]
    fn sdcpp_gets_the_video_settings_and_is_timed() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("args.txt");
        let bin = d.path().join("fake-sd");
        std::fs::write(&bin, format!("#!/bin/sh\necho \"$@\" >> {}\nsleep 0.3\n", log.display())).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let videos = [("a red fox".to_string(), 3u64), ("a cat".to_string(), 4)];
        let job =
            ReferenceJob { model: d.path(), videos: &videos, size: [9, 32, 48], steps: 4, threads: None, cuda: false };
        let row = sdcpp(&bin, &["--diffusion-model".into(), "wan.gguf".into()], &job, d.path()).unwrap();
        let calls = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = calls.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("--diffusion-model wan.gguf -p a red fox -W 48 -H 32 --video-frames 9 --steps 4 -s 3"),
            "{}",
            lines[0]
        );
        let e2e = row.end_to_end_seconds.unwrap();
        assert!(e2e.min >= 0.3 && e2e.n == 2, "{e2e:?}");
        let failing = d.path().join("failing-sd");
        std::fs::write(&failing, "#!/bin/sh\necho 'error: cannot open wan.gguf' >&2\nexit 3\n").unwrap();
        std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = sdcpp(&failing, &[], &job, d.path()).unwrap_err();
        assert!(format!("{err:#}").contains("cannot open wan.gguf"), "{err:#}");
    }
}

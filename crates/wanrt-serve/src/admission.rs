//! Admission control: an estimate of the working memory a job needs beyond the model
//! weights (already resident), checked against the process's budget before the job is
//! queued. The estimate is an upper-bound sketch of the pipeline's largest live buffers,
//! not a measurement: `/metrics` reports the measured peak (`wanrt_peak_memory_bytes`).

use wanrt_wan::model::WanModel;

use crate::job::JobParams;

/// Bytes of working memory one job needs at its peak (the estimate `wanrt generate` checks
/// against `--max-memory` too, [`WanModel::working_memory`]).
pub fn estimate_bytes(model: &WanModel, p: &JobParams) -> u64 {
    model.working_memory(p.num_frames, p.height, p.width, p.guidance_scale > 1.0)
}

/// Memory the system can still give, from `/proc/meminfo` (`MemAvailable`).
pub fn available_bytes() -> Option<u64> {
    wanrt_wan::memory::available_bytes()
}

/// This process's peak resident memory (`VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `8G`, `512M`, `1.5GiB`, `1000000` → bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("'{s}' is not a size (e.g. 8G, 512M, 1000000)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0f64.powi(4),
        _ => return Err(format!("'{s}': unknown unit (use K, M, G or T)")),
    };
    if !n.is_finite() || n <= 0.0 {
        return Err(format!("'{s}' must be positive"));
    }
    Ok((n * mult) as u64)
}

/// `12345678` → `11.8 MiB`.
pub fn format_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("8G").unwrap(), 8 << 30);
        assert_eq!(parse_bytes("512M").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert!(parse_bytes("-1G").is_err());
        assert!(parse_bytes("8X").is_err());
        assert!(parse_bytes("").is_err());
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
    }
}

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

/// Sizes on the command line and in messages, as everywhere in wanrt.
pub use wanrt_io::{format_size as format_bytes, parse_size as parse_bytes};

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

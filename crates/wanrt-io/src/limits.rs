//! Decode budgets: how many bytes a reader may allocate for what one input file declares.
//!
//! A small file can declare a huge canvas, frame size, frame count or tensor: a GIF's logical
//! screen of 65535×65535, an MP4 whose SPS says 8192×8192 and whose 100 000 samples are one
//! byte each, a PNG of 16384² pixels of zeros. Every decoder checks the sizes it is about to
//! allocate against [`decode_budget`] of the real input length *before* allocating, and a
//! decode whose output would exceed it is a one-line error, never an abort under a memory
//! limit. The budget grows with the input (legitimate compression ratios are bounded: deflate
//! expands at most ~1032:1, LZW and H.264 of natural video far less on average), with a floor so
//! that small real files always decode.
//!
//! `WANRT_DECODE_BUDGET` (`8G`, `512M`, bytes) replaces the computed budget: raise it for
//! extreme but genuine inputs (e.g. a long, nearly static screen recording), lower it to run
//! untrusted inputs under a tight memory limit (the mutation harness does).

use std::collections::TryReserveError;

/// Smallest budget, whatever the input length.
pub const BUDGET_FLOOR: u64 = 256 << 20;
/// Decoded bytes allowed per input byte above the floor.
pub const BUDGET_RATIO: u64 = 1024;
/// The environment variable that overrides the budget.
pub const BUDGET_ENV: &str = "WANRT_DECODE_BUDGET";

/// Bytes a decoder may allocate for an input of `input_len` bytes (see the module docs).
pub fn decode_budget(input_len: u64) -> u64 {
    if let Some(b) = std::env::var(BUDGET_ENV).ok().and_then(|s| parse_size(&s).ok()) {
        return b;
    }
    input_len.saturating_mul(BUDGET_RATIO).max(BUDGET_FLOOR)
}

/// The sentence decoders append when a budget is exceeded.
pub fn budget_hint() -> String {
    format!("set {BUDGET_ENV} (e.g. 8G) to allow more for a genuine file")
}

/// `8G`, `512M`, `1.5GiB`, `1000000` → bytes (K/M/G/T are powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
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
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("'{s}' must be a positive size"));
    }
    Ok((n * mult).min(u64::MAX as f64) as u64)
}

/// `12345678` → `11.8 MiB`.
pub fn format_size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A zeroed buffer of `len` bytes, or an error instead of the allocator's abort when the
/// memory is not there (the budget is a policy; this is the last line under a memory limit).
pub fn try_zeroed(len: usize) -> Result<Vec<u8>, TryReserveError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)?;
    v.resize(len, 0);
    Ok(v)
}

/// Makes room for `additional` more bytes in `v` without its capacity passing `budget`:
/// amortized doubling as `Vec` does, capped, and an error instead of an abort.
pub fn reserve_within(v: &mut Vec<u8>, additional: usize, budget: u64) -> Result<(), TryReserveError> {
    let need = v.len().saturating_add(additional);
    if need <= v.capacity() {
        return Ok(());
    }
    let cap_budget = usize::try_from(budget).unwrap_or(usize::MAX);
    let target = need.max(v.capacity().saturating_mul(2).min(cap_budget));
    v.try_reserve_exact(target - v.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_format() {
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        for bad in ["-1G", "8X", "", "nan", "0"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(format_size(3 << 29), "1.5 GiB");
        assert_eq!(format_size(17), "17 B");
    }

    #[test]
    fn budget_scales_with_the_input() {
        // (Only meaningful when the override is not set in the test environment.)
        if std::env::var_os(BUDGET_ENV).is_none() {
            assert_eq!(decode_budget(0), BUDGET_FLOOR);
            assert_eq!(decode_budget(1 << 30), (1u64 << 30) * BUDGET_RATIO);
            assert_eq!(decode_budget(u64::MAX), u64::MAX);
        }
        assert!(try_zeroed(usize::MAX).is_err());
        let mut v = Vec::new();
        for _ in 0..10 {
            reserve_within(&mut v, 100, 1000).unwrap();
            v.extend_from_slice(&[0; 100]);
        }
        assert!(v.capacity() <= 1000, "{}", v.capacity());
    }
}

//! Shared helpers of the wanrt-media tests.
#![allow(dead_code)]

use wanrt_media::Video;

/// A smooth moving colour pattern, `(frames, h, w, 3)`.
pub fn pattern(frames: usize, h: usize, w: usize) -> Video {
    let mut data = Vec::with_capacity(frames * h * w * 3);
    for f in 0..frames {
        for y in 0..h {
            for x in 0..w {
                let t = f as f32 * 0.3;
                let fx = x as f32 / w as f32;
                let fy = y as f32 / h as f32;
                let r = 0.5 + 0.4 * (6.0 * fx + t).sin();
                let g = 0.5 + 0.4 * (5.0 * fy - t).cos();
                let b = 0.5 + 0.4 * (4.0 * (fx + fy) + 0.5 * t).sin();
                for v in [r, g, b] {
                    data.push((v * 255.0).round() as u8);
                }
            }
        }
    }
    Video::new(frames, h, w, data).unwrap()
}

/// PSNR in dB of two equally shaped u8 buffers (peak 255).
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>() / a.len() as f64;
    if mse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// Top-level MP4 box types in file order.
pub fn top_level_boxes(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0usize;
    while i + 8 <= bytes.len() {
        let size = u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap()) as u64;
        let kind = String::from_utf8_lossy(&bytes[i + 4..i + 8]).into_owned();
        let size = if size == 1 { u64::from_be_bytes(bytes[i + 8..i + 16].try_into().unwrap()) } else { size };
        out.push(kind);
        if size < 8 {
            break;
        }
        i += size as usize;
    }
    out
}

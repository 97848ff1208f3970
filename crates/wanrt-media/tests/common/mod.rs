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

/// A GIF whose logical screen is `w`×`h` and that holds `frames` 1×1 frames (each 19 bytes):
/// tiny on disk, huge decoded.
pub fn tiny_gif(w: u16, h: u16, frames: usize) -> Vec<u8> {
    let mut g = b"GIF89a".to_vec();
    g.extend_from_slice(&w.to_le_bytes());
    g.extend_from_slice(&h.to_le_bytes());
    g.extend_from_slice(&[0, 0, 0]); // no global colour table
    for _ in 0..frames {
        // Image descriptor at (0, 0), 1×1, local colour table of 2 entries.
        g.extend_from_slice(&[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0x80]);
        g.extend_from_slice(&[255, 0, 0, 0, 0, 255]);
        // LZW minimum code size 2, one sub-block (clear, index 0, end), terminator.
        g.extend_from_slice(&[2, 2, 0x44, 0x01, 0]);
    }
    g.push(0x3B);
    g
}

/// A PNG header (signature, IHDR of `w`×`h` RGBA8, an empty IDAT, IEND): a few dozen bytes
/// that declare `w·h·4` bytes of pixels.
pub fn png_header(w: u32, h: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let body = [&kind[..], data].concat();
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut p = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    chunk(&mut p, b"IHDR", &ihdr);
    chunk(&mut p, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut p, b"IEND", &[]);
    p
}

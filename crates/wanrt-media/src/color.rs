//! RGB ↔ YUV 4:2:0, BT.601 matrix, limited ("TV") range — the conversion ffmpeg's
//! swscale applies for `-pix_fmt yuv420p` by default and what DESIGN.md fixes for MP4.
//!
//! Forward (R, G, B in 0…255, Kr = 0.299, Kb = 0.114):
//! `Y = 16 + 219·Y'/255`, `Cb = 128 + 224·(B − Y')/(2·(1 − Kb))/255`,
//! `Cr = 128 + 224·(R − Y')/(2·(1 − Kr))/255` with `Y' = Kr·R + Kg·G + Kb·B`; chroma is
//! the mean of each 2×2 block. The inverse upsamples chroma by nearest neighbour.

const KR: f32 = 0.299;
const KB: f32 = 0.114;
const KG: f32 = 1.0 - KR - KB;

fn clamp_u8(x: f32) -> u8 {
    x.round().clamp(0.0, 255.0) as u8
}

/// Converts an RGB frame (`h·w·3` bytes, even `w` and `h`) to planar I420
/// (`Y` of `w·h`, then `U` and `V` of `w/2·h/2`).
pub fn rgb_to_i420(rgb: &[u8], width: usize, height: usize) -> Vec<u8> {
    debug_assert!((width | height) & 1 == 0);
    debug_assert_eq!(rgb.len(), width * height * 3);
    let (cw, ch) = (width / 2, height / 2);
    let mut out = vec![0u8; width * height + 2 * cw * ch];
    let (y_plane, uv) = out.split_at_mut(width * height);
    let (u_plane, v_plane) = uv.split_at_mut(cw * ch);
    let luma = |r: f32, g: f32, b: f32| KR * r + KG * g + KB * b;
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        let l = luma(px[0] as f32, px[1] as f32, px[2] as f32);
        y_plane[i] = clamp_u8(16.0 + l * (219.0 / 255.0));
    }
    for cy in 0..ch {
        for cx in 0..cw {
            let mut s = [0f32; 3];
            for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let p = ((2 * cy + dy) * width + 2 * cx + dx) * 3;
                for c in 0..3 {
                    s[c] += rgb[p + c] as f32;
                }
            }
            let (r, g, b) = (s[0] / 4.0, s[1] / 4.0, s[2] / 4.0);
            let l = luma(r, g, b);
            u_plane[cy * cw + cx] = clamp_u8(128.0 + (b - l) * (224.0 / 255.0) / (2.0 * (1.0 - KB)));
            v_plane[cy * cw + cx] = clamp_u8(128.0 + (r - l) * (224.0 / 255.0) / (2.0 * (1.0 - KR)));
        }
    }
    out
}

/// Converts planar 4:2:0 (`Y` rows of `y_stride`, `U`/`V` rows of `uv_stride`) to RGB.
#[allow(clippy::too_many_arguments)]
pub fn i420_to_rgb(
    y: &[u8],
    u: &[u8],
    v: &[u8],
    width: usize,
    height: usize,
    y_stride: usize,
    uv_stride: usize,
    out: &mut Vec<u8>,
) {
    out.reserve(width * height * 3);
    for row in 0..height {
        for col in 0..width {
            let yy = (y[row * y_stride + col] as f32 - 16.0) * (255.0 / 219.0);
            let ci = (row / 2) * uv_stride + col / 2;
            let pb = (u[ci] as f32 - 128.0) * (255.0 / 224.0);
            let pr = (v[ci] as f32 - 128.0) * (255.0 / 224.0);
            let r = yy + 2.0 * (1.0 - KR) * pr;
            let b = yy + 2.0 * (1.0 - KB) * pb;
            let g = (yy - KR * r - KB * b) / KG;
            out.push(clamp_u8(r));
            out.push(clamp_u8(g));
            out.push(clamp_u8(b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_colours() {
        // White, black, and BT.601 limited-range primaries.
        let rgb = [255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 0, 255];
        for (px, yuv) in rgb.chunks(3).zip([(235, 128, 128), (16, 128, 128), (81, 90, 240), (41, 240, 110)]) {
            let frame: Vec<u8> = px.iter().copied().cycle().take(12).collect();
            let i420 = rgb_to_i420(&frame, 2, 2);
            assert_eq!((i420[0], i420[4], i420[5]), yuv, "{px:?}");
            let mut back = Vec::new();
            i420_to_rgb(&i420[..4], &i420[4..5], &i420[5..6], 2, 2, 2, 1, &mut back);
            for (a, b) in back[..3].iter().zip(px) {
                assert!((*a as i32 - *b as i32).abs() <= 2, "{px:?} -> {back:?}");
            }
        }
    }
}

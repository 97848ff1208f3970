//! The [`Video`] type: RGB u8 frames `(F, H, W, 3)`, and the float → u8 rule.
//!
//! DESIGN.md's rule for float frames is `round(clip(x, 0, 1) · 255)` as numpy computes
//! it: the product is formed in the input's precision (f32 for f32 frames) and rounded
//! half to even (`numpy.round`); NaN becomes 0 (numpy's cast leaves it undefined).

use crate::error::{Error, Result};

/// A video (or a single image, `F = 1`): frames × height × width × RGB, u8, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Video {
    frames: usize,
    height: usize,
    width: usize,
    data: Vec<u8>,
}

/// `round(clip(x, 0, 1) · 255)` in f32, half to even, as numpy does on f32 frames.
pub fn f32_to_u8(x: f32) -> u8 {
    if x.is_nan() {
        return 0;
    }
    (x.clamp(0.0, 1.0) * 255.0).round_ties_even() as u8
}

/// `round(clip(x, 0, 1) · 255)` in f64, half to even, as numpy does on f64 frames.
pub fn f64_to_u8(x: f64) -> u8 {
    if x.is_nan() {
        return 0;
    }
    (x.clamp(0.0, 1.0) * 255.0).round_ties_even() as u8
}

fn size(frames: usize, height: usize, width: usize) -> Option<usize> {
    frames.checked_mul(height)?.checked_mul(width)?.checked_mul(3)
}

fn mismatch(frames: usize, height: usize, width: usize, len: usize) -> Error {
    Error::invalid(
        "<video>",
        format!(
            "a ({frames}, {height}, {width}, 3) video needs {} values, got {len}",
            size(frames, height, width).map_or("too many".into(), |n| n.to_string())
        ),
    )
}

impl Video {
    /// A video from `(F, H, W, 3)` RGB bytes; the length must match.
    pub fn new(frames: usize, height: usize, width: usize, data: Vec<u8>) -> Result<Self> {
        if size(frames, height, width) != Some(data.len()) {
            return Err(mismatch(frames, height, width, data.len()));
        }
        Ok(Video { frames, height, width, data })
    }

    /// A video from `(F, H, W, 3)` float frames in [0, 1] (see [`f32_to_u8`]).
    pub fn from_f32(frames: usize, height: usize, width: usize, data: &[f32]) -> Result<Self> {
        if size(frames, height, width) != Some(data.len()) {
            return Err(mismatch(frames, height, width, data.len()));
        }
        Self::new(frames, height, width, data.iter().map(|&x| f32_to_u8(x)).collect())
    }

    /// A video from `(F, H, W, 3)` f64 frames in [0, 1] (see [`f64_to_u8`]).
    pub fn from_f64(frames: usize, height: usize, width: usize, data: &[f64]) -> Result<Self> {
        if size(frames, height, width) != Some(data.len()) {
            return Err(mismatch(frames, height, width, data.len()));
        }
        Self::new(frames, height, width, data.iter().map(|&x| f64_to_u8(x)).collect())
    }

    /// Stacks equally sized frames (each `H·W·3` bytes) into a video.
    pub fn from_frames(height: usize, width: usize, frames: Vec<Vec<u8>>) -> Result<Self> {
        let n = frames.len();
        let per = size(1, height, width).ok_or_else(|| mismatch(n, height, width, 0))?;
        let mut data = Vec::with_capacity(per.saturating_mul(n));
        for f in frames {
            if f.len() != per {
                return Err(mismatch(1, height, width, f.len()));
            }
            data.extend_from_slice(&f);
        }
        Self::new(n, height, width, data)
    }

    pub fn frames(&self) -> usize {
        self.frames
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// `(F, H, W, 3)`.
    pub fn shape(&self) -> [usize; 4] {
        [self.frames, self.height, self.width, 3]
    }

    /// All pixels, `(F, H, W, 3)` row-major.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// Frame `i` as `H·W·3` bytes. Panics if `i >= frames()`.
    pub fn frame(&self, i: usize) -> &[u8] {
        let per = self.height * self.width * 3;
        &self.data[i * per..(i + 1) * per]
    }

    /// The frames as f32 in [0, 1] (`x / 255`), `(F, H, W, 3)`.
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&b| b as f32 / 255.0).collect()
    }

    /// A new video of the frames at `indices` (repeats allowed). Out-of-range is an error.
    pub fn select(&self, indices: &[usize]) -> Result<Video> {
        let per = self.height * self.width * 3;
        let mut data = Vec::with_capacity(per.saturating_mul(indices.len()));
        for &i in indices {
            if i >= self.frames {
                return Err(Error::invalid("<video>", format!("frame {i} out of range ({} frames)", self.frames)));
            }
            data.extend_from_slice(self.frame(i));
        }
        Video::new(indices.len(), self.height, self.width, data)
    }
}

/// Indices of `k` frames spread over `n`: `round(i·(n−1)/(k−1))` for i = 0…k−1, rounded
/// half to even like Python's `round` (exact integer arithmetic). `k = 1` gives `[0]`;
/// `k > n` repeats frames. `k = 0` or `n = 0` gives an empty list.
pub fn pick_frames(n: usize, k: usize) -> Vec<usize> {
    if k == 0 || n == 0 {
        return Vec::new();
    }
    if k == 1 {
        return vec![0];
    }
    let d = (k - 1) as u128;
    (0..k)
        .map(|i| {
            let num = i as u128 * (n - 1) as u128;
            let (q, r) = (num / d, num % d);
            let up = match (2 * r).cmp(&d) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Equal => q % 2 == 1,
                std::cmp::Ordering::Less => false,
            };
            (q + up as u128) as usize
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_rule_matches_numpy() {
        // Values and results computed with numpy 2.4 on float32 arrays:
        // np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
        let x: [f32; 9] = [-0.1, 0.0, 0.5 / 255.0, 1.5 / 255.0, 2.5 / 255.0, 0.5, 127.5 / 255.0, 1.0, 2.0];
        let want: [u8; 9] = [0, 0, 0, 2, 2, 128, 128, 255, 255];
        let got: Vec<u8> = x.iter().map(|&v| f32_to_u8(v)).collect();
        assert_eq!(got, want);
        assert_eq!(f32_to_u8(f32::NAN), 0);
    }

    #[test]
    fn pick_frames_rounds_half_to_even() {
        assert_eq!(pick_frames(81, 5), vec![0, 20, 40, 60, 80]);
        // i*(F-1)/(K-1) for F=4, K=3: 0, 1.5, 3 -> 0, 2, 3.
        assert_eq!(pick_frames(4, 3), vec![0, 2, 3]);
        // F=6, K=3: 0, 2.5, 5 -> 0, 2, 5.
        assert_eq!(pick_frames(6, 3), vec![0, 2, 5]);
        assert_eq!(pick_frames(2, 5), vec![0, 0, 0, 1, 1]);
        assert_eq!(pick_frames(10, 1), vec![0]);
        assert!(pick_frames(10, 0).is_empty());
    }
}

//! OCP FP8 **E4M3FN** (1 sign, 4 exponent bits with bias 7, 3 mantissa bits; no infinities,
//! NaN = `0x7F`/`0xFF`, subnormals down to 2⁻⁹, largest finite ±448), as `torch.float8_e4m3fn`.
//!
//! Casting saturates: values beyond ±448 (and ±∞) become ±448. PyTorch's `.to(float8_e4m3fn)`
//! does not saturate (anything that rounds above 464 becomes NaN), so the golden table in
//! `fixtures/quant/fp8_e4m3.json` (made by `tools/fixtures/make_quant_fixtures.py`) records
//! `x.clamp(-448, 448).to(torch.float8_e4m3fn)`, the clamp-then-cast that TensorRT and
//! Transformer Engine apply. Rounding is to nearest, ties to even.
//!
//! [`gemm_fp8`] *emulates* an FP8 GEMM for fidelity measurement on CPU (no CPU here has FP8
//! arithmetic): activations and weights are rounded to E4M3 with their scales, decoded to f32 and
//! multiplied in f32 — the numbers an FP8 tensor-core GEMM with f32 accumulation produces, up to
//! summation order, but not its speed.

use super::{gemm_decoded, round_half_even, ActQuant};
use rayon::prelude::*;

/// Largest finite E4M3FN value.
pub const E4M3_MAX: f32 = 448.0;
/// Smallest normal E4M3FN value, 2⁻⁶.
const MIN_NORMAL: f32 = 0.015625;

/// Decodes one code by the format's definition (used to build [`E4M3_TABLE`]).
const fn decode_slow(b: u8) -> f32 {
    let neg = b & 0x80 != 0;
    let e = ((b >> 3) & 0xF) as i32;
    let m = (b & 7) as u32;
    let mag = if e == 15 && m == 7 {
        f32::NAN
    } else if e == 0 {
        // m · 2⁻⁹, exact in f32.
        m as f32 / 512.0
    } else {
        f32::from_bits((((e - 7 + 127) as u32) << 23) | (m << 20))
    };
    if neg {
        -mag
    } else {
        mag
    }
}

const fn build_table() -> [f32; 256] {
    let mut t = [0.0f32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = decode_slow(i as u8);
        i += 1;
    }
    t
}

/// Every code's f32 value (decoding is a table lookup).
pub static E4M3_TABLE: [f32; 256] = build_table();

/// E4M3FN code → f32 (exact; NaN for `0x7F`/`0xFF`).
#[inline]
pub fn e4m3_to_f32(b: u8) -> f32 {
    E4M3_TABLE[b as usize]
}

/// f32 → E4M3FN code: round to nearest even, saturate to ±448 (±∞ included), NaN → `0x7F`
/// with the input's sign bit.
#[inline]
pub fn f32_to_e4m3(x: f32) -> u8 {
    let sign = ((x.to_bits() >> 24) & 0x80) as u8;
    if x.is_nan() {
        return sign | 0x7F;
    }
    let a = x.abs().min(E4M3_MAX);
    if a < MIN_NORMAL {
        // Subnormal grid m · 2⁻⁹ (m = 8 rounds up into the smallest normal, whose code is 0x08).
        return sign | round_half_even(a * 512.0) as u8;
    }
    // Round the f32 mantissa to 3 bits, ties to even; a carry moves into the exponent.
    let b = a.to_bits();
    let r = (b + 0x7_FFFF + ((b >> 20) & 1)) & 0xFFF0_0000;
    let e = (r >> 23) as i32 - 127 + 7;
    sign | ((e as u8) << 3) | ((r >> 20) & 7) as u8
}

/// E4M3 codes of a `[rows, cols]` weight with per-row (per output channel) or one per-tensor
/// scale: `w ≈ decode(data) · scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fp8Matrix {
    pub rows: usize,
    pub cols: usize,
    /// Row-major `[rows, cols]` E4M3FN codes.
    pub data: Vec<u8>,
    /// One scale per row (per-tensor quantization repeats the same value); 0 for a zero row.
    pub scales: Vec<f32>,
}

/// `code(x / scale)` for one row; a zero scale gives zero codes.
fn encode_row(src: &[f32], scale: f32, dst: &mut [u8]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = if scale > 0.0 { f32_to_e4m3(v / scale) } else { 0 };
    }
}

fn absmax(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, &x| m.max(x.abs()))
}

impl Fp8Matrix {
    /// Per-output-channel: `scale[r] = absmax(w[r, :]) / 448`, codes `e4m3(w / scale)`. The
    /// recommended form for Wan (per-tensor FP8 visibly degrades its videos).
    pub fn quantize_per_channel(w: &[f32], rows: usize, cols: usize) -> Fp8Matrix {
        assert_eq!(w.len(), rows * cols, "weight: expected rows·cols = {rows}·{cols} values");
        let scales: Vec<f32> =
            if cols == 0 { vec![0.0; rows] } else { w.chunks(cols).map(|r| absmax(r) / E4M3_MAX).collect() };
        Fp8Matrix::encode(w, rows, cols, scales)
    }

    /// One scale for the whole tensor, `absmax(w) / 448`.
    pub fn quantize_per_tensor(w: &[f32], rows: usize, cols: usize) -> Fp8Matrix {
        assert_eq!(w.len(), rows * cols, "weight: expected rows·cols = {rows}·{cols} values");
        let s = absmax(w) / E4M3_MAX;
        Fp8Matrix::encode(w, rows, cols, vec![s; rows])
    }

    fn encode(w: &[f32], rows: usize, cols: usize, scales: Vec<f32>) -> Fp8Matrix {
        let mut data = vec![0u8; rows * cols];
        if cols > 0 {
            data.par_chunks_mut(cols).zip(w.par_chunks(cols)).zip(&scales).for_each(|((d, r), &s)| encode_row(r, s, d));
        }
        Fp8Matrix { rows, cols, data, scales }
    }

    /// `decode(data) · scale`, row-major `[rows, cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::new();
        self.dequantize_rows(0, self.rows, &mut out);
        out
    }

    /// Rows `start..start+len` decoded to f32 into `out` (replacing its contents).
    pub fn dequantize_rows(&self, start: usize, len: usize, out: &mut Vec<f32>) {
        let k = self.cols;
        out.clear();
        for r in start..start + len {
            let s = self.scales[r];
            out.extend(self.data[r * k..(r + 1) * k].iter().map(|&q| e4m3_to_f32(q) * s));
        }
    }

    /// Bytes held (codes + scales).
    pub fn bytes(&self) -> usize {
        self.data.len() + 4 * self.scales.len()
    }
}

/// Rounds `x[m, k]` through E4M3 with the scale `act` asks for and returns the f32 values an
/// FP8 GEMM would see (`decode(e4m3(x / s)) · s`).
pub fn fake_quantize_acts(x: &[f32], m: usize, k: usize, act: ActQuant) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "x: expected m·k = {m}·{k} values");
    let mut out = vec![0.0f32; m * k];
    if k == 0 {
        return out;
    }
    let tensor_scale = match act {
        ActQuant::PerToken => None,
        ActQuant::PerTensor => Some(x.par_chunks(k).map(absmax).reduce(|| 0.0, f32::max) / E4M3_MAX),
        ActQuant::Static(s) => {
            assert!(s > 0.0 && s.is_finite(), "static activation scale must be positive, got {s}");
            Some(s)
        }
    };
    out.par_chunks_mut(k).zip(x.par_chunks(k)).for_each(|(o, row)| {
        let s = tensor_scale.unwrap_or_else(|| absmax(row) / E4M3_MAX);
        for (o, &v) in o.iter_mut().zip(row) {
            *o = if s > 0.0 { e4m3_to_f32(f32_to_e4m3(v / s)) * s } else { 0.0 };
        }
    });
    out
}

/// Emulated FP8 GEMM: `out[m, n] = fq(x) · dequant(W)ᵀ (+ bias)` with `fq` the E4M3 rounding of
/// the activations per `act` (see [`fake_quantize_acts`]) and the product in f32. For quality
/// measurement, not speed (it costs an f32 GEMM plus the rounding passes).
pub fn gemm_fp8(x: &[f32], m: usize, k: usize, w: &Fp8Matrix, act: ActQuant, bias: Option<&[f32]>, out: &mut [f32]) {
    assert_eq!(k, w.cols, "x has {k} features, the weight expects {}", w.cols);
    let xq = fake_quantize_acts(x, m, k, act);
    gemm_decoded(&xq, m, k, w.rows, |s, l, buf| w.dequantize_rows(s, l, buf), bias, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::int8::tests::randn;

    /// `fixtures/quant/fp8_e4m3.json`, written by `tools/fixtures/make_quant_fixtures.py`:
    /// `decode[i]` = float(torch code i) (null for NaN); `cast_in` = f32 bit patterns,
    /// `cast_out` = `x.clamp(-448, 448).to(torch.float8_e4m3fn).view(torch.uint8)`.
    fn golden() -> serde_json::Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/quant/fp8_e4m3.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn decode_table_matches_torch() {
        let g = golden();
        let dec = g["decode"].as_array().unwrap();
        assert_eq!(dec.len(), 256);
        for (i, v) in dec.iter().enumerate() {
            let got = e4m3_to_f32(i as u8);
            match v.as_f64() {
                None => assert!(got.is_nan(), "code {i:#04x}: expected NaN, got {got}"),
                Some(want) => assert_eq!(got.to_bits(), (want as f32).to_bits(), "code {i:#04x}"),
            }
        }
    }

    #[test]
    fn cast_matches_torch_bit_exactly() {
        let g = golden();
        let inputs = g["cast_in"].as_array().unwrap();
        let outputs = g["cast_out"].as_array().unwrap();
        assert!(inputs.len() > 2000 && inputs.len() == outputs.len());
        let mut bad = Vec::new();
        for (i, o) in inputs.iter().zip(outputs) {
            let x = f32::from_bits(i.as_u64().unwrap() as u32);
            let want = o.as_u64().unwrap() as u8;
            if f32_to_e4m3(x) != want {
                bad.push(format!("{x:e}: got {:#04x} want {want:#04x}", f32_to_e4m3(x)));
            }
        }
        assert!(
            bad.is_empty(),
            "{} of {} casts differ from torch, e.g. {:?}",
            bad.len(),
            inputs.len(),
            &bad[..bad.len().min(5)]
        );
    }

    #[test]
    fn cast_edge_cases() {
        assert_eq!(f32_to_e4m3(448.0), 0x7E);
        assert_eq!(f32_to_e4m3(1e9), 0x7E);
        assert_eq!(f32_to_e4m3(f32::INFINITY), 0x7E);
        assert_eq!(f32_to_e4m3(f32::NEG_INFINITY), 0xFE);
        assert_eq!(f32_to_e4m3(f32::NAN) & 0x7F, 0x7F);
        assert_eq!(f32_to_e4m3(-0.0), 0x80);
        assert_eq!(f32_to_e4m3(2f32.powi(-9)), 0x01);
        assert_eq!(f32_to_e4m3(2f32.powi(-10)), 0x00); // tie → even (0)
        assert_eq!(f32_to_e4m3(3.0 * 2f32.powi(-10)), 0x02); // tie 1.5 → 2
        assert_eq!(f32_to_e4m3(7.5 / 512.0), 0x08); // tie into the smallest normal
        assert_eq!(f32_to_e4m3(1.0625), 0x38); // tie between 1 and 1.125 → 1
        assert_eq!(f32_to_e4m3(1.1875), 0x3A); // tie between 1.125 and 1.25 → 1.25
                                               // Every finite code round-trips.
        for b in 0..=255u8 {
            let v = e4m3_to_f32(b);
            if !v.is_nan() {
                assert_eq!(f32_to_e4m3(v), b, "{b:#04x}");
            }
        }
    }

    #[test]
    fn round_trip_error_bounds() {
        let x = randn(4096, 11);
        for &v in &x {
            let d = e4m3_to_f32(f32_to_e4m3(v));
            // Half an ulp of a 3-bit mantissa (2⁻⁴ relative) for normals, 2⁻¹⁰ absolute below.
            assert!((d - v).abs() <= (v.abs() / 16.0).max(2f32.powi(-10)), "{v} -> {d}");
        }
        let (rows, cols) = (16, 64);
        let mut w = randn(rows * cols, 12);
        w[3 * cols..4 * cols].fill(0.0);
        let q = Fp8Matrix::quantize_per_channel(&w, rows, cols);
        assert_eq!(q.scales[3], 0.0);
        let d = q.dequantize();
        for r in 0..rows {
            let amax = absmax(&w[r * cols..(r + 1) * cols]);
            for c in 0..cols {
                let (a, b) = (w[r * cols + c], d[r * cols + c]);
                assert!((a - b).abs() <= (a.abs() / 16.0).max(amax / 448.0 / 1024.0) * 1.0001, "{a} {b}");
            }
        }
    }

    #[test]
    fn fp8_gemm_error_is_small_per_channel_and_worse_per_tensor_with_outliers() {
        let (m, k, n) = (32, 256, 48);
        let x = randn(m * k, 13);
        let mut w = randn(n * k, 14);
        // One output channel 10⁴× larger: a per-tensor scale pushes the others into subnormals.
        w[..k].iter_mut().for_each(|v| *v *= 1e4);
        let want: Vec<f32> = (0..m * n)
            .map(|i| (0..k).map(|kk| x[i / n * k + kk] as f64 * w[(i % n) * k + kk] as f64).sum::<f64>() as f32)
            .collect();
        let err = |got: &[f32]| -> f64 {
            // Error on the ordinary channels (all but channel 0).
            let (mut num, mut den) = (0.0, 0.0);
            for i in (0..m * n).filter(|i| i % n != 0) {
                num += ((got[i] - want[i]) as f64).powi(2);
                den += (want[i] as f64).powi(2);
            }
            (num / den).sqrt()
        };
        let mut a = vec![0.0; m * n];
        gemm_fp8(&x, m, k, &Fp8Matrix::quantize_per_channel(&w, n, k), ActQuant::PerToken, None, &mut a);
        let mut b = vec![0.0; m * n];
        gemm_fp8(&x, m, k, &Fp8Matrix::quantize_per_tensor(&w, n, k), ActQuant::PerTensor, None, &mut b);
        let (ea, eb) = (err(&a), err(&b));
        assert!(ea < 0.04, "per-channel fp8 relative error {ea}");
        assert!(eb > ea, "per-tensor {eb} should be worse than per-channel {ea} with an outlier channel");
    }
}

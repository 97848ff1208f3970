//! Layer quantization: f32 weights + calibration statistics → the tensors of
//! the artifact (codes, per-output-channel scales, SmoothQuant factors) and
//! the activation mode.
//!
//! SmoothQuant (Xiao et al. 2023): activation outliers sit in a few input
//! channels, which per-token int8 cannot represent well. Per input channel
//! `j`, `s_j = max|X_j|^α / max|W_{:,j}|^(1−α)`; the weight becomes
//! `W·diag(s)` and the activation `X·diag(1/s)` (fused into the quantization
//! pass), so the product is unchanged while the activation range flattens.

use crate::plan::ActivationChoice;
use crate::{Error, Result};
use wanrt_nn::probe::ProbeStats;
use wanrt_nn::quant::{Fp8Matrix, QuantizedMatrix};
use wanrt_nn::weights::RawTensor;
use wanrt_nn::{Backend, DType, HostTensor, Linear, WeightStore};
use wanrt_wan::artifact::{Activation, LayerFormat};

/// Floor of the smoothing statistics: keeps `s` finite for dead channels.
const SMOOTH_FLOOR: f32 = 1e-5;
const INT8_MAX: f32 = 127.0;
const E4M3_MAX: f32 = 448.0;

/// The artifact tensors of one quantized layer.
pub struct QuantizedLayer {
    pub format: LayerFormat,
    pub activation: Option<Activation>,
    pub smooth: bool,
    /// `{part}.weight`, `{part}.weight_scale` (and `{part}.smooth`) per part.
    pub tensors: Vec<(String, RawTensor)>,
}

/// Little-endian f32 values as a raw tensor of `shape`.
pub(crate) fn f32_raw(shape: Vec<usize>, v: &[f32]) -> Result<RawTensor> {
    Ok(RawTensor::from_bytes(DType::F32, shape, v.iter().flat_map(|x| x.to_le_bytes()).collect())?)
}

/// SmoothQuant factors for `w: [out, in]` given the input's per-channel absmax.
pub fn smoothing_factors(w: &HostTensor, x_absmax: &[f32], alpha: f32) -> Vec<f32> {
    let (rows, cols) = (w.dim(0), w.dim(1));
    let mut w_absmax = vec![0.0f32; cols];
    for r in 0..rows {
        for (m, &v) in w_absmax.iter_mut().zip(&w.data()[r * cols..(r + 1) * cols]) {
            *m = m.max(v.abs());
        }
    }
    x_absmax
        .iter()
        .zip(&w_absmax)
        .map(|(&x, &wm)| {
            let s = x.max(SMOOTH_FLOOR).powf(alpha) / wm.max(SMOOTH_FLOOR).powf(1.0 - alpha);
            if s.is_finite() && s > 0.0 {
                s
            } else {
                1.0
            }
        })
        .collect()
}

/// Quantizes the f32 weight `w: [Σ rows, in]` of a layer whose checkpoint
/// parts are `parts` (prefix, rows), using its input statistics.
pub fn quantize_layer(
    w: &HostTensor,
    parts: &[(String, usize)],
    format: LayerFormat,
    activation: ActivationChoice,
    smooth_alpha: Option<f32>,
    stats: &ProbeStats,
) -> Result<QuantizedLayer> {
    let (rows, cols) = (w.dim(0), w.dim(1));
    if parts.iter().map(|p| p.1).sum::<usize>() != rows || stats.channels() != cols {
        return Err(Error::Msg(format!(
            "layer {}: weight {rows}×{cols}, parts {:?}, statistics of {} channels do not match",
            parts.first().map_or("?", |p| p.0.as_str()),
            parts.iter().map(|p| p.1).collect::<Vec<_>>(),
            stats.channels()
        )));
    }
    if let Some(bad) = w.data().iter().find(|v| !v.is_finite()) {
        return Err(Error::Msg(format!("layer {}: weight value {bad} is not finite", parts[0].0)));
    }
    let smooth = match (format, smooth_alpha) {
        (LayerFormat::Int8, Some(a)) => Some(smoothing_factors(w, &stats.channel_absmax, a)),
        _ => None,
    };
    let scaled;
    let w_q = match &smooth {
        Some(s) => {
            scaled = HostTensor::new(
                [rows, cols],
                w.data().chunks_exact(cols).flat_map(|r| r.iter().zip(s).map(|(v, s)| v * s)).collect(),
            )?;
            &scaled
        }
        None => w,
    };
    // Activation range after smoothing (per channel x/s), for static scales.
    let act_absmax = match &smooth {
        Some(s) => stats.channel_absmax.iter().zip(s).fold(0.0f32, |m, (x, s)| m.max(x / s)),
        None => stats.absmax(),
    };
    let qmax = if format == LayerFormat::Fp8 { E4M3_MAX } else { INT8_MAX };
    let act = match (format, activation) {
        (LayerFormat::Int8 | LayerFormat::Fp8, ActivationChoice::Dynamic) => Some(Activation::PerToken),
        (LayerFormat::Int8 | LayerFormat::Fp8, ActivationChoice::Static) => {
            Some(Activation::Static(if act_absmax > 0.0 { act_absmax / qmax } else { 1.0 }))
        }
        _ => None,
    };
    let (codes, scales): (Vec<u8>, Vec<f32>) = match format {
        LayerFormat::Int8 | LayerFormat::Int8Weight => {
            let q = QuantizedMatrix::quantize_per_row_symmetric(w_q.data(), rows, cols);
            (q.data.iter().map(|&c| c as u8).collect(), q.scales)
        }
        LayerFormat::Fp8 => {
            let q = Fp8Matrix::quantize_per_channel(w_q.data(), rows, cols);
            (q.data, q.scales)
        }
        LayerFormat::F32 => return Err(Error::Msg("quantize_layer called for an f32 layer".into())),
    };
    let dtype = if format == LayerFormat::Fp8 { DType::F8E4M3 } else { DType::I8 };
    let mut tensors = Vec::new();
    let mut row0 = 0;
    for (prefix, n) in parts {
        let part_codes = codes[row0 * cols..(row0 + n) * cols].to_vec();
        tensors.push((format!("{prefix}.weight"), RawTensor::from_bytes(dtype, vec![*n, cols], part_codes)?));
        tensors.push((format!("{prefix}.weight_scale"), f32_raw(vec![*n], &scales[row0..row0 + n])?));
        if let Some(s) = &smooth {
            tensors.push((format!("{prefix}.smooth"), f32_raw(vec![cols], s)?));
        }
        row0 += n;
    }
    Ok(QuantizedLayer { format, activation: act, smooth: smooth.is_some(), tensors })
}

/// The layer `name` as the engine will run it from the artifact (same loader path), prepared for
/// `backend`.
pub fn build_linear(
    q: &QuantizedLayer,
    name: &str,
    parts: &[(String, usize)],
    bias: Option<&[f32]>,
    backend: &dyn Backend,
) -> Result<Linear> {
    let mut ws = WeightStore::new(format!("quantized {}", parts[0].0));
    for (name, t) in &q.tensors {
        ws.insert(name.clone(), t.clone());
    }
    let mut row0 = 0;
    for (prefix, n) in parts {
        if let Some(b) = bias {
            ws.insert(format!("{prefix}.bias"), f32_raw(vec![*n], &b[row0..row0 + n])?);
        }
        if let Some(a) = q.activation {
            ws.set_activation_quant(prefix.clone(), a.to_act_quant());
        }
        row0 += n;
    }
    let cols = q.tensors[0].1.shape[1];
    let prefixes: Vec<&str> = parts.iter().map(|p| p.0.as_str()).collect();
    let outs: Vec<usize> = parts.iter().map(|p| p.1).collect();
    let mut layer = Linear::load_fused(&ws, name, &prefixes, cols, &outs, bias.is_some())?;
    layer.prepare(backend)?;
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wanrt_nn::probe::ActivationProbe;

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// Activations with two outlier channels, as transformers have.
    fn outlier_inputs(m: usize, k: usize) -> HostTensor {
        let mut x = pseudo_random(m * k, 7);
        for row in x.chunks_exact_mut(k) {
            row[3] *= 60.0;
            row[k - 2] *= 30.0;
        }
        HostTensor::new([m, k], x).unwrap()
    }

    fn rel_err(a: &HostTensor, b: &HostTensor) -> f64 {
        a.nmse(b).unwrap().sqrt()
    }

    #[test]
    fn modes_reproduce_the_f32_layer_and_smoothing_helps_outliers() {
        let (m, k, parts) = (64, 48, vec![("a".to_string(), 16), ("b".to_string(), 24)]);
        let w = HostTensor::new([40, k], pseudo_random(40 * k, 3)).unwrap();
        let bias = pseudo_random(40, 5);
        let x = outlier_inputs(m, k);
        let probe = ActivationProbe::new(k);
        probe.record(x.data());
        let stats = probe.snapshot();
        let be = &*wanrt_nn::backend::cpu();
        let xt = be.upload(&x).unwrap();
        let run = |l: &Linear| be.to_host(&l.forward(be, &xt).unwrap()).unwrap();
        let mut f32_layer = Linear::from_f32("l", &w, Some(bias.clone())).unwrap();
        f32_layer.prepare(be).unwrap();
        let reference = run(&f32_layer);
        let err = |format, alpha, act| {
            let q = quantize_layer(&w, &parts, format, act, alpha, &stats).unwrap();
            rel_err(&run(&build_linear(&q, "l", &parts, Some(&bias), be).unwrap()), &reference)
        };
        let w8a16 = err(LayerFormat::Int8Weight, None, ActivationChoice::Dynamic);
        let w8a8 = err(LayerFormat::Int8, None, ActivationChoice::Dynamic);
        let w8a8_smooth = err(LayerFormat::Int8, Some(0.5), ActivationChoice::Dynamic);
        let w8a8_static = err(LayerFormat::Int8, Some(0.5), ActivationChoice::Static);
        let fp8 = err(LayerFormat::Fp8, None, ActivationChoice::Dynamic);
        assert!(w8a16 < 0.01, "W8A16 {w8a16}");
        assert!(w8a8_smooth < w8a8, "smoothing must help with outlier channels: {w8a8_smooth} vs {w8a8}");
        assert!(w8a8_smooth < 0.03 && w8a8_static < 0.05, "{w8a8_smooth} {w8a8_static}");
        assert!(fp8 < 0.06, "FP8 {fp8}");
    }

    #[test]
    fn writes_one_tensor_set_per_part() {
        let w = HostTensor::new([5, 4], pseudo_random(20, 1)).unwrap();
        let probe = ActivationProbe::new(4);
        probe.record(&pseudo_random(8, 2));
        let parts = vec![("p.to_k".to_string(), 2), ("p.to_v".to_string(), 3)];
        let q = quantize_layer(&w, &parts, LayerFormat::Int8, ActivationChoice::Static, Some(0.5), &probe.snapshot())
            .unwrap();
        let names: Vec<&str> = q.tensors.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "p.to_k.weight",
                "p.to_k.weight_scale",
                "p.to_k.smooth",
                "p.to_v.weight",
                "p.to_v.weight_scale",
                "p.to_v.smooth"
            ]
        );
        assert_eq!(q.tensors[3].1.shape, vec![3, 4]);
        assert!(matches!(q.activation, Some(Activation::Static(s)) if s > 0.0));
        let bad = quantize_layer(&w, &parts[..1], LayerFormat::Int8, ActivationChoice::Static, None, &probe.snapshot());
        assert!(bad.is_err());
    }
}

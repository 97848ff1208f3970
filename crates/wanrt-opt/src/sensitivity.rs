//! How much each layer's quantization moves the transformer's output,
//! measured on the calibration inputs: relative L2 error
//! `‖y_q − y‖ / ‖y‖` over all samples, one layer (or group) at a time.

use crate::calibrate::CalibSample;
use crate::Result;
use wanrt_nn::{HostTensor, Linear, Module, ParamMut};
use wanrt_wan::transformer::WanTransformer;

/// Transformer outputs on every sample, read back to the host.
pub fn outputs(tr: &WanTransformer, samples: &[CalibSample]) -> Result<Vec<HostTensor>> {
    samples
        .iter()
        .map(|s| {
            let context = tr.prepare_context(&s.text, s.image.as_ref())?;
            let y = tr.forward_prepared(&s.latents, &s.timesteps, &context)?;
            Ok(tr.backend().to_host(&y)?)
        })
        .collect()
}

/// `sqrt(Σ‖a − b‖² / Σ‖b‖²)` over paired tensors.
pub fn relative_error(a: &[HostTensor], reference: &[HostTensor]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (x, r) in a.iter().zip(reference) {
        for (&p, &q) in x.data().iter().zip(r.data()) {
            num += ((p - q) as f64).powi(2);
            den += (q as f64).powi(2);
        }
    }
    if den > 0.0 {
        (num / den).sqrt()
    } else {
        num.sqrt()
    }
}

/// Exchanges the named block linears of `tr` with `replacements` (call
/// again with the returned layers to undo).
pub fn swap_layers(tr: &mut WanTransformer, replacements: Vec<(String, Linear)>) -> Vec<(String, Linear)> {
    let mut replacements: std::collections::HashMap<String, Linear> = replacements.into_iter().collect();
    let mut previous = Vec::new();
    tr.visit_mut(&mut |p| {
        if let ParamMut::Linear(l) = p {
            if let Some(mut new) = replacements.remove(&l.name) {
                std::mem::swap(l, &mut new);
                previous.push((l.name.clone(), new));
            }
        }
    });
    previous
}

/// Relative output error with `layers` swapped in, against `reference` outputs.
pub fn error_with(
    tr: &mut WanTransformer,
    layers: Vec<(String, Linear)>,
    samples: &[CalibSample],
    reference: &[HostTensor],
) -> Result<f64> {
    let undo = swap_layers(tr, layers);
    let out = outputs(tr, samples);
    swap_layers(tr, undo);
    Ok(relative_error(&out?, reference))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_error_of_known_tensors() {
        let r = HostTensor::new([2], vec![3.0, 4.0]).unwrap();
        let a = HostTensor::new([2], vec![3.0, 4.5]).unwrap();
        assert!((relative_error(&[a], std::slice::from_ref(&r)) - 0.1).abs() < 1e-12);
        assert_eq!(relative_error(std::slice::from_ref(&r), std::slice::from_ref(&r)), 0.0);
    }
}

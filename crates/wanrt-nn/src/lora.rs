//! LoRA and full-weight deltas applied to a [`WeightStore`]: merged into float weights at load,
//! or kept as a low-rank side path `y += (x·Aᵀ)·(f·B)ᵀ` for layers whose weights are quantized
//! (int8 / FP8 codes, ggml blocks) or when merging is turned off.
//!
//! A [`Delta`] targets one parameter by its store name (`blocks.0.attn1.to_q.weight`, `….bias`,
//! a norm's `….weight`); the key formats of the files people have are read by the model crates,
//! which map them to these names. Merging writes the sum back in the parameter's own float dtype
//! (f32 stays f32, bf16 is rounded to bf16, as ComfyUI patches weights), and drops the mapped
//! pages of the original: a merged model is held once.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::weights::{RawTensor, WeightStore};
use rayon::prelude::*;

/// One change to one stored parameter.
#[derive(Debug, Clone)]
pub enum Delta {
    /// `W += factor · up · down` for `W: [out, in]`, `down: [r, in]`, `up: [out, r]`.
    LowRank { down: HostTensor, up: HostTensor, factor: f32 },
    /// `P += factor · diff`, `diff` of the parameter's shape (any number of values).
    Full { diff: HostTensor, factor: f32 },
}

/// A delta and the parameter it changes.
#[derive(Debug, Clone)]
pub struct Target {
    /// Store name of the parameter (`blocks.0.attn1.to_q.weight`).
    pub name: String,
    pub delta: Delta,
}

/// The low-rank side path of one linear layer: `down: [R, in]`, `up: [out, R]` with every
/// adapter's factor folded into `up` (adapters concatenated along the rank).
#[derive(Debug, Clone)]
pub struct SidePath {
    pub down: HostTensor,
    pub up: HostTensor,
}

impl SidePath {
    /// Both paths as one (ranks concatenated); `other` must be of the same layer.
    pub fn concat(&self, other: &SidePath) -> SidePath {
        let (r1, r2, n) = (self.down.shape()[0], other.down.shape()[0], self.up.shape()[0]);
        let down = [self.down.data(), other.down.data()].concat();
        let mut up = Vec::with_capacity(n * (r1 + r2));
        for o in 0..n {
            up.extend_from_slice(&self.up.data()[o * r1..(o + 1) * r1]);
            up.extend_from_slice(&other.up.data()[o * r2..(o + 1) * r2]);
        }
        let k = self.down.shape()[1];
        SidePath {
            down: HostTensor::new([r1 + r2, k], down).expect("sizes add up"),
            up: HostTensor::new([n, r1 + r2], up).expect("sizes add up"),
        }
    }
}

/// How deltas on float weights are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MergeMode {
    /// Merged into f32/bf16/f16 weights; quantized weights get the side path.
    #[default]
    Merge,
    /// Every low-rank delta on a linear weight takes the side path (float weights too).
    SidePath,
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Parameters whose values were changed in place.
    pub merged: usize,
    /// Linear layers given a low-rank side path.
    pub side_paths: usize,
}

fn is_float(d: DType) -> bool {
    matches!(d, DType::F32 | DType::BF16 | DType::F16)
}

/// `values` stored as `dtype` (f32, bf16 or f16, little-endian).
fn encode(values: &[f32], dtype: DType, shape: Vec<usize>) -> Result<RawTensor> {
    let bytes = crate::dtype::f32_to_bytes(values, dtype)
        .ok_or_else(|| Error::Msg(format!("cannot store merged values as {dtype}")))?;
    RawTensor::from_bytes(dtype, shape, bytes)
}

/// `w += factor · up · down` row by row (`w: [out, in]`).
fn add_low_rank(w: &mut [f32], down: &HostTensor, up: &HostTensor, factor: f32) {
    let (r, k) = (down.shape()[0], down.shape()[1]);
    let (d, u) = (down.data(), up.data());
    w.par_chunks_mut(k).enumerate().for_each(|(o, row)| {
        for j in 0..r {
            let c = factor * u[o * r + j];
            if c != 0.0 {
                row.iter_mut().zip(&d[j * k..(j + 1) * k]).for_each(|(w, d)| *w += c * d);
            }
        }
    });
}

/// Checks a delta against the shape of the parameter it targets.
fn check(t: &Target, shape: &[usize]) -> Result<()> {
    let ok = match &t.delta {
        Delta::LowRank { down, up, .. } => {
            let (ds, us) = (down.shape(), up.shape());
            shape.len() == 2
                && ds.len() == 2
                && us.len() == 2
                && ds[0] == us[1]
                && ds[1] == shape[1]
                && us[0] == shape[0]
        }
        Delta::Full { diff, .. } => diff.numel() == shape.iter().product::<usize>(),
    };
    if ok {
        return Ok(());
    }
    let got = match &t.delta {
        Delta::LowRank { down, up, .. } => format!("a LoRA of down {:?} and up {:?}", down.shape(), up.shape()),
        Delta::Full { diff, .. } => format!("a diff of shape {:?}", diff.shape()),
    };
    Err(Error::Msg(format!("{}: parameter of shape {shape:?} cannot take {got}", t.name)))
}

/// Applies `targets` to `ws`: merged into float parameters (every delta on one parameter summed
/// in f32, then stored once), side paths for quantized linear weights (or all low-rank deltas
/// under [`MergeMode::SidePath`]). A target the store lacks, or of the wrong shape, is an error
/// naming it; a full diff on a quantized weight too.
pub fn apply(ws: &mut WeightStore, targets: Vec<Target>, mode: MergeMode) -> Result<Applied> {
    let mut by_name: std::collections::BTreeMap<String, Vec<Target>> = Default::default();
    for t in targets {
        by_name.entry(t.name.clone()).or_default().push(t);
    }
    let mut applied = Applied::default();
    for (name, ts) in by_name {
        let raw = ws.raw(&name).map_err(|_| Error::Msg(format!("the model has no parameter `{name}`")))?.clone();
        ts.iter().try_for_each(|t| check(t, &raw.shape))?;
        let layer = name.strip_suffix(".weight");
        let (mut side, mut merge): (Vec<&Target>, Vec<&Target>) = (vec![], vec![]);
        for t in &ts {
            let low_rank = matches!(t.delta, Delta::LowRank { .. });
            if low_rank && layer.is_some() && (!is_float(raw.dtype) || mode == MergeMode::SidePath) {
                side.push(t);
            } else if !is_float(raw.dtype) {
                return Err(Error::Msg(format!(
                    "{name}: a full-weight diff cannot be applied to a {} weight (quantized weights take LoRA \
                     low-rank deltas only)",
                    raw.dtype
                )));
            } else {
                merge.push(t);
            }
        }
        if !merge.is_empty() {
            let mut values = raw.to_f32()?;
            add_deltas(&name, &mut values, &merge)?;
            ws.insert(name.clone(), encode(&values, raw.dtype, raw.shape.clone())?);
            raw.release_pages();
            applied.merged += 1;
        }
        if let (Some(layer), false) = (layer, side.is_empty()) {
            ws.add_side_path(layer, side_path(&side)?);
            applied.side_paths += 1;
        }
    }
    Ok(applied)
}

/// `values += Σ deltas` in f32, one delta after the other in the order given. Merging at load and
/// a per-request tensor ([`Adapter::tensor`]) both sum here, so where the parameter is stored in
/// f32 they hold the same bits. A non-finite sum is an error naming `name`.
fn add_deltas(name: &str, values: &mut [f32], deltas: &[&Target]) -> Result<()> {
    for t in deltas {
        match &t.delta {
            Delta::LowRank { down, up, factor } => add_low_rank(values, down, up, *factor),
            Delta::Full { diff, factor } => values.par_iter_mut().zip(diff.data()).for_each(|(v, d)| *v += factor * d),
        }
    }
    match values.iter().find(|v| !v.is_finite()) {
        Some(bad) => Err(Error::Msg(format!("{name}: the merged weight has a non-finite value ({bad})"))),
        None => Ok(()),
    }
}

/// The low-rank deltas of one layer as one side path (ranks concatenated, factors in `up`).
fn side_path(ts: &[&Target]) -> Result<SidePath> {
    let mut downs: Vec<f32> = vec![];
    let mut ups: Vec<Vec<f32>> = vec![];
    let (mut rank, mut k, mut n) = (0, 0, 0);
    for t in ts {
        let Delta::LowRank { down, up, factor } = &t.delta else { unreachable!("only low-rank deltas") };
        let (r, kk, nn) = (down.shape()[0], down.shape()[1], up.shape()[0]);
        (k, n) = (kk, nn);
        downs.extend_from_slice(down.data());
        ups.push(up.data().iter().map(|v| v * factor).collect());
        rank += r;
    }
    // up: [n, rank] with each adapter's columns side by side.
    let mut up = vec![0f32; n * rank];
    let mut col = 0;
    for u in &ups {
        let r = u.len() / n.max(1);
        for o in 0..n {
            up[o * rank + col..o * rank + col + r].copy_from_slice(&u[o * r..(o + 1) * r]);
        }
        col += r;
    }
    Ok(SidePath { down: HostTensor::new([rank, k], downs)?, up: HostTensor::new([n, rank], up)? })
}

/// Deltas kept apart from a loaded model: per linear layer (store prefix, `blocks.0.attn1.to_q`)
/// one side path and one bias delta, for [`crate::Linear::with_adapter`]; per small named tensor
/// (a norm's `weight`/`bias`, a modulation table) its full deltas, for [`Adapter::tensor`].
#[derive(Debug, Clone, Default)]
pub struct Adapter {
    pub side_paths: std::collections::BTreeMap<String, SidePath>,
    pub bias_deltas: std::collections::BTreeMap<String, Vec<f32>>,
    /// By the tensor's store name, in the order given (the order merging sums them in).
    pub tensor_deltas: std::collections::BTreeMap<String, Vec<Target>>,
}

impl Adapter {
    /// Full deltas on a tensor `is_tensor` names (the model's norms and tables, which a copy of
    /// the model can hold its own of) are kept for [`Adapter::tensor`]; a low-rank delta there
    /// is an error. Otherwise low-rank deltas on `….weight` become side paths (several on one
    /// layer concatenated), full deltas on `….bias` scaled bias deltas (summed), and a
    /// full-weight `diff` of a linear layer (`[out, in]`) the side path `identity · (diff · x)`:
    /// exact — each output is one product of the diff's row with x, times the factor — at the
    /// cost of the layer itself. Anything else (1-D or N-D deltas on no named tensor) would have
    /// to change the shared weights: an error naming it.
    pub fn from_targets(targets: Vec<Target>, is_tensor: &dyn Fn(&str) -> bool) -> Result<Adapter> {
        let mut low_rank: std::collections::BTreeMap<String, Vec<Target>> = Default::default();
        let mut out = Adapter::default();
        for t in targets {
            if is_tensor(&t.name) {
                if matches!(t.delta, Delta::LowRank { .. }) {
                    return Err(Error::Msg(format!(
                        "{}: a LoRA low-rank delta on a tensor that is no linear layer",
                        t.name
                    )));
                }
                out.tensor_deltas.entry(t.name.clone()).or_default().push(t);
                continue;
            }
            match (&t.delta, t.name.strip_suffix(".weight"), t.name.strip_suffix(".bias")) {
                (Delta::LowRank { .. }, Some(layer), _) => low_rank.entry(layer.to_string()).or_default().push(t),
                (Delta::Full { diff, factor }, Some(layer), _) if diff.shape().len() == 2 => {
                    let rows = diff.shape()[0];
                    let mut identity = vec![0f32; rows * rows];
                    identity.iter_mut().step_by(rows + 1).for_each(|v| *v = 1.0);
                    let delta = Delta::LowRank {
                        down: diff.clone(),
                        up: HostTensor::new([rows, rows], identity)?,
                        factor: *factor,
                    };
                    low_rank.entry(layer.to_string()).or_default().push(Target { name: t.name.clone(), delta });
                }
                (Delta::Full { diff, factor }, _, Some(layer)) => {
                    let b = out.bias_deltas.entry(layer.to_string()).or_insert_with(|| vec![0.0; diff.numel()]);
                    if b.len() != diff.numel() {
                        return Err(Error::Msg(format!("{}: bias deltas of different lengths", t.name)));
                    }
                    b.iter_mut().zip(diff.data()).for_each(|(b, d)| *b += factor * d);
                }
                _ => {
                    return Err(Error::Msg(format!(
                        "{}: a full-weight delta cannot run beside shared weights (per-request adapters take \
                         LoRA low-rank, bias, linear-weight and norm deltas only)",
                        t.name
                    )))
                }
            }
        }
        for (layer, ts) in low_rank {
            let refs: Vec<&Target> = ts.iter().collect();
            out.side_paths.insert(layer, side_path(&refs)?);
        }
        Ok(out)
    }

    /// Layer prefixes and tensor names the adapter changes.
    pub fn targets(&self) -> std::collections::BTreeSet<&str> {
        self.side_paths
            .keys()
            .chain(self.bias_deltas.keys())
            .chain(self.tensor_deltas.keys())
            .map(String::as_str)
            .collect()
    }

    /// The tensor `name` with this adapter's deltas added to `current` (its values as the model
    /// holds them, f32), summed as merging at load sums them; `current` as it is when the
    /// adapter has none. A delta of another size is an error naming the tensor.
    pub fn tensor(&self, name: &str, current: &HostTensor) -> Result<HostTensor> {
        let deltas: Vec<&Target> = self.tensor_deltas.get(name).into_iter().flatten().collect();
        deltas.iter().try_for_each(|t| check(t, current.shape()))?;
        let mut values = current.data().to_vec();
        add_deltas(name, &mut values, &deltas)?;
        HostTensor::new(current.shape(), values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(name: &str, shape: &[usize], factor: f32) -> Target {
        let n = shape.iter().product::<usize>();
        let diff = HostTensor::new(shape.to_vec(), (0..n).map(|i| i as f32 - 2.5).collect()).unwrap();
        Target { name: name.into(), delta: Delta::Full { diff, factor } }
    }

    /// A linear weight's full diff becomes the side path `(factor · I) · (diff · x)`, concatenated
    /// with a low-rank delta of the same layer; a 1-D weight diff on no named tensor is refused
    /// by name.
    #[test]
    fn linear_weight_diffs_become_identity_side_paths() {
        let low = Target {
            name: "l.weight".into(),
            delta: Delta::LowRank {
                down: HostTensor::new([1, 3], vec![1.0, 2.0, 3.0]).unwrap(),
                up: HostTensor::new([2, 1], vec![4.0, 5.0]).unwrap(),
                factor: 0.5,
            },
        };
        let a = Adapter::from_targets(vec![low, full("l.weight", &[2, 3], 2.0)], &|_| false).unwrap();
        let side = &a.side_paths["l"];
        assert_eq!(side.down.shape(), &[3, 3], "rank 1 + 2 rows of the diff");
        assert_eq!(&side.down.data()[3..], &[-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]);
        assert_eq!(side.up.data(), &[2.0, 2.0, 0.0, 2.5, 0.0, 2.0], "[0.5·4 | 2·I; 0.5·5 | …]");
        let err = Adapter::from_targets(vec![full("norm.weight", &[4], 1.0)], &|_| false).unwrap_err().to_string();
        assert!(err.contains("norm.weight") && err.contains("full-weight delta"), "{err}");
    }

    /// Deltas on a named tensor sum, in the order given, to the bits merging them into an f32
    /// store gives (and leave `current` as it is); a low-rank delta there, or a diff of another
    /// size, is refused by name.
    #[test]
    fn tensor_deltas_sum_as_merging_does() {
        let current = HostTensor::new([4], vec![1.0, -0.3, 0.7, 1e-3]).unwrap();
        let deltas = vec![full("n.weight", &[4], 0.3), full("n.weight", &[4], -1.7), full("n.bias", &[4], 0.9)];
        let a = Adapter::from_targets(deltas.clone(), &|n| n.starts_with("n.")).unwrap();
        assert!(a.side_paths.is_empty() && a.bias_deltas.is_empty(), "no side path for a norm");
        let mut ws = WeightStore::new("test");
        ws.insert("n.weight", RawTensor::from_f32(&current));
        ws.insert("n.bias", RawTensor::from_f32(&current));
        apply(&mut ws, deltas, MergeMode::Merge).unwrap();
        for name in ["n.weight", "n.bias"] {
            let got = a.tensor(name, &current).unwrap();
            let want = ws.raw(name).unwrap().to_f32().unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(got.data()), bits(&want), "{name}");
            assert_ne!(got.data(), current.data(), "{name}: the deltas change it");
        }
        assert_eq!(a.tensor("other", &current).unwrap().data(), current.data());
        assert_eq!(a.targets().into_iter().collect::<Vec<_>>(), ["n.bias", "n.weight"]);

        let low = Target {
            name: "n.weight".into(),
            delta: Delta::LowRank {
                down: HostTensor::new([1, 4], vec![1.0; 4]).unwrap(),
                up: HostTensor::new([1, 1], vec![1.0]).unwrap(),
                factor: 1.0,
            },
        };
        let err = Adapter::from_targets(vec![low], &|n| n == "n.weight").unwrap_err().to_string();
        assert!(err.contains("n.weight") && err.contains("no linear layer"), "{err}");
        let wrong = Adapter::from_targets(vec![full("n.weight", &[3], 1.0)], &|_| true).unwrap();
        let err = wrong.tensor("n.weight", &current).unwrap_err().to_string();
        assert!(err.contains("n.weight") && err.contains("[4]"), "{err}");
    }
}

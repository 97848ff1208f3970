//! LoRA files applied to an already loaded transformer without touching it: the copy
//! [`adapted`] returns shares every weight with the original (prepared weights are reference
//! counted) and runs the adapters as low-rank side paths (bias deltas as their bias). This is how
//! `wanrt serve` gives each request its own adapters while other requests run on the same model:
//! nothing shared is written, so concurrent requests cannot see each other's adapters.
//!
//! A full-weight `diff` of a linear layer runs as an exact side path (the diff, then the
//! identity: as costly as the layer). Full deltas of the small named tensors — norm weights and
//! biases (`norm3.diff`, `norm_q.diff`, `norm3.diff_b`) — give the copy its own version of just
//! those tensors: the original's values plus the deltas, summed in f32 as merging
//! at load sums them (the same bits where the checkpoint stores them in f32; from a bf16
//! checkpoint the merge rounds the sum to bf16, the copy keeps it in f32). Anything else is
//! refused in one line naming it; merge such files at load (`generate --lora`) or bake them
//! (`optimize --lora`).

use crate::lora::{targets_on, LoraSpec, LoraSummary, Unmatched};
use crate::transformer::WanTransformer;
use crate::{Error, Result};
use std::collections::{BTreeSet, HashSet};
use wanrt_nn::lora::Adapter;
use wanrt_nn::{Backend, Module, Param, ParamMut};

/// The parameter names the adapters can target as side paths: every linear part's `weight` and
/// `bias`.
fn linear_names(tr: &WanTransformer) -> HashSet<String> {
    let mut names = HashSet::new();
    tr.visit(&mut |p| {
        if let Param::Linear(l) = p {
            for (part, _) in &l.parts {
                names.insert(format!("{part}.weight"));
                if l.bias.is_some() {
                    names.insert(format!("{part}.bias"));
                }
            }
        }
    });
    names
}

/// The names of the tensors the adapters can replace. `visit_mut` is the walk that names them;
/// nothing is changed.
fn tensor_names(tr: &mut WanTransformer) -> HashSet<String> {
    let mut names = HashSet::new();
    tr.visit_mut(&mut |p| {
        if let ParamMut::Tensor { name, .. } = p {
            names.insert(name.to_string());
        }
    });
    names
}

/// `tr` with the LoRA files `specs` as side paths and tensors of its own (see the module docs),
/// and their summaries.
pub fn adapted(
    tr: &WanTransformer,
    specs: &[LoraSpec],
    unmatched: Unmatched,
) -> Result<(WanTransformer, Vec<LoraSummary>)> {
    let mut out = tr.clone();
    let (linears, tensors) = (linear_names(tr), tensor_names(&mut out));
    let mut targets = vec![];
    let mut summaries = vec![];
    for spec in specs {
        let (t, s) = targets_on(spec, &|n| linears.contains(n) || tensors.contains(n), unmatched)?;
        targets.extend(t);
        summaries.push(s);
    }
    if let Some(t) = targets.iter().find(|t| !linears.contains(&t.name) && !tensors.contains(&t.name)) {
        return Err(Error::Msg(format!("the LoRA targets `{}`, which the transformer does not have", t.name)));
    }
    let adapter = Adapter::from_targets(targets, &|n| tensors.contains(n))?;
    let backend = tr.backend().clone();
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut failed = None;
    out.visit_mut(&mut |p| {
        if failed.is_none() {
            if let Err(e) = adapt(p, &adapter, &*backend, &mut used) {
                failed = Some(e);
            }
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    if let Some(missing) = adapter.targets().into_iter().find(|l| !used.contains(*l)) {
        return Err(Error::Msg(format!(
            "the LoRA targets `{missing}`, which is neither a linear layer nor a norm of the transformer"
        )));
    }
    Ok((out, summaries))
}

/// Gives one parameter of the copy its adapter, recording the layers and tensors changed in
/// `used`. A replaced tensor is the copy's own: the original keeps the one it holds.
fn adapt(p: ParamMut<'_>, adapter: &Adapter, backend: &dyn Backend, used: &mut BTreeSet<String>) -> Result<()> {
    match p {
        ParamMut::Linear(l) => {
            let side = |n: &str| adapter.side_paths.get(n);
            let bias = |n: &str| adapter.bias_deltas.get(n).map(Vec::as_slice);
            if let Some(new) = l.with_adapter(side, bias, backend)? {
                used.extend(new.parts.iter().map(|p| p.0.clone()));
                *l = new;
            }
        }
        ParamMut::Tensor { name, tensor } if adapter.tensor_deltas.contains_key(name) => {
            // The one read of a weight: once per adapted copy and a few KB, so that the sum is
            // taken on the host, in f32, exactly as merging at load takes it.
            #[allow(clippy::disallowed_methods)]
            let current = backend.to_host(tensor)?;
            let values = adapter.tensor(name, &current)?;
            *tensor = backend.weight_tensor(values)?;
            used.insert(name.to_string());
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // reads the tensors it compares
mod tests {
    use super::*;
    use crate::model::WanModel;
    use std::collections::BTreeMap;
    use wanrt_nn::weights::{write_safetensors, RawTensor};
    use wanrt_nn::HostTensor;

    /// Every named tensor of `tr` as the host holds its values.
    fn tensor_values(tr: &mut WanTransformer) -> BTreeMap<String, Vec<f32>> {
        let be = tr.backend().clone();
        let mut out = BTreeMap::new();
        tr.visit_mut(&mut |p| {
            if let ParamMut::Tensor { name, tensor } = p {
                out.insert(name.to_string(), be.to_host(tensor).unwrap().into_data());
            }
        });
        out
    }

    /// Norm and modulation deltas in ComfyUI's original key names (RMSNorm gain of block 0's
    /// query, block 1's cross-attention LayerNorm weight and bias, block 2's and the head's
    /// modulation tables) change just those tensors of the copy, by `scale · diff` summed in f32;
    /// the original transformer keeps every tensor as it was.
    #[test]
    fn norm_and_modulation_deltas_change_the_copy_and_leave_the_original() {
        let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/demo");
        let mut tr = WanModel::load(&demo, |_| {}).unwrap().transformer;
        let before = tensor_values(&mut tr);
        let diff = |seed: f32, shape: &[usize]| {
            let n = shape.iter().product::<usize>();
            HostTensor::new(shape, (0..n).map(|i| (i as f32 * 0.37 + seed).sin() * 0.2).collect()).unwrap()
        };
        let deltas = [
            ("diffusion_model.blocks.0.self_attn.norm_q.diff", "blocks.0.attn1.norm_q.weight", diff(1.0, &[128])),
            ("diffusion_model.blocks.1.norm3.diff", "blocks.1.norm2.weight", diff(2.0, &[128])),
            ("diffusion_model.blocks.1.norm3.diff_b", "blocks.1.norm2.bias", diff(3.0, &[128])),
            ("diffusion_model.blocks.2.modulation.diff", "blocks.2.scale_shift_table", diff(4.0, &[1, 6, 128])),
            ("diffusion_model.head.modulation.diff", "scale_shift_table", diff(5.0, &[1, 2, 128])),
        ];
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("norms.safetensors");
        let raw: Vec<_> = deltas.iter().map(|(k, _, d)| (*k, RawTensor::from_f32(d))).collect();
        write_safetensors(&file, raw.iter().map(|(k, t)| (*k, t))).unwrap();
        let spec = LoraSpec { path: file, scale: 0.7 };

        let (mut copy, summaries) = adapted(&tr, std::slice::from_ref(&spec), Unmatched::Error).unwrap();
        assert_eq!((summaries[0].layers, summaries[0].diffs), (0, deltas.len()));
        assert_eq!(tensor_values(&mut tr), before, "the original transformer is untouched");
        let mut want = before.clone();
        for (_, name, d) in &deltas {
            let t = want.get_mut(*name).unwrap_or_else(|| panic!("{name} is a named tensor"));
            t.iter_mut().zip(d.data()).for_each(|(v, d)| *v += 0.7 * d);
            assert_ne!(t, &before[*name], "{name}: the delta changes it");
        }
        assert_eq!(tensor_values(&mut copy), want, "the copy: its own norms, every other tensor as shared");

        // Merged at load (`generate --lora`), the same keys land on the same tensors; the demo
        // stores them in bf16, so the merge is the copy's values to bf16's half an ulp (≤ 2⁻⁸ relative).
        let file = demo.join("transformer/diffusion_pytorch_model.safetensors");
        let mut ws = wanrt_nn::WeightStore::from_safetensors_files(&[file]).unwrap();
        crate::lora::apply(&mut ws, std::slice::from_ref(&spec), wanrt_nn::lora::MergeMode::Merge, Unmatched::Error)
            .unwrap();
        for (_, name, _) in &deltas {
            let merged = ws.raw(name).unwrap().to_f32().unwrap();
            let close = merged.iter().zip(&want[*name]).all(|(m, w)| (m - w).abs() <= w.abs() * 2f32.powi(-8));
            assert!(close && merged != before[*name], "{name}: merged at load");
        }
    }

    /// A modulation table is no layer: a low-rank pair or a `diff_b` on it is unmatched, named.
    #[test]
    fn a_modulation_table_takes_only_a_diff() {
        let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/demo");
        let tr = WanModel::load(&demo, |_| {}).unwrap().transformer;
        let tmp = tempfile::tempdir().unwrap();
        let t =
            |shape: &[usize]| RawTensor::from_f32(&HostTensor::new(shape, vec![0.1; shape.iter().product()]).unwrap());
        for (key, tensors) in [
            ("blocks.0.modulation.diff_b", vec![("diffusion_model.blocks.0.modulation.diff_b", t(&[128]))]),
            (
                "head.modulation.lora_down.weight",
                vec![
                    ("diffusion_model.head.modulation.lora_down.weight", t(&[2, 128])),
                    ("diffusion_model.head.modulation.lora_up.weight", t(&[256, 2])),
                ],
            ),
        ] {
            let file = tmp.path().join("m.safetensors");
            write_safetensors(&file, tensors.iter().map(|(k, t)| (*k, t))).unwrap();
            let err = adapted(&tr, &[LoraSpec { path: file, scale: 1.0 }], Unmatched::Error).err().unwrap().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    /// A delta on a tensor this transformer lacks (an image-conditioned model's `norm_k_img`)
    /// is refused naming it, whatever it is.
    #[test]
    fn a_norm_the_transformer_lacks_is_refused_by_name() {
        let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/demo");
        let tr = WanModel::load(&demo, |_| {}).unwrap().transformer;
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("img.safetensors");
        let d = RawTensor::from_f32(&HostTensor::new([128], vec![0.1; 128]).unwrap());
        write_safetensors(&file, [("diffusion_model.blocks.0.cross_attn.norm_k_img.diff", &d)]).unwrap();
        let err = adapted(&tr, &[LoraSpec { path: file, scale: 1.0 }], Unmatched::Error).err().unwrap().to_string();
        assert!(err.contains("`blocks.0.attn2.norm_added_k.weight`, which the transformer does not have"), "{err}");
    }
}

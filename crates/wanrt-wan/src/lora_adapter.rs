//! LoRA files applied to an already loaded transformer without touching it: the copy
//! [`adapted`] returns shares every weight with the original (prepared weights are reference
//! counted) and runs the adapters as low-rank side paths (bias deltas as their bias). This is how
//! `wanrt serve` gives each request its own adapters while other requests run on the same model:
//! nothing shared is written, so concurrent requests cannot see each other's adapters.
//!
//! A full-weight `diff` of a linear layer runs as an exact side path (the diff, then the
//! identity: as costly as the layer). Deltas that would have to change another shared tensor
//! (norm deltas) are refused in one line; merge such files at load (`generate --lora`) or bake
//! them (`optimize --lora`).

use crate::lora::{targets_on, LoraSpec, LoraSummary, Unmatched};
use crate::transformer::WanTransformer;
use crate::{Error, Result};
use std::collections::{BTreeSet, HashSet};
use wanrt_nn::lora::Adapter;
use wanrt_nn::{Module, Param, ParamMut};

/// The parameter names the adapters can target: every linear part's `weight` and `bias`.
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

/// `tr` with the LoRA files `specs` as side paths (see the module docs), and their summaries.
pub fn adapted(
    tr: &WanTransformer,
    specs: &[LoraSpec],
    unmatched: Unmatched,
) -> Result<(WanTransformer, Vec<LoraSummary>)> {
    let names = linear_names(tr);
    let mut targets = vec![];
    let mut summaries = vec![];
    for spec in specs {
        let (t, s) = targets_on(spec, &|n| names.contains(n), unmatched)?;
        targets.extend(t);
        summaries.push(s);
    }
    let adapter = Adapter::from_targets(targets)?;
    let mut out = tr.clone();
    let backend = tr.backend().clone();
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut failed = None;
    out.visit_mut(&mut |p| {
        let ParamMut::Linear(l) = p else { return };
        if failed.is_some() {
            return;
        }
        let side = |n: &str| adapter.side_paths.get(n);
        let bias = |n: &str| adapter.bias_deltas.get(n).map(Vec::as_slice);
        match l.with_adapter(side, bias, &*backend) {
            Ok(Some(new)) => {
                used.extend(new.parts.iter().map(|p| p.0.clone()));
                *l = new;
            }
            Ok(None) => {}
            Err(e) => failed = Some(e),
        }
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    if let Some(missing) = adapter.layers().into_iter().find(|l| !used.contains(*l)) {
        return Err(Error::Msg(format!(
            "the LoRA targets `{missing}`, which is not a linear layer of the transformer"
        )));
    }
    Ok((out, summaries))
}

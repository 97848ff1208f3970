//! The rungs of the ladder: which artifact each one runs (the `optimize` flags that build it)
//! and how it generates. Quality is measured against the baseline, so it always runs first.

use crate::engine::BackendKind;
use anyhow::{bail, Result};

/// One rung: a model (the source, or an artifact `optimize` builds) and generation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Rung {
    /// Short name: the `--rungs` item, the folder of its videos, the review variant.
    pub name: String,
    /// What it is, for the report.
    pub label: String,
    /// `wanrt optimize` flags of its artifact; `None` runs the source model.
    pub optimize: Option<Vec<String>>,
    /// Step cache threshold of its generations (`generate --cache-threshold`).
    pub cache_threshold: Option<f64>,
    /// Transformer passes replayed from CUDA graphs (`generate`/`bench --cuda-graph`).
    pub cuda_graph: bool,
}

/// Rungs by name, in ladder order. The `+` rungs stack on the one before, as in the case study
/// (INT8, then pruning on top).
const CATALOG: &[(&str, &str, &[&str], bool)] = &[
    ("baseline", "baseline", &[], false),
    ("int8-weight", "int8-weight (W8A16)", &["--quant", "int8-weight"], false),
    ("int8", "int8 (W8A8)", &["--quant", "int8"], false),
    ("int8-attn8", "+ 8-bit attention", &["--quant", "int8", "--attn-quant", "int8"], false),
    (
        "int8-attn8-prune20",
        "+ FFN pruning 20 %",
        &["--quant", "int8", "--attn-quant", "int8", "--prune-ffn", "0.2"],
        false,
    ),
    ("fp8", "fp8 (E4M3 W+A)", &["--quant", "fp8"], false),
    ("step-cache", "step cache", &[], true),
    ("graph", "CUDA graph (whole-step replay)", &[], false),
    (
        "all",
        "int8 + 8-bit attention + pruning 20 % + step cache",
        &["--quant", "int8", "--attn-quant", "int8", "--prune-ffn", "0.2"],
        true,
    ),
];

/// Rungs that need levers of the GPU issue not built yet (concurrent streams).
const GPU_LEVERS: &[&str] = &["streams"];

/// Rungs that replay CUDA graphs (CUDA backend only).
const GRAPH_RUNGS: &[&str] = &["graph"];

/// The rungs run without `--rungs`.
pub const DEFAULT_RUNGS: &[&str] =
    &["baseline", "int8-weight", "int8", "int8-attn8", "int8-attn8-prune20", "fp8", "step-cache"];

/// Rung names accepted by `--rungs`.
pub fn known() -> Vec<&'static str> {
    CATALOG.iter().map(|c| c.0).collect()
}

/// The rungs to run: `list` (default [`DEFAULT_RUNGS`]) in the given order with `baseline`
/// first (added when missing: every quality figure is relative to it).
pub fn plan(list: Option<&[String]>, backend: BackendKind, cache_threshold: f64) -> Result<Vec<Rung>> {
    let names: Vec<String> = match list {
        Some(l) => l.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        None => DEFAULT_RUNGS.iter().map(|s| s.to_string()).collect(),
    };
    if names.is_empty() {
        bail!("--rungs: no rung named (known: {})", known().join(", "));
    }
    let baseline_label = match backend {
        BackendKind::Cpu => "baseline (f32)",
        BackendKind::Cuda => "baseline (bf16)",
    };
    let mut rungs: Vec<Rung> = Vec::new();
    for name in std::iter::once("baseline").chain(names.iter().map(String::as_str)) {
        if GPU_LEVERS.contains(&name) {
            bail!(
                "--rungs: `{name}` needs concurrent CUDA streams in generation, which wanrt does not have yet; known \
                 rungs: {}",
                known().join(", ")
            );
        }
        let Some(&(_, label, flags, cached)) = CATALOG.iter().find(|c| c.0 == name) else {
            bail!("--rungs: unknown rung `{name}` (known: {})", known().join(", "));
        };
        let cuda_graph = GRAPH_RUNGS.contains(&name);
        if cuda_graph && backend != BackendKind::Cuda {
            bail!("--rungs: `{name}` replays CUDA graphs: it needs --backend cuda");
        }
        if rungs.iter().any(|r| r.name == name) {
            if name == "baseline" && rungs.len() == 1 && names.first().map(String::as_str) == Some("baseline") {
                continue; // named first by the user: it is the one already planned
            }
            bail!("--rungs: `{name}` is named twice");
        }
        rungs.push(Rung {
            name: name.to_string(),
            label: if name == "baseline" { baseline_label.to_string() } else { label.to_string() },
            optimize: (!flags.is_empty()).then(|| flags.iter().map(|s| s.to_string()).collect()),
            cache_threshold: cached.then_some(cache_threshold),
            cuda_graph,
        });
    }
    Ok(rungs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(r: &[Rung]) -> Vec<&str> {
        r.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn default_ladder_starts_at_the_baseline_and_stacks_the_levers() {
        let r = plan(None, BackendKind::Cpu, 0.1).unwrap();
        assert_eq!(names(&r), DEFAULT_RUNGS);
        assert_eq!(r[0].label, "baseline (f32)");
        assert!(r[0].optimize.is_none() && r[0].cache_threshold.is_none());
        let pruned = r.iter().find(|r| r.name == "int8-attn8-prune20").unwrap();
        assert_eq!(pruned.optimize.as_ref().unwrap().join(" "), "--quant int8 --attn-quant int8 --prune-ffn 0.2");
        let cache = r.iter().find(|r| r.name == "step-cache").unwrap();
        assert_eq!((cache.optimize.is_none(), cache.cache_threshold), (true, Some(0.1)));
        assert_eq!(plan(None, BackendKind::Cuda, 0.1).unwrap()[0].label, "baseline (bf16)");
    }

    #[test]
    fn a_chosen_list_gets_the_baseline_first_once() {
        let list = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
        assert_eq!(names(&plan(Some(&list("fp8, int8")), BackendKind::Cpu, 0.1).unwrap()), ["baseline", "fp8", "int8"]);
        assert_eq!(names(&plan(Some(&list("baseline,all")), BackendKind::Cpu, 0.2).unwrap()), ["baseline", "all"]);
        let all = plan(Some(&list("all")), BackendKind::Cpu, 0.2).unwrap();
        assert_eq!(all[1].cache_threshold, Some(0.2));
    }

    #[test]
    fn bad_lists_are_refused_by_name() {
        let list = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
        let err = |s: &str| plan(Some(&list(s)), BackendKind::Cpu, 0.1).unwrap_err().to_string();
        assert!(err("int4").contains("unknown rung `int4`"), "{}", err("int4"));
        assert!(err("int8,int8").contains("named twice"));
        assert!(err("int8,baseline").contains("`baseline` is named twice"));
        assert!(err("streams").contains("does not have yet"));
        assert!(err("graph").contains("needs --backend cuda"), "{}", err("graph"));
        let cuda = plan(Some(&list("graph")), BackendKind::Cuda, 0.1).unwrap();
        assert_eq!((names(&cuda), cuda[1].cuda_graph, cuda[0].cuda_graph), (vec!["baseline", "graph"], true, false));
        assert!(err(" , ").contains("no rung named"));
    }
}

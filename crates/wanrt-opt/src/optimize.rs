//! `optimize()`: source model folder → optimized artifact folder.
//!
//! Order: calibrate the unmodified model; prune (ranking by calibration
//! statistics) and rebuild the transformer; quantize every eligible layer;
//! optionally measure each layer's sensitivity and, under `max_error`, keep
//! the most sensitive layers in full precision until the transformer's
//! output error on the calibration inputs is within bounds; write the artifact.

use crate::artifact;
use crate::calibrate::{calibrate, CalibSample, CalibSettings};
use crate::plan::{OptimizeOptions, QuantMode};
use crate::prune;
use crate::quantize::{build_linear, f32_raw, quantize_layer, QuantizedLayer};
use crate::sensitivity::{error_with, outputs, relative_error, swap_layers};
use crate::text_encoder::quantize_text_encoder;
use crate::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use wanrt_nn::backend::AttentionPrecision;
use wanrt_nn::lora::MergeMode;
use wanrt_nn::probe::ProbeStats;
use wanrt_nn::weights::RawTensor;
use wanrt_nn::{Linear, Module, Param, ParamMut, WeightStore};
use wanrt_wan::artifact::{ExpertManifest, LayerEntry, LayerFormat, Manifest, Pruning, FORMAT, VERSION};
use wanrt_wan::lora::LoraSummary;
use wanrt_wan::model::{Layout, LoadOptions, WanModel};
use wanrt_wan::transformer::WanTransformer;

/// Progress of a long optimization.
pub trait OptimizeProgress {
    fn stage(&mut self, _name: &str) {}
    fn progress(&mut self, _done: usize, _total: usize) {}
}

impl OptimizeProgress for () {}

/// The manifest's record of each baked LoRA: file name (not its folder: the artifact may move),
/// size, SHA-256, scale, rank, alpha and what it changed.
fn lora_records(summaries: &[LoraSummary]) -> Result<Vec<serde_json::Value>> {
    summaries
        .iter()
        .map(|l| {
            let bytes = std::fs::metadata(&l.path)
                .map_err(|e| Error::Msg(format!("{}: cannot stat: {e}", l.path.display())))?
                .len();
            Ok(serde_json::json!({
                "file": l.path.file_name().map(|n| n.to_string_lossy().into_owned()),
                "bytes": bytes,
                "sha256": artifact::files_sha256(std::slice::from_ref(&l.path))?,
                "format": l.format,
                "scale": l.scale,
                "layers": l.layers,
                "rank": [l.rank.0, l.rank.1],
                "alpha": [l.alpha.0, l.alpha.1],
                "diffs": l.diffs,
                "skipped_keys": l.skipped,
            }))
        })
        .collect()
}

/// Name used in the manifest and reports for the 8-bit self-attention group.
pub const INT8_ATTENTION: &str = "self-attention (int8 scores)";

#[derive(Debug, Clone, Serialize)]
pub struct OptimizeSummary {
    pub manifest: Manifest,
    /// Relative output error of the transformer on the calibration inputs vs the source model.
    pub transformer_error: f64,
    /// Two-expert models: the same for `transformer_2` on its calibration inputs.
    pub transformer_2_error: Option<f64>,
    /// The same, of the pruned model before quantization (0 when not pruned).
    pub pruning_error: f64,
    /// Per layer (or group) sensitivity when measured: (name, relative error).
    pub sensitivity: Vec<(String, f64)>,
    pub params_before: usize,
    pub params_after: usize,
    pub weight_bytes_before: usize,
    pub weight_bytes_after: usize,
    pub calibration_s: f64,
    pub total_s: f64,
    /// Present when the text encoder was quantized.
    pub text_encoder: Option<TextEncoderSummary>,
    /// One line per baked LoRA (`LoRA FILE (format): layers, rank, alpha, scale`).
    pub loras: Vec<String>,
    /// The same for the LoRAs baked into `transformer_2`.
    pub loras_2: Vec<String>,
    /// One line per LoRA whose unmatched keys were skipped (`--lora-unmatched warn`).
    pub lora_warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TextEncoderSummary {
    /// Relative L2 error of the prompt embeddings on the calibration prompts.
    pub embedding_error: f64,
    pub weight_bytes_before: usize,
    pub weight_bytes_after: usize,
}

struct Candidate {
    name: String,
    parts: Vec<(String, usize)>,
    quantized: QuantizedLayer,
    linear: Linear,
    sensitivity: Option<f64>,
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::Msg(format!("{}: cannot read: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::Msg(format!("{}: invalid JSON: {e}", path.display())))
}

pub fn optimize(
    src: &Path,
    out: &Path,
    opts: &OptimizeOptions,
    calib: &CalibSettings,
    progress: &mut dyn OptimizeProgress,
) -> Result<OptimizeSummary> {
    let t_start = Instant::now();
    opts.validate().map_err(Error::Msg)?;
    check_output(src, out)?;
    if Layout::detect(src)? == Layout::Original {
        // The artifact is a diffusers-layout folder: convert the release first, into a staging
        // folder beside the output (same filesystem; removed whatever happens).
        progress.stage("converting the original release layout");
        let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let staging = tempfile::Builder::new()
            .prefix(".wanrt-converted-source-")
            .tempdir_in(parent)
            .map_err(|e| Error::Msg(format!("{}: cannot create a staging folder: {e}", parent.display())))?;
        let converted = staging.path().join("model");
        wanrt_wan::convert::original_to_diffusers(src, &converted, |_| {})?;
        return optimize_diffusers(&converted, src, out, opts, calib, progress, t_start);
    }
    optimize_diffusers(src, src, out, opts, calib, progress, t_start)
}

/// Checks the artifact folder before any work: it must not exist or be empty, its parent must
/// take new files, and it must not lie inside the source model (whose folders are copied into
/// it: the copy would copy itself).
pub fn check_output(src: &Path, out: &Path) -> Result<()> {
    if wanrt_io::is_inside(out, src) {
        return Err(Error::Msg(format!(
            "-o {}: the artifact folder is inside the source model {} (it would copy itself); choose a folder outside it",
            out.display(),
            src.display()
        )));
    }
    wanrt_io::check_output_dir(out).map_err(|e| Error::Msg(e.to_string()))
}

/// [`optimize`] of a diffusers-layout folder `src`; `origin` is the folder the user named (the
/// original release folder when `src` is its conversion).
fn optimize_diffusers(
    src: &Path,
    origin: &Path,
    out: &Path,
    opts: &OptimizeOptions,
    calib: &CalibSettings,
    progress: &mut dyn OptimizeProgress,
    t_start: Instant,
) -> Result<OptimizeSummary> {
    progress.stage("loading");
    // LoRAs merged into the float weights before anything is measured: calibration, pruning and
    // quantization all see the adapted model, so the artifact's codes include the adapters.
    let load = LoadOptions {
        loras: opts.loras.clone(),
        loras_2: opts.loras_2.clone(),
        lora_unmatched: opts.lora_unmatched,
        ..Default::default()
    };
    let mut model = WanModel::load_with(src, load, |_| {})?;
    if model.artifact.is_some() {
        return Err(Error::Msg(format!(
            "{}: is already an optimized artifact; optimize its source model",
            src.display()
        )));
    }
    let loras = lora_records(&model.loras)?;
    let loras_2 = lora_records(&model.loras_2)?;

    progress.stage("calibration");
    let t_cal = Instant::now();
    let cal = calibrate(&mut model, calib, &mut |d, t| progress.progress(d, t))?;
    let calibration_s = t_cal.elapsed().as_secs_f64();
    let first =
        optimize_transformer(src, "transformer", &mut model.transformer, &cal.stats, &cal.samples, opts, progress)?;
    let second = match model.transformer_2.as_mut() {
        Some(t2) => {
            progress.stage("transformer_2");
            Some(optimize_transformer(src, "transformer_2", t2, &cal.stats_2, &cal.samples_2, opts, progress)?)
        }
        None => None,
    };

    let text_encoder = if opts.text_encoder_int8 {
        progress.stage("text encoder");
        let prompts: Vec<String> = calib.prompts.iter().map(|p| p.prompt.clone()).collect();
        Some(quantize_text_encoder(src, &model, &prompts)?)
    } else {
        None
    };

    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        source: serde_json::json!({
            "folder": origin.file_name().map(|n| n.to_string_lossy().into_owned()),
            "layout": if origin == src { "diffusers" } else { "original (converted)" },
            "transformer_sha256": artifact::weights_sha256(&src.join("transformer"))?,
            "transformer_2_sha256": match &second {
                Some(_) => Some(artifact::weights_sha256(&src.join("transformer_2"))?),
                None => None,
            },
            "text_encoder_sha256": match &text_encoder {
                Some(_) => Some(artifact::weights_sha256(&src.join("text_encoder"))?),
                None => None,
            },
        }),
        settings: serde_json::json!({
            "quant": opts.quant.to_string(),
            "activation": format!("{:?}", opts.activation).to_lowercase(),
            "smooth_alpha": opts.smooth_alpha,
            "attn_quant": opts.attn_quant,
            "prune_ffn": opts.prune_ffn,
            "prune_heads": opts.prune_heads,
            "keep_precision": opts.keep_precision,
            "max_error": opts.max_error,
            "text_encoder": if opts.text_encoder_int8 { "int8-weight" } else { "none" },
            "reverted_to_full_precision": first.reverted,
            "transformer_2_reverted_to_full_precision": second.as_ref().map(|o| &o.reverted),
            "loras": loras,
            "loras_2": loras_2,
        }),
        layers: first.section.layers.clone(),
        pruning: first.section.pruning.clone(),
        int8_attention_blocks: first.section.int8_attention_blocks.clone(),
        fusion: fusion_plan(opts.quant),
        calibration: cal.summary.clone(),
        text_encoder_layers: text_encoder.as_ref().map(|t| t.layers.clone()).unwrap_or_default(),
        transformer_2: second.as_ref().map(|o| o.section.clone()),
    };
    let transformers: Vec<(&str, &BTreeMap<String, RawTensor>, &serde_json::Value)> = std::iter::once(&first)
        .chain(&second)
        .zip(["transformer", "transformer_2"])
        .map(|(o, name)| (name, &o.tensors, &o.config_json))
        .collect();
    artifact::write(src, out, &transformers, text_encoder.as_ref().map(|t| &t.tensors), &manifest)?;
    Ok(OptimizeSummary {
        manifest,
        transformer_error: first.transformer_error,
        transformer_2_error: second.as_ref().map(|o| o.transformer_error),
        pruning_error: first.pruning_error,
        sensitivity: first.sensitivity,
        params_before: first.params_before + second.as_ref().map_or(0, |o| o.params_before),
        params_after: first.params_after + second.as_ref().map_or(0, |o| o.params_after),
        weight_bytes_before: first.weight_bytes_before + second.as_ref().map_or(0, |o| o.weight_bytes_before),
        weight_bytes_after: first.weight_bytes_after + second.as_ref().map_or(0, |o| o.weight_bytes_after),
        calibration_s,
        total_s: t_start.elapsed().as_secs_f64(),
        loras: model.loras.iter().map(|l| l.to_string()).collect(),
        loras_2: model.loras_2.iter().map(|l| l.to_string()).collect(),
        lora_warnings: model.loras.iter().chain(&model.loras_2).filter_map(|l| l.warning()).collect(),
        text_encoder: text_encoder.map(|t| TextEncoderSummary {
            embedding_error: t.embedding_error,
            weight_bytes_before: t.weight_bytes_before,
            weight_bytes_after: t.weight_bytes_after,
        }),
    })
}

/// One transformer of the model optimized on its calibration: the artifact's tensors and config,
/// the manifest's section and the measured errors.
struct Optimized {
    tensors: BTreeMap<String, RawTensor>,
    config_json: serde_json::Value,
    section: ExpertManifest,
    reverted: Vec<String>,
    transformer_error: f64,
    pruning_error: f64,
    sensitivity: Vec<(String, f64)>,
    params_before: usize,
    params_after: usize,
    weight_bytes_before: usize,
    weight_bytes_after: usize,
}

/// Prunes and quantizes `tr` (loaded from `src/<component>`, LoRAs merged into the first
/// transformer) on its calibration `stats` and `samples`.
fn optimize_transformer(
    src: &Path,
    component: &str,
    tr: &mut WanTransformer,
    stats_in: &BTreeMap<String, ProbeStats>,
    samples: &[CalibSample],
    opts: &OptimizeOptions,
    progress: &mut dyn OptimizeProgress,
) -> Result<Optimized> {
    if samples.is_empty() {
        return Err(Error::Msg(format!(
            "calibration reached no step of {component} (a second expert runs below the boundary timestep): \
             give more --calib-steps"
        )));
    }
    let tr_dir = src.join(component);
    let mut src_ws = WeightStore::from_diffusers_dir(&tr_dir, "diffusion_pytorch_model")?;
    // The tensors the artifact is written from get the same merge (in place, per tensor).
    let loras = if component == "transformer" { &opts.loras } else { &opts.loras_2 };
    wanrt_wan::lora::apply(&mut src_ws, loras, MergeMode::Merge, opts.lora_unmatched)?;
    let mut config_json = read_json(&tr_dir.join("config.json"))?;
    let params_before = tr.num_params();
    let weight_bytes_before = tr.weight_bytes();
    progress.stage("reference outputs");
    let reference = outputs(tr, samples)?;

    // Structured pruning on the f32 tensors, then a rebuilt transformer.
    let mut store = src_ws.clone();
    let mut stats = stats_in.clone();
    let plan = prune::plan(&src_ws, &tr.config, stats_in, opts.prune_ffn, opts.prune_heads)?;
    let mut pruning_error = 0.0;
    // Outputs of the full-precision (pruned) model: the baseline of every per-layer sensitivity.
    let mut base = None;
    if plan.ffn_kept.is_some() || plan.heads_kept.is_some() {
        progress.stage("pruning");
        let (replaced, cfg) = prune::apply(&src_ws, &tr.config, &plan)?;
        for (name, t) in &replaced {
            store.insert(name.clone(), f32_raw(t.shape().to_vec(), t.data())?);
        }
        stats = prune::pruned_stats(stats_in, &tr.config, &plan);
        config_json["ffn_dim"] = cfg.ffn_dim.into();
        if let Some(h) = &cfg.self_attn_heads {
            config_json["self_attn_heads"] = serde_json::json!(h);
        }
        let backend = tr.backend().clone();
        *tr = WanTransformer::load(&store, cfg, backend)?;
        let pruned = outputs(tr, samples)?;
        pruning_error = relative_error(&pruned, &reference);
        base = Some(pruned);
    }

    // Quantized candidates for every eligible layer.
    progress.stage("quantization");
    let format = opts.quant.layer_format();
    let mut candidates = Vec::new();
    let mut kept_f32 = Vec::new();
    let backend = tr.backend().clone();
    for l in block_linears(tr) {
        let part_names: Vec<String> = l.parts.iter().map(|p| p.0.clone()).collect();
        if opts.quant == QuantMode::None || opts.keeps_precision(&l.name, &part_names) {
            kept_f32.push((l.name.clone(), part_names));
            continue;
        }
        let s = stats.get(&l.name).ok_or_else(|| Error::Msg(format!("no calibration statistics for {}", l.name)))?;
        let q = quantize_layer(&l.to_f32()?, &l.parts, format, opts.activation, opts.smooth_alpha, s)?;
        let linear = build_linear(&q, &l.name, &l.parts, l.bias.as_deref(), &*backend)?;
        candidates.push(Candidate { name: l.name, parts: l.parts, quantized: q, linear, sensitivity: None });
    }
    let attn_blocks: Vec<usize> = if opts.attn_quant {
        (0..tr.config.num_layers)
            .filter(|i| !opts.keeps_precision(&format!("blocks.{i}.attn1"), &[format!("blocks.{i}.attn1.attention")]))
            .collect()
    } else {
        Vec::new()
    };

    // Sensitivity: each layer alone, against the (pruned) full-precision model.
    let mut sensitivity = Vec::new();
    if opts.sensitivity || opts.max_error.is_some() {
        progress.stage("sensitivity");
        let base = base.as_deref().unwrap_or(&reference);
        let total = candidates.len() + usize::from(!attn_blocks.is_empty());
        for (i, c) in candidates.iter_mut().enumerate() {
            let e = error_with(tr, vec![(c.name.clone(), c.linear.clone())], samples, base)?;
            c.sensitivity = Some(e);
            sensitivity.push((c.name.clone(), e));
            progress.progress(i + 1, total);
        }
        if !attn_blocks.is_empty() {
            set_int8_attention(tr, &attn_blocks);
            let e = relative_error(&outputs(tr, samples)?, base);
            set_int8_attention(tr, &[]);
            sensitivity.push((INT8_ATTENTION.to_string(), e));
        }
    }

    // Everything quantized, then (under max_error) the most sensitive reverted first.
    let mut originals: BTreeMap<String, Linear> =
        swap_layers(tr, candidates.iter().map(|c| (c.name.clone(), c.linear.clone())).collect()).into_iter().collect();
    let mut attention_on = !attn_blocks.is_empty();
    set_int8_attention(tr, if attention_on { &attn_blocks } else { &[] });
    let mut transformer_error = relative_error(&outputs(tr, samples)?, &reference);
    let mut reverted: Vec<String> = Vec::new();
    if let Some(max) = opts.max_error {
        progress.stage("selecting layers under --max-error");
        let mut order: Vec<(String, f64)> = sensitivity.clone();
        order.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (name, _) in order {
            if transformer_error <= max {
                break;
            }
            if name == INT8_ATTENTION {
                attention_on = false;
                set_int8_attention(tr, &[]);
            } else if let Some(orig) = originals.remove(&name) {
                swap_layers(tr, vec![(name.clone(), orig)]);
            }
            reverted.push(name);
            transformer_error = relative_error(&outputs(tr, samples)?, &reference);
        }
    }

    // The artifact's tensors: source (pruned) tensors, quantized layers replaced.
    progress.stage("writing artifact");
    let mut tensors: BTreeMap<String, RawTensor> =
        store.names().map(|n| Ok((n.to_string(), store.raw(n)?.clone()))).collect::<Result<_>>()?;
    let mut layers = Vec::new();
    for c in &candidates {
        let parts: Vec<String> = c.parts.iter().map(|p| p.0.clone()).collect();
        let quantized = !reverted.contains(&c.name);
        if quantized {
            for p in &parts {
                tensors.remove(&format!("{p}.weight"));
            }
            tensors.extend(c.quantized.tensors.iter().cloned());
        }
        layers.push(LayerEntry {
            name: c.name.clone(),
            parts,
            format: if quantized { c.quantized.format } else { LayerFormat::F32 },
            activation: if quantized { c.quantized.activation } else { None },
            smooth: quantized && c.quantized.smooth,
            sensitivity: c.sensitivity,
        });
    }
    for (name, parts) in kept_f32 {
        layers.push(LayerEntry {
            name,
            parts,
            format: LayerFormat::F32,
            activation: None,
            smooth: false,
            sensitivity: None,
        });
    }
    layers.sort_by_key(|a| natural_key(&a.name));
    let int8_attention_blocks = if attention_on { attn_blocks.clone() } else { Vec::new() };
    let pruning = Pruning {
        ffn_kept: plan.ffn_kept.clone(),
        heads_kept: plan.heads_kept.clone(),
        score: if plan.ffn_kept.is_some() || plan.heads_kept.is_some() {
            prune::SCORE_DOC.into()
        } else {
            String::new()
        },
    };
    Ok(Optimized {
        tensors,
        config_json,
        section: ExpertManifest { layers, pruning, int8_attention_blocks },
        reverted,
        transformer_error,
        pruning_error,
        sensitivity,
        params_before,
        params_after: tr.num_params(),
        weight_bytes_before,
        weight_bytes_after: tr.weight_bytes(),
    })
}

/// Copies of the transformer blocks' linear layers (the layers quantization acts on), in order.
fn block_linears(tr: &WanTransformer) -> Vec<Linear> {
    let mut out = Vec::new();
    tr.visit(&mut |p| {
        if let Param::Linear(l) = p {
            if l.name.starts_with("blocks.") {
                out.push(l.clone());
            }
        }
    });
    out
}

/// Runs the self-attention of the listed blocks in 8 bits, the others in full precision.
pub fn set_int8_attention(tr: &mut WanTransformer, blocks: &[usize]) {
    tr.visit_mut(&mut |p| {
        if let ParamMut::Attention { path, precision } = p {
            let int8 = blocks.iter().any(|i| path == format!("blocks.{i}.attn1"));
            *precision = if int8 { AttentionPrecision::Int8 } else { AttentionPrecision::Full };
        }
    });
}

/// `blocks.10.x` after `blocks.9.x`.
fn natural_key(name: &str) -> Vec<(String, u64)> {
    name.split('.').map(|p| p.parse::<u64>().map_or((p.to_string(), 0), |n| (String::new(), n))).collect()
}

/// The fused kernels the engine runs for every Wan transformer block (the
/// CPU backend executes each as one pass over memory).
fn fusion_plan(quant: QuantMode) -> Vec<serde_json::Value> {
    let q = match quant {
        QuantMode::Int8 => "activation quantization (+ SmoothQuant 1/s) fused into the int8 GEMM's packing pass",
        QuantMode::Fp8 => "E4M3 activation rounding fused into the GEMM input pass",
        QuantMode::Int8Weight => "int8 → f32 weight dequantization fused into the GEMM panel packing",
        QuantMode::None => "",
    };
    let mut v = vec![
        serde_json::json!({"op": "qkv_projection", "layers": "attn1.to_q + to_k + to_v", "as": "one GEMM"}),
        serde_json::json!({"op": "cross_attention_kv", "layers": "attn2.to_k + to_v", "as": "one GEMM, once per prompt (text K/V reused across steps)"}),
        serde_json::json!({"op": "norm_modulation", "layers": "norm1/norm3 LayerNorm + scale/shift", "as": "one pass (layer_norm_modulate)"}),
        serde_json::json!({"op": "gated_residual", "layers": "x + gate · f(x)", "as": "one pass (add_gated)"}),
        serde_json::json!({"op": "bias_epilogue", "layers": "quantized and half-precision linears", "as": "bias added in the GEMM output pass"}),
    ];
    if !q.is_empty() {
        v.push(serde_json::json!({"op": "quantization", "as": q}));
    }
    if quant == QuantMode::Int8 {
        v.push(serde_json::json!({"op": "ffn_gelu", "layers": "ffn.net.0.proj + GELU", "as": "GELU applied in the W8A8 GEMM's output pass"}));
    }
    v
}

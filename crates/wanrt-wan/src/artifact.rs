//! `wanrt-artifact.json`: the manifest of a model folder written by
//! `wanrt optimize` — a diffusers-layout folder whose transformer holds
//! quantized and/or pruned tensors. The manifest says what each layer is, so
//! loading can check the tensors against it before trusting them.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use wanrt_nn::backend::AttentionPrecision;
use wanrt_nn::quant::ActQuant;
use wanrt_nn::{DType, WeightStore};

pub const MANIFEST_FILE: &str = "wanrt-artifact.json";
pub const FORMAT: &str = "wanrt-artifact";
pub const VERSION: u32 = 1;

/// How a layer's activations are quantized at run time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    PerToken,
    PerTensor,
    Static(f32),
}

impl Activation {
    pub fn to_act_quant(self) -> ActQuant {
        match self {
            Activation::PerToken => ActQuant::PerToken,
            Activation::PerTensor => ActQuant::PerTensor,
            Activation::Static(s) => ActQuant::Static(s),
        }
    }
}

/// Storage of one layer in the artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerFormat {
    /// As in the source model (full precision).
    F32,
    /// Int8 codes, f32 compute (W8A16).
    Int8Weight,
    /// Int8 weights and activations (W8A8).
    Int8,
    /// FP8 E4M3 weights and activations.
    Fp8,
}

impl LayerFormat {
    fn weight_dtype(self) -> Option<DType> {
        match self {
            LayerFormat::F32 => None,
            LayerFormat::Int8Weight | LayerFormat::Int8 => Some(DType::I8),
            LayerFormat::Fp8 => Some(DType::F8E4M3),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerEntry {
    /// Layer name (`blocks.3.attn1.to_qkv` for a fused projection).
    pub name: String,
    /// Checkpoint tensor prefixes of the layer, in fused order.
    pub parts: Vec<String>,
    pub format: LayerFormat,
    /// Activation quantization (W8A8 / FP8 layers only).
    #[serde(default)]
    pub activation: Option<Activation>,
    /// Whether SmoothQuant factors (`{part}.smooth`) are stored.
    #[serde(default)]
    pub smooth: bool,
    /// Relative output error of the transformer when only this layer is
    /// quantized, measured on the calibration inputs (when analysed).
    #[serde(default)]
    pub sensitivity: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pruning {
    /// FFN hidden channels kept per block (indices into the source model's channels).
    #[serde(default)]
    pub ffn_kept: Option<Vec<Vec<usize>>>,
    /// Self-attention heads kept per block (indices into the source model's heads).
    #[serde(default)]
    pub heads_kept: Option<Vec<Vec<usize>>>,
    /// The importance score used to rank channels and heads.
    #[serde(default)]
    pub score: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// Folder name and SHA-256 of the source transformer weights.
    pub source: serde_json::Value,
    /// Requested settings (`--quant`, `--attn-quant`, …), for the record.
    pub settings: serde_json::Value,
    pub layers: Vec<LayerEntry>,
    #[serde(default)]
    pub pruning: Pruning,
    /// Transformer blocks whose self-attention runs in 8 bits.
    #[serde(default)]
    pub int8_attention_blocks: Vec<usize>,
    /// Which ops the engine runs fused for this model (one line each).
    #[serde(default)]
    pub fusion: Vec<serde_json::Value>,
    /// Summary of the calibration run.
    #[serde(default)]
    pub calibration: serde_json::Value,
    /// Quantized linear layers of the text encoder (empty: stored as in the source model).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub text_encoder_layers: Vec<LayerEntry>,
    /// A two-expert model's second transformer (Wan2.2 A14B's low-noise expert), optimized on its
    /// own calibration; absent: stored as in the source model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformer_2: Option<ExpertManifest>,
}

/// The layers, pruning and 8-bit attention blocks of one more transformer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExpertManifest {
    pub layers: Vec<LayerEntry>,
    #[serde(default)]
    pub pruning: Pruning,
    #[serde(default)]
    pub int8_attention_blocks: Vec<usize>,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, format!("cannot read: {e}")))?;
        let m: Manifest =
            serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("invalid artifact manifest: {e}")))?;
        if m.format != FORMAT || m.version != VERSION {
            return Err(Error::file(
                &path,
                format!("unsupported artifact format {} v{} (expected {FORMAT} v{VERSION})", m.format, m.version),
            ));
        }
        Ok(Some(m))
    }

    /// Checks every listed transformer layer against the transformer's tensors (formats,
    /// scales, smoothing factors), rejects quantized tensors the manifest does
    /// not list, and marks the activation modes in the store.
    /// The 8-bit self-attention blocks are marked as well.
    pub fn apply(&self, ws: &mut WeightStore) -> Result<()> {
        apply_transformer(&self.layers, &self.int8_attention_blocks, ws)
    }

    /// [`Self::apply`] for a two-expert model's `transformer_2` (its own section, or none: then
    /// its tensors must be the source's float ones).
    pub fn apply_transformer_2(&self, ws: &mut WeightStore) -> Result<()> {
        let e = self.transformer_2.clone().unwrap_or_default();
        apply_transformer(&e.layers, &e.int8_attention_blocks, ws)
    }

    /// [`Self::apply`] for the text encoder's tensors and layers.
    pub fn apply_text_encoder(&self, ws: &mut WeightStore) -> Result<()> {
        apply_layers(&self.text_encoder_layers, ws)
    }
}

fn apply_transformer(layers: &[LayerEntry], int8_attention_blocks: &[usize], ws: &mut WeightStore) -> Result<()> {
    apply_layers(layers, ws)?;
    for &i in int8_attention_blocks {
        ws.set_attention_precision(format!("blocks.{i}.attn1"), AttentionPrecision::Int8);
    }
    Ok(())
}

/// Checks `layers` against the tensors of `ws` (see [`Manifest::apply`]).
pub fn apply_layers(layers: &[LayerEntry], ws: &mut WeightStore) -> Result<()> {
    let origin = ws.origin().to_string();
    let bad = |msg: String| Error::file(&origin, format!("artifact does not match its manifest: {msg}"));
    let mut listed = std::collections::HashSet::new();
    for layer in layers {
        for part in &layer.parts {
            listed.insert(part.as_str());
            let weight = format!("{part}.weight");
            let raw = ws.raw(&weight).map_err(|_| bad(format!("missing tensor `{weight}`")))?;
            let rows = raw.shape.first().copied().unwrap_or(0);
            let cols = raw.shape.get(1).copied().unwrap_or(0);
            match layer.format.weight_dtype() {
                Some(want) if raw.dtype != want => {
                    return Err(bad(format!("`{weight}` is {} but the layer is {:?}", raw.dtype, layer.format)));
                }
                None if !raw.dtype.is_float() => {
                    return Err(bad(format!("`{weight}` is {} but the layer is f32", raw.dtype)));
                }
                _ => {}
            }
            if layer.format != LayerFormat::F32 {
                let scale = format!("{part}.weight_scale");
                let s = ws.raw(&scale).map_err(|_| bad(format!("missing tensor `{scale}`")))?;
                if s.shape != [rows] || s.dtype != DType::F32 {
                    return Err(bad(format!("`{scale}` must be f32 [{rows}], found {} {:?}", s.dtype, s.shape)));
                }
            }
            let smooth = format!("{part}.smooth");
            match (layer.smooth, ws.contains(&smooth)) {
                (true, false) => return Err(bad(format!("missing tensor `{smooth}`"))),
                (false, true) => return Err(bad(format!("`{smooth}` is not listed in the manifest"))),
                (true, true) if ws.shape_of(&smooth)? != [cols] => {
                    return Err(bad(format!("`{smooth}` must have shape [{cols}]")));
                }
                _ => {}
            }
            match (layer.format, layer.activation) {
                (LayerFormat::Int8 | LayerFormat::Fp8, Some(a)) => {
                    if let Activation::Static(s) = a {
                        if !(s.is_finite() && s > 0.0) {
                            return Err(bad(format!("layer {}: static activation scale {s}", layer.name)));
                        }
                    }
                    ws.set_activation_quant(part.clone(), a.to_act_quant());
                }
                (LayerFormat::Int8 | LayerFormat::Fp8, None) => {
                    return Err(bad(format!("layer {} needs an activation mode", layer.name)));
                }
                (_, Some(_)) => {
                    return Err(bad(format!("layer {} does not quantize activations", layer.name)));
                }
                _ => {}
            }
        }
    }
    let unlisted = ws.names().find(|n| {
        n.strip_suffix(".weight").is_some_and(|p| !listed.contains(p))
            && ws.raw(n).map(|r| !r.dtype.is_float()).unwrap_or(false)
    });
    if let Some(n) = unlisted {
        return Err(bad(format!("`{n}` is quantized but not listed")));
    }
    Ok(())
}

//! W8A16 quantization of the UMT5 text encoder.
//!
//! Wan2.1's UMT5-XXL (5.7 B parameters, 11 GB in bf16) is four times the 1.3B transformer and runs
//! once per prompt: its weights are where memory pays, its latency is not. So its linear layers
//! get per-output-channel int8 codes (f32 compute, a quarter of the f32 bytes, half of bf16), and
//! so does the token embedding (one scale per token row; 1.05 B of UMT5-XXL's parameters); norms
//! and relative-position biases stay as stored. The error is measured on the prompt embeddings
//! the transformer would see.

use crate::plan::ActivationChoice;
use crate::quantize::{quantize_layer, QuantizedLayer};
use crate::sensitivity::relative_error;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;
use wanrt_nn::probe::ActivationProbe;
use wanrt_nn::weights::RawTensor;
use wanrt_nn::{Module, Param, WeightStore};
use wanrt_wan::artifact::{apply_layers, LayerEntry, LayerFormat};
use wanrt_wan::model::WanModel;
use wanrt_wan::pipeline::GenerateParams;
use wanrt_wan::text::encode_prompts;
use wanrt_wan::umt5::Umt5Encoder;

/// The quantized text encoder as the artifact stores it, and what it cost.
pub struct QuantizedTextEncoder {
    /// Every tensor of `text_encoder/model.safetensors`.
    pub tensors: BTreeMap<String, RawTensor>,
    pub layers: Vec<LayerEntry>,
    /// Relative L2 error of the prompt embeddings on the calibration prompts.
    pub embedding_error: f64,
    pub weight_bytes_before: usize,
    pub weight_bytes_after: usize,
}

/// Quantizes the linears of `src/text_encoder` and measures the embeddings of `prompts`
/// against `model`'s (full-precision) encoder.
pub fn quantize_text_encoder(src: &Path, model: &WanModel, prompts: &[String]) -> Result<QuantizedTextEncoder> {
    let ws = WeightStore::from_diffusers_dir(&src.join("text_encoder"), "model")?;
    let config = model.text_encoder.config.clone();
    let mut tensors: BTreeMap<String, RawTensor> =
        ws.names().map(|n| Ok((n.to_string(), ws.raw(n)?.clone()))).collect::<Result<_>>()?;
    let embedding = Umt5Encoder::embedding_prefix(&ws)
        .ok_or_else(|| Error::Msg(format!("{}: no token embedding (shared.weight)", ws.origin())))?;
    // A tied duplicate would be a second, unquantized copy of the table: keep one.
    if embedding == "shared" {
        tensors.remove("encoder.embed_tokens.weight");
    }
    // The embedding table and every linear layer, by the names the loaded encoder gave them.
    let mut prefixes = Vec::new();
    model.text_encoder.visit(&mut |p| match p {
        Param::Linear(l) => prefixes.push(l.name.clone()),
        Param::Embedding(e) => prefixes.push(e.table.name.clone()),
        _ => {}
    });
    let mut layers = Vec::new();
    for prefix in prefixes {
        let w = ws.get(&format!("{prefix}.weight"))?;
        if w.rank() != 2 {
            return Err(Error::Msg(format!("text encoder `{prefix}.weight` is not a matrix: {:?}", w.shape())));
        }
        let parts = [(prefix.clone(), w.dim(0))];
        // Weight-only quantization reads no activation statistics: an empty probe of the right width.
        let stats = ActivationProbe::new(w.dim(1)).snapshot();
        let q: QuantizedLayer =
            quantize_layer(&w, &parts, LayerFormat::Int8Weight, ActivationChoice::Dynamic, None, &stats)?;
        tensors.extend(q.tensors);
        layers.push(LayerEntry {
            name: prefix.clone(),
            parts: vec![prefix],
            format: LayerFormat::Int8Weight,
            activation: None,
            smooth: false,
            sensitivity: None,
        });
    }

    // The encoder exactly as the artifact will load it (manifest check included).
    let mut store = WeightStore::new("quantized text encoder");
    for (n, t) in &tensors {
        store.insert(n.clone(), t.clone());
    }
    apply_layers(&layers, &mut store)?;
    let quantized = Umt5Encoder::load(&store, config, model.text_encoder.backend().clone())?;

    let max_len = model.resolve(&GenerateParams::new(prompts.first().map_or("", String::as_str)))?.max_sequence_length;
    let be = model.text_encoder.backend();
    let reference = be.to_host(&encode_prompts(&model.tokenizer, &model.text_encoder, prompts, max_len)?)?;
    let got = be.to_host(&encode_prompts(&model.tokenizer, &quantized, prompts, max_len)?)?;
    Ok(QuantizedTextEncoder {
        tensors,
        layers,
        embedding_error: relative_error(&[got], &[reference]),
        weight_bytes_before: model.text_encoder.weight_bytes(),
        weight_bytes_after: quantized.weight_bytes(),
    })
}

//! What the user asked `wanrt optimize` for.

use std::fmt;
use std::str::FromStr;
use wanrt_wan::artifact::LayerFormat;
use wanrt_wan::lora::{LoraSpec, Unmatched};

/// `--quant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantMode {
    None,
    /// W8A16: int8 weights, f32 activations.
    Int8Weight,
    /// W8A8: int8 weights and activations (SmoothQuant migration).
    Int8,
    /// FP8 E4M3 weights and activations.
    Fp8,
}

impl QuantMode {
    pub fn layer_format(self) -> LayerFormat {
        match self {
            QuantMode::None => LayerFormat::F32,
            QuantMode::Int8Weight => LayerFormat::Int8Weight,
            QuantMode::Int8 => LayerFormat::Int8,
            QuantMode::Fp8 => LayerFormat::Fp8,
        }
    }
}

impl FromStr for QuantMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "none" => QuantMode::None,
            "int8-weight" => QuantMode::Int8Weight,
            "int8" => QuantMode::Int8,
            "fp8" => QuantMode::Fp8,
            _ => return Err(format!("unknown quantization `{s}` (expected none, int8-weight, int8 or fp8)")),
        })
    }
}

impl fmt::Display for QuantMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuantMode::None => "none",
            QuantMode::Int8Weight => "int8-weight",
            QuantMode::Int8 => "int8",
            QuantMode::Fp8 => "fp8",
        })
    }
}

/// Where quantized activations get their scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationChoice {
    /// Per token at run time (default: most accurate, no calibration risk).
    Dynamic,
    /// One calibrated scale per layer (absmax over the calibration run).
    Static,
}

#[derive(Debug, Clone)]
pub struct OptimizeOptions {
    pub quant: QuantMode,
    pub activation: ActivationChoice,
    /// SmoothQuant migration strength α for W8A8 (None: no smoothing).
    pub smooth_alpha: Option<f32>,
    /// SageAttention-style 8-bit self-attention.
    pub attn_quant: bool,
    /// Fraction of FFN hidden channels removed per block.
    pub prune_ffn: f64,
    /// Self-attention heads removed per block.
    pub prune_heads: usize,
    /// Globs over tensor names (`blocks.0.*`, `*.attn2.*`): matching layers stay in full precision.
    pub keep_precision: Vec<String>,
    /// Keep the most sensitive layers in full precision until the transformer's
    /// relative output error on the calibration inputs is at most this.
    pub max_error: Option<f64>,
    /// Measure every layer's sensitivity even without `max_error`.
    pub sensitivity: bool,
    /// Quantize the text encoder's linear layers to int8 weights (W8A16).
    pub text_encoder_int8: bool,
    /// LoRA files baked into the transformer: merged into its float weights before calibration,
    /// so the quantized weights include them.
    pub loras: Vec<LoraSpec>,
    /// LoRA files baked into `transformer_2` (Wan2.2 A14B's low-noise expert) the same way.
    pub loras_2: Vec<LoraSpec>,
    /// LoRA keys that match no transformer layer: an error (default) or skipped.
    pub lora_unmatched: Unmatched,
}

impl Default for OptimizeOptions {
    fn default() -> Self {
        OptimizeOptions {
            quant: QuantMode::Int8,
            activation: ActivationChoice::Dynamic,
            smooth_alpha: Some(0.5),
            attn_quant: false,
            prune_ffn: 0.0,
            prune_heads: 0,
            keep_precision: Vec::new(),
            max_error: None,
            sensitivity: false,
            text_encoder_int8: false,
            loras: Vec::new(),
            loras_2: Vec::new(),
            lora_unmatched: Unmatched::Error,
        }
    }
}

impl OptimizeOptions {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..1.0).contains(&self.prune_ffn) {
            return Err(format!("--prune-ffn must be in [0, 1), got {}", self.prune_ffn));
        }
        if let Some(a) = self.smooth_alpha {
            if !(0.0..=1.0).contains(&a) {
                return Err(format!("--smooth-alpha must be in [0, 1], got {a}"));
            }
        }
        if let Some(e) = self.max_error {
            if !(e.is_finite() && e > 0.0) {
                return Err(format!("--max-error must be a positive number, got {e}"));
            }
        }
        for g in &self.keep_precision {
            glob::Pattern::new(g).map_err(|e| format!("--keep-precision `{g}`: {e}"))?;
        }
        Ok(())
    }

    /// Whether the layer with these checkpoint prefixes must stay in full precision.
    pub fn keeps_precision(&self, name: &str, parts: &[String]) -> bool {
        self.keep_precision.iter().filter_map(|g| glob::Pattern::new(g).ok()).any(|p| {
            std::iter::once(name)
                .chain(parts.iter().map(String::as_str))
                .any(|n| p.matches(n) || p.matches(&format!("{n}.weight")))
        })
    }
}

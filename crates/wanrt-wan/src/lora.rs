//! LoRA files for the Wan transformer, in the key formats people have, read as diffusers reads
//! them (`WanLoraLoaderMixin`, `lora_conversion_utils.py`) and applied by [`wanrt_nn::lora`]:
//!
//! - diffusers / PEFT: `transformer.blocks.0.attn1.to_q.lora_A.weight` / `.lora_B.weight`
//!   (`base_model.model.` and no prefix too), optional `.lora_B.bias`; alpha from the file's
//!   `lora_adapter_metadata` (`lora_alpha`, `alpha_pattern`, `use_rslora`), else scale 1;
//! - original Wan names as ComfyUI writes them: `diffusion_model.blocks.0.self_attn.q.lora_down.weight`
//!   / `.lora_up.weight` (or `lora_A`/`lora_B`), `.alpha`, `.diff_b` (bias deltas), `.diff`
//!   (full-weight deltas, norms and the modulation tables included — `blocks.0.modulation.diff`,
//!   `head.modulation.diff` land on `scale_shift_table`: ComfyUI adds them; diffusers 0.42 skips
//!   block `.diff` keys and norm deltas);
//! - Kohya / musubi-tuner: `lora_unet_blocks_0_self_attn_q.lora_down.weight`, `.lora_up.weight`,
//!   `.alpha`.
//!
//! A layer's delta is `scale · alpha / rank · up · down` (alpha = rank when the file states none;
//! `alpha / √rank` under rsLoRA), bias deltas `scale · diff_b`. Every key must land on a
//! parameter of the model: unmatched keys are an error naming them, or under [`Unmatched::Warn`]
//! skipped and listed in the summary (the caller prints one line).

use crate::names;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use wanrt_nn::lora::{Delta, MergeMode, Target};
use wanrt_nn::{HostTensor, WeightStore};

/// `--lora FILE[:SCALE]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    pub scale: f32,
}

impl LoraSpec {
    /// `FILE` (scale 1) or `FILE:SCALE`; a path holding `:` works when no number follows it.
    pub fn parse(s: &str) -> std::result::Result<LoraSpec, String> {
        if let Some((path, scale)) = s.rsplit_once(':') {
            if let Ok(v) = scale.parse::<f32>() {
                if !v.is_finite() {
                    return Err(format!("LoRA scale {scale} is not a finite number"));
                }
                return Ok(LoraSpec { path: path.into(), scale: v });
            }
        }
        if s.is_empty() {
            return Err("empty LoRA file name".into());
        }
        Ok(LoraSpec { path: s.into(), scale: 1.0 })
    }
}

/// What to do with LoRA keys that match no transformer parameter (`--lora-unmatched`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unmatched {
    /// Refuse the file, naming the keys (a LoRA made for another model must not half-apply).
    #[default]
    Error,
    /// Skip them; [`LoraSummary::warning`] says how many and which.
    Warn,
}

impl Unmatched {
    /// `error` or `warn`.
    pub fn parse(s: &str) -> std::result::Result<Unmatched, String> {
        match s {
            "error" => Ok(Unmatched::Error),
            "warn" => Ok(Unmatched::Warn),
            _ => Err(format!("`{s}` is not one of error, warn")),
        }
    }
}

/// At most this many key names in one message.
const SHOWN_KEYS: usize = 5;

/// `n key(s) match no transformer layer: a, b, …` (the first [`SHOWN_KEYS`] names).
fn unmatched_text(keys: &[String]) -> String {
    let shown: Vec<&str> = keys.iter().take(SHOWN_KEYS).map(String::as_str).collect();
    let more = if keys.len() > SHOWN_KEYS { ", …" } else { "" };
    format!("{} LoRA key(s) match no transformer layer: {}{more}", keys.len(), shown.join(", "))
}

/// What one LoRA file changed, for reports.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSummary {
    pub path: PathBuf,
    pub format: &'static str,
    pub scale: f32,
    /// Layers with a low-rank delta, their ranks and alphas (min, max).
    pub layers: usize,
    pub rank: (usize, usize),
    pub alpha: (f32, f32),
    /// Full-weight and bias deltas.
    pub diffs: usize,
    /// Keys skipped under [`Unmatched::Warn`].
    pub skipped: Vec<String>,
}

impl LoraSummary {
    /// One line on the skipped keys, when some were skipped.
    pub fn warning(&self) -> Option<String> {
        (!self.skipped.is_empty())
            .then(|| format!("LoRA {}: {}, skipped", self.path.display(), unmatched_text(&self.skipped)))
    }
}

impl std::fmt::Display for LoraSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let range = |a: String, b: String| if a == b { a } else { format!("{a}–{b}") };
        write!(
            f,
            "LoRA {} ({}): {} layers, rank {}, alpha {}, {} diffs, scale {}",
            self.path.display(),
            self.format,
            self.layers,
            range(self.rank.0.to_string(), self.rank.1.to_string()),
            range(self.alpha.0.to_string(), self.alpha.1.to_string()),
            self.diffs,
            self.scale
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Down,
    Up,
    UpBias,
    Alpha,
    Diff,
    DiffB,
}

const SUFFIXES: [(&str, Part); 9] = [
    (".lora_A.weight", Part::Down),
    (".lora_B.weight", Part::Up),
    (".lora_down.weight", Part::Down),
    (".lora_up.weight", Part::Up),
    (".lora_B.bias", Part::UpBias),
    (".lora_up.bias", Part::UpBias),
    (".alpha", Part::Alpha),
    (".diff_b", Part::DiffB),
    (".diff", Part::Diff),
];

/// `blocks_3_self_attn_q` (Kohya's flattening of an original module path) → `blocks.3.self_attn.q`.
fn kohya_to_original(flat: &str) -> Option<String> {
    const TOP: [&str; 8] = [
        "text_embedding_0",
        "text_embedding_2",
        "time_embedding_0",
        "time_embedding_2",
        "time_projection_1",
        "head_head",
        "patch_embedding",
        "head_modulation",
    ];
    if TOP.contains(&flat) {
        let (a, b) = flat.rsplit_once('_')?;
        return Some(format!("{a}.{b}"));
    }
    let rest = flat.strip_prefix("blocks_")?;
    let (i, rest) = rest.split_once('_')?;
    i.parse::<usize>().ok()?;
    let tail = if let Some(leaf) = rest.strip_prefix("self_attn_") {
        format!("self_attn.{leaf}")
    } else if let Some(leaf) = rest.strip_prefix("cross_attn_") {
        format!("cross_attn.{leaf}")
    } else if let Some(leaf) = rest.strip_prefix("ffn_") {
        format!("ffn.{leaf}")
    } else {
        rest.to_string()
    };
    Some(format!("blocks.{i}.{tail}"))
}

/// The diffusers module path of a key's module part, when the model has that module (`has`: the
/// model has a parameter of this diffusers name). A bare parameter (the modulation tables:
/// original `blocks.0.modulation`, `head.modulation`) is its own path; only a `diff` fits it.
fn module_of(raw: &str, has: &dyn Fn(&str) -> bool) -> Option<(String, &'static str)> {
    if let Some(flat) = raw.strip_prefix("lora_unet_") {
        return Some((original_module(&kohya_to_original(flat)?, has)?, "kohya"));
    }
    let mut m = raw;
    for p in ["transformer.", "base_model.model.", "model.diffusion_model.", "diffusion_model."] {
        m = m.strip_prefix(p).unwrap_or(m);
    }
    if has(&format!("{m}.weight")) || has(&format!("{m}.bias")) || has(m) {
        return Some((m.to_string(), "diffusers"));
    }
    Some((original_module(m, has)?, "original"))
}

/// The diffusers path of an original module (`blocks.0.self_attn.q` → `blocks.0.attn1.to_q`) or
/// bare parameter (`blocks.0.modulation` → `blocks.0.scale_shift_table`).
fn original_module(orig: &str, has: &dyn Fn(&str) -> bool) -> Option<String> {
    match names::transformer(&format!("{orig}.weight")) {
        Some(d) => Some(d.strip_suffix(".weight")?.to_string()),
        None => names::transformer(orig).filter(|d| has(d)),
    }
}

/// PEFT's `lora_adapter_metadata` of a diffusers LoRA file: `(lora_alpha, alpha_pattern, use_rslora)`.
struct PeftMeta {
    alpha: Option<f32>,
    pattern: Vec<(String, f32)>,
    rslora: bool,
}

/// The `__metadata__` strings of a safetensors file, read from its header only (bounded).
fn safetensors_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    let len = f.metadata().map_err(|e| Error::file(path, format!("cannot stat: {e}")))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|_| Error::file(path, "not a safetensors file (shorter than its header size)"))?;
    let n = u64::from_le_bytes(n);
    if n > len.saturating_sub(8) || n > 100 << 20 {
        return Err(Error::file(path, format!("not a safetensors file (header of {n} bytes in a {len}-byte file)")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| Error::file(path, format!("cannot read the header: {e}")))?;
    let v: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| Error::file(path, format!("invalid safetensors header: {e}")))?;
    let meta = v.get("__metadata__").and_then(|m| m.as_object());
    Ok(meta
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default())
}

fn peft_meta(path: &Path) -> Result<PeftMeta> {
    let meta = safetensors_metadata(path)?;
    let mut out = PeftMeta { alpha: None, pattern: vec![], rslora: false };
    let Some(raw) = meta.get("lora_adapter_metadata") else { return Ok(out) };
    let v: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| Error::file(path, format!("lora_adapter_metadata is not valid JSON: {e}")))?;
    let get = |k: &str| v.get(format!("transformer.{k}")).or_else(|| v.get(k));
    out.alpha = get("lora_alpha").and_then(|a| a.as_f64()).map(|a| a as f32);
    out.rslora = get("use_rslora").and_then(|a| a.as_bool()).unwrap_or(false);
    if let Some(p) = get("alpha_pattern").and_then(|p| p.as_object()) {
        out.pattern = p.iter().filter_map(|(k, a)| Some((k.clone(), a.as_f64()? as f32))).collect();
    }
    Ok(out)
}

impl PeftMeta {
    /// The alpha of `module` (PEFT matches a pattern against the end of the module path).
    fn alpha_of(&self, module: &str) -> Option<f32> {
        let hit = self.pattern.iter().find(|(p, _)| module == p || module.ends_with(&format!(".{p}")));
        hit.map(|h| h.1).or(self.alpha)
    }
}

/// The deltas of one LoRA file on the transformer store `ws` (diffusers names).
pub fn targets(spec: &LoraSpec, ws: &WeightStore, unmatched: Unmatched) -> Result<(Vec<Target>, LoraSummary)> {
    targets_on(spec, &|n| ws.contains(n), unmatched)
}

/// [`targets`] on a model that has the parameters `has` says it has.
pub fn targets_on(
    spec: &LoraSpec,
    has: &dyn Fn(&str) -> bool,
    policy: Unmatched,
) -> Result<(Vec<Target>, LoraSummary)> {
    let path = &spec.path;
    if !path.is_file() {
        return Err(Error::file(path, "LoRA file not found"));
    }
    let file = WeightStore::from_safetensors_files(std::slice::from_ref(path))?;
    let meta = peft_meta(path)?;
    let mut modules: BTreeMap<String, BTreeMap<Part, (String, HostTensor)>> = BTreeMap::new();
    let mut unmatched = vec![];
    let mut formats = std::collections::BTreeSet::new();
    for key in file.names() {
        let parsed = SUFFIXES.iter().find_map(|(s, p)| Some((key.strip_suffix(s)?, *p)));
        let Some((module, part)) = parsed else {
            unmatched.push(key.to_string());
            continue;
        };
        let Some((m, format)) = module_of(module, has) else {
            unmatched.push(key.to_string());
            continue;
        };
        formats.insert(format);
        let t = file.get(key)?;
        modules.entry(m).or_default().insert(part, (key.to_string(), t));
    }
    let mut out = vec![];
    let mut summary = LoraSummary {
        path: path.clone(),
        format: if formats.len() == 1 { formats.first().copied().unwrap_or("empty") } else { "mixed" },
        scale: spec.scale,
        layers: 0,
        rank: (usize::MAX, 0),
        alpha: (f32::INFINITY, f32::NEG_INFINITY),
        diffs: 0,
        skipped: vec![],
    };
    for (m, parts) in modules {
        let take = |p: Part| parts.get(&p);
        let mut lora_factor = None;
        // A bare parameter (a modulation table) takes only a `diff`: it is no layer, has no bias.
        let bare = has(&m);
        match (take(Part::Down), take(Part::Up)) {
            (Some((k, _)), Some(_)) if bare => unmatched.push(format!("{k} (`{m}` is no linear layer)")),
            (Some((_, down)), Some((_, up))) => {
                let rank = down.shape().first().copied().unwrap_or(0);
                if down.shape().len() != 2 || rank == 0 {
                    return Err(Error::file(
                        path,
                        format!("{m}: LoRA down of shape {:?} is not [rank, in]", down.shape()),
                    ));
                }
                let alpha = match take(Part::Alpha) {
                    Some((k, _)) => match file.raw(k)?.to_f32()?.as_slice() {
                        [v] if v.is_finite() => *v,
                        _ => return Err(Error::file(path, format!("`{k}` is not one finite number"))),
                    },
                    None => meta.alpha_of(&m).unwrap_or(rank as f32),
                };
                let per_rank = if meta.rslora { alpha / (rank as f32).sqrt() } else { alpha / rank as f32 };
                let factor = spec.scale * per_rank;
                lora_factor = Some(factor);
                summary.layers += 1;
                summary.rank = (summary.rank.0.min(rank), summary.rank.1.max(rank));
                summary.alpha = (summary.alpha.0.min(alpha), summary.alpha.1.max(alpha));
                out.push(Target {
                    name: format!("{m}.weight"),
                    delta: Delta::LowRank { down: down.clone(), up: up.clone(), factor },
                });
            }
            (None, None) => {
                if let Some((k, _)) = take(Part::Alpha).or(take(Part::UpBias)) {
                    unmatched.push(format!("{k} (no LoRA down/up weights for it)"));
                }
            }
            (Some((k, _)), None) | (None, Some((k, _))) => {
                unmatched.push(format!("{k} (its LoRA down/up partner is missing)"));
            }
        }
        if let (Some((_, b)), Some(f)) = (take(Part::UpBias), lora_factor) {
            out.push(Target { name: format!("{m}.bias"), delta: Delta::Full { diff: b.clone(), factor: f } });
            summary.diffs += 1;
        }
        for (part, suffix) in [(Part::Diff, "weight"), (Part::DiffB, "bias")] {
            if let Some((k, d)) = take(part) {
                let name = match (bare, part) {
                    (false, _) => format!("{m}.{suffix}"),
                    (true, Part::Diff) => m.clone(),
                    (true, _) => {
                        unmatched.push(format!("{k} (`{m}` has no bias)"));
                        continue;
                    }
                };
                out.push(Target { name, delta: Delta::Full { diff: d.clone(), factor: spec.scale } });
                summary.diffs += 1;
            }
        }
    }
    if !unmatched.is_empty() {
        match policy {
            Unmatched::Error => return Err(Error::file(path, unmatched_text(&unmatched))),
            Unmatched::Warn => summary.skipped = unmatched,
        }
    }
    if out.is_empty() {
        return Err(Error::file(path, "no LoRA weights found"));
    }
    if summary.layers == 0 {
        summary.rank = (0, 0);
        summary.alpha = (0.0, 0.0);
    }
    Ok((out, summary))
}

/// Applies every LoRA file to the transformer store (merged into float weights unless `mode`
/// says otherwise; quantized weights get side paths) and returns one summary per file.
pub fn apply(
    ws: &mut WeightStore,
    specs: &[LoraSpec],
    mode: MergeMode,
    unmatched: Unmatched,
) -> Result<Vec<LoraSummary>> {
    let mut all = vec![];
    let mut summaries = vec![];
    for spec in specs {
        let (t, s) = targets(spec, ws, unmatched)?;
        all.extend(t);
        summaries.push(s);
    }
    if !all.is_empty() {
        wanrt_nn::lora::apply(ws, all, mode)?;
    }
    Ok(summaries)
}

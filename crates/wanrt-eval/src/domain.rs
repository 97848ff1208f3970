//! The demo domain's evaluator (`wanrt eval domain`), a port of
//! `tools/demo/evaluator.py::Evaluator` (PyTorch) as `models/demo-evaluator/config.json`
//! describes it: a small Conv3d video classifier of the bundled demo model's domain.
//!
//! ```text
//! x: [N, 3, 17, 32, 32] RGB uint8/255  ->  (x - mean) / std
//! conv3d 3->16 k(1,3,3) p(0,1,1) + relu, 16->32 k3 s(1,2,2) p1 + relu,
//! 32->64 k3 s2 p1 + relu, 64->128 k3 s2 p1 + relu   (the layer list of config.json)
//! global average pool over (T, H, W)  ->  features [N, 128]   (the domain FD uses these)
//! heads: linear 128->k per attribute  ->  logits; prediction = argmax
//! ```
//!
//! The report: per-attribute accuracy and prompt accuracy (an item is correct when every
//! predicted attribute equals the one its caption names; captions are parsed with the
//! config's `caption_template`, e.g. `a {colour} {shape} moves {direction} on a
//! {background} background`), and the Fréchet distance between the features of two sets
//! ([`crate::stats`] + [`crate::frechet`], float64, as for FID).
//!
//! Results do not depend on `--batch`: the convolutions run sample by sample inside a
//! batch and the heads are per-sample dot products.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use wanrt_nn::backend::Activation;
use wanrt_nn::ops::pool::global_avg_pool;
use wanrt_nn::ops::PaddingFull;
use wanrt_nn::weights::RawTensor;
use wanrt_nn::{BackendRef, Conv3d, HostTensor, Linear, WeightStore};

use crate::clipscore::read_prompts;
use crate::error::{EvalError, Result};
use crate::fid::SideInfo;
use crate::frechet::frechet_distance_stats;
use crate::items::open_items;
use crate::stats::FeatureSums;

/// Where the bundled evaluator lives, relative to a repository or install root.
pub const EVALUATOR_REL: &str = "models/demo-evaluator";
/// Environment variable naming the evaluator folder.
pub const EVALUATOR_ENV: &str = "WANRT_DOMAIN_EVALUATOR";

/// The evaluator folder: `dir` if given, else `WANRT_DOMAIN_EVALUATOR`, else
/// `models/demo-evaluator` near the executable (a build tree `target/<profile>/wanrt` or
/// an install `bin/wanrt` + `share/wanrt/`) or in the current directory — found as the
/// bundled demo model is.
pub fn resolve_evaluator(dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = dir {
        return Ok(d.to_path_buf());
    }
    if let Some(p) = std::env::var_os(EVALUATOR_ENV) {
        return Ok(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        for anc in exe.ancestors().skip(1).take(4) {
            candidates.push(anc.join(EVALUATOR_REL));
            candidates.push(anc.join("share/wanrt").join(EVALUATOR_REL));
        }
    }
    candidates.push(PathBuf::from(EVALUATOR_REL));
    candidates.into_iter().find(|c| c.join("config.json").is_file()).ok_or_else(|| {
        EvalError::Msg(format!(
            "no --evaluator given and the bundled domain evaluator was not found (looked for \
             {EVALUATOR_REL}/ near the executable and in the current directory; set {EVALUATOR_ENV})"
        ))
    })
}

// ----------------------------------------------------------------------------- config

#[derive(Deserialize, Debug, Clone)]
struct NormalizeCfg {
    mean: [f32; 3],
    std: [f32; 3],
}

#[derive(Deserialize, Debug, Clone)]
struct InputCfg {
    layout: String,
    frames: usize,
    height: usize,
    width: usize,
    normalize: NormalizeCfg,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(tag = "type", rename_all = "snake_case")]
enum LayerCfg {
    Conv3d {
        in_channels: usize,
        out_channels: usize,
        kernel_size: [usize; 3],
        stride: [usize; 3],
        padding: [usize; 3],
        #[serde(default = "zeros")]
        padding_mode: String,
        weight: String,
        bias: Option<String>,
    },
    Relu,
    GlobalAvgPool {
        dims: Vec<String>,
    },
}

fn zeros() -> String {
    "zeros".into()
}

#[derive(Deserialize, Debug, Clone)]
struct HeadCfg {
    #[serde(rename = "type")]
    kind: String,
    in_features: usize,
    out_features: usize,
    weight: String,
    bias: String,
    classes: Vec<String>,
}

/// A JSON object kept in document order (the config's head order is the report's).
#[derive(Debug, Clone, PartialEq)]
pub struct Ordered<T>(pub Vec<(String, T)>);

impl<T> Ordered<T> {
    pub fn get(&self, key: &str) -> Option<&T> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<T: Serialize> Serialize for Ordered<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = m.next_entry::<String, T>()? {
                    v.push((k, x));
                }
                Ok(Ordered(v))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize, Debug, Clone)]
struct ConfigFile {
    input: InputCfg,
    layers: Vec<LayerCfg>,
    feature_dim: usize,
    heads: Ordered<HeadCfg>,
    caption_template: Option<String>,
}

// ----------------------------------------------------------------------------- network

enum Layer {
    Conv(Conv3d, PaddingFull),
    Relu,
}

/// One classification head.
pub struct Head {
    pub name: String,
    pub classes: Vec<String>,
    /// `feature_dim → classes`.
    linear: Linear,
}

/// A caption template such as `a {colour} {shape} moves {direction} on a {background} background`.
#[derive(Clone, Debug)]
enum Word {
    Literal(String),
    Slot(usize),
}

/// The domain evaluator: layers, heads, input geometry and caption template.
pub struct DomainEvaluator {
    backend: BackendRef,
    dir: PathBuf,
    frames: usize,
    height: usize,
    width: usize,
    mean: [f32; 3],
    std: [f32; 3],
    layers: Vec<Layer>,
    feature_dim: usize,
    pub heads: Vec<Head>,
    template: Option<Vec<Word>>,
}

/// Features and logits of a batch.
#[derive(Clone, Debug)]
pub struct DomainOutput {
    /// `[n, feature_dim]` row-major.
    pub features: Vec<f32>,
    /// Per head (config order), `[n, classes]` row-major.
    pub logits: Vec<Vec<f32>>,
}

impl DomainEvaluator {
    /// Loads `config.json` + `model.safetensors` from an evaluator folder onto the CPU backend.
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(EvalError::input(
                dir,
                "not a folder (expected a domain evaluator: config.json + model.safetensors)",
            ));
        }
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| EvalError::input(&cfg_path, e.to_string()))?;
        let cfg: ConfigFile = serde_json::from_str(&text)
            .map_err(|e| EvalError::input(&cfg_path, format!("not a domain evaluator config: {e}")))?;
        let bad = |msg: String| EvalError::input(&cfg_path, msg);
        if cfg.input.layout != "NCTHW" {
            return Err(bad(format!("input layout `{}` is not supported (expected NCTHW)", cfg.input.layout)));
        }
        crate::weights::load(&dir.join("model.safetensors"), |store| {
            Self::build(dir, &cfg, &cfg_path, store, wanrt_nn::backend::cpu())
        })
    }

    fn build(dir: &Path, cfg: &ConfigFile, cfg_path: &Path, store: &WeightStore, backend: BackendRef) -> Result<Self> {
        // The config names every tensor in full: layers are built from the store by those names
        // (not along a module path).
        let bad = |msg: String| EvalError::input(cfg_path, msg);
        let mut layers = Vec::new();
        let mut channels = 3usize;
        let mut pooled = false;
        for (i, l) in cfg.layers.iter().enumerate() {
            if pooled {
                return Err(bad(format!("layer {i}: only the global average pool may end the layer list")));
            }
            match l {
                LayerCfg::Conv3d {
                    in_channels,
                    out_channels,
                    kernel_size: k,
                    stride,
                    padding: p,
                    padding_mode,
                    weight,
                    bias,
                } => {
                    if *in_channels != channels {
                        return Err(bad(format!("layer {i}: in_channels {in_channels}, but {channels} come in")));
                    }
                    if padding_mode != "zeros" {
                        return Err(bad(format!("layer {i}: padding_mode `{padding_mode}` is not supported")));
                    }
                    if stride.contains(&0) {
                        return Err(bad(format!("layer {i}: stride must be positive")));
                    }
                    let w = store.get_shaped(weight, &[*out_channels, *in_channels, k[0], k[1], k[2]])?;
                    let b = bias.as_ref().map(|b| store.get_shaped(b, &[*out_channels])).transpose()?;
                    let name = weight.strip_suffix(".weight").unwrap_or(weight);
                    let stride = (stride[0], stride[1], stride[2]);
                    let mut conv = Conv3d::new(name, RawTensor::from_f32(&w), b.map(HostTensor::into_data), stride)?;
                    conv.prepare(&*backend)?;
                    let pad = PaddingFull { t: (p[0], p[0]), h: (p[1], p[1]), w: (p[2], p[2]) };
                    layers.push(Layer::Conv(conv, pad));
                    channels = *out_channels;
                }
                LayerCfg::Relu => layers.push(Layer::Relu),
                LayerCfg::GlobalAvgPool { dims } => {
                    if dims.iter().map(String::as_str).collect::<Vec<_>>() != ["T", "H", "W"] {
                        return Err(bad(format!("layer {i}: global_avg_pool over {dims:?} (expected T, H, W)")));
                    }
                    pooled = true;
                }
            }
        }
        if !pooled {
            return Err(bad("the layer list must end with a global_avg_pool over T, H, W".into()));
        }
        if cfg.feature_dim != channels {
            return Err(bad(format!("feature_dim {} but the last conv has {channels} channels", cfg.feature_dim)));
        }
        let mut heads = Vec::new();
        for (name, h) in &cfg.heads.0 {
            if h.kind != "linear" || h.in_features != channels || h.classes.len() != h.out_features {
                return Err(bad(format!(
                    "head `{name}`: expected a linear {channels} -> {} with one class name per output",
                    h.classes.len()
                )));
            }
            let w = store.get_shaped(&h.weight, &[h.out_features, channels])?;
            let b = store.get_shaped(&h.bias, &[h.out_features])?.into_data();
            let mut linear = Linear::from_f32(format!("heads.{name}"), &w, Some(b))?;
            linear.prepare(&*backend)?;
            heads.push(Head { name: name.clone(), classes: h.classes.clone(), linear });
        }
        if heads.is_empty() {
            return Err(bad("no heads".into()));
        }
        let template = match &cfg.caption_template {
            None => None,
            Some(t) => Some(
                t.split_whitespace()
                    .map(|w| match w.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                        Some(slot) => heads
                            .iter()
                            .position(|h| h.name == slot)
                            .map(Word::Slot)
                            .ok_or_else(|| bad(format!("caption_template names `{{{slot}}}`, which is no head"))),
                        None => Ok(Word::Literal(w.to_string())),
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
        };
        Ok(DomainEvaluator {
            backend,
            dir: dir.to_path_buf(),
            frames: cfg.input.frames,
            height: cfg.input.height,
            width: cfg.input.width,
            mean: cfg.input.normalize.mean,
            std: cfg.input.normalize.std,
            layers,
            feature_dim: channels,
            heads,
            template,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }

    /// `(frames, height, width)` the evaluator was trained on.
    pub fn input_size(&self) -> (usize, usize, usize) {
        (self.frames, self.height, self.width)
    }

    /// One uint8 clip `(F, H, W, 3)` → `[3, F, H, W]` normalized, appended to `out`.
    /// The clip must have the configured size.
    pub fn push_clip(&self, video: &wanrt_media::Video, out: &mut Vec<f32>) -> Result<()> {
        let (f, h, w) = (video.frames(), video.height(), video.width());
        if (f, h, w) != (self.frames, self.height, self.width) {
            return Err(EvalError::mismatch(
                "clip size for the domain evaluator (frames × height × width; pick frames with --frames-per-video)",
                format!("{}x{}x{}", self.frames, self.height, self.width),
                format!("{f}x{h}x{w}"),
            ));
        }
        let plane = h * w;
        let base = out.len();
        out.resize(base + 3 * f * plane, 0.0);
        let dst = &mut out[base..];
        for (t, fr) in (0..f).map(|t| (t, video.frame(t))) {
            for (p, px) in fr.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    let x = px[c] as f32 / 255.0;
                    dst[(c * f + t) * plane + p] = (x - self.mean[c]) / self.std[c];
                }
            }
        }
        Ok(())
    }

    /// `x: [N, 3, T, H, W]` normalized → features `[N, D]` and each head's logits.
    pub fn forward(&self, x: &HostTensor) -> Result<DomainOutput> {
        let be = &*self.backend;
        let mut y = be.upload(x)?;
        for l in &self.layers {
            y = match l {
                Layer::Conv(conv, pad) => conv.forward(be, &y, None, *pad)?,
                Layer::Relu => be.activation(y, Activation::Relu)?,
            };
        }
        // y: [N, D, T', H', W'] -> [N, D]
        let pooled = global_avg_pool(&be.to_host(&y)?)?;
        let mut logits = vec![Vec::new(); self.heads.len()];
        // The heads run sample by sample (a GEMM of one row), so a sample's logits do not
        // depend on the batch it is in.
        for n in 0..pooled.dim(0) {
            let f = be.upload(&pooled.narrow(0, n, 1)?)?;
            for (h, out) in self.heads.iter().zip(&mut logits) {
                out.extend(be.to_host(&h.linear.forward(be, &f)?)?.data());
            }
        }
        Ok(DomainOutput { features: pooled.into_data(), logits })
    }

    /// Features and logits of uint8 clips, `batch` clips per network call.
    pub fn evaluate_clips(&self, clips: &[wanrt_media::Video], batch: usize) -> Result<DomainOutput> {
        let mut out = DomainOutput { features: Vec::new(), logits: vec![Vec::new(); self.heads.len()] };
        for chunk in clips.chunks(batch.max(1)) {
            let mut data = Vec::new();
            for c in chunk {
                self.push_clip(c, &mut data)?;
            }
            let x = HostTensor::new([chunk.len(), 3, self.frames, self.height, self.width], data)?;
            let y = self.forward(&x)?;
            out.features.extend(y.features);
            out.logits.iter_mut().zip(y.logits).for_each(|(a, b)| a.extend(b));
        }
        Ok(out)
    }

    /// The class index each head predicts for sample `i` of an output (first maximum).
    pub fn predict(&self, out: &DomainOutput, i: usize) -> Vec<usize> {
        self.heads
            .iter()
            .zip(&out.logits)
            .map(|(h, l)| {
                let row = &l[i * h.classes.len()..(i + 1) * h.classes.len()];
                let mut best = 0;
                for (j, &v) in row.iter().enumerate() {
                    if v > row[best] {
                        best = j;
                    }
                }
                best
            })
            .collect()
    }

    /// The class index of every head named by a caption that follows the template
    /// (`None` when the caption does not fit it).
    pub fn parse_caption(&self, caption: &str) -> Option<Vec<usize>> {
        let template = self.template.as_ref()?;
        let words: Vec<&str> = caption.split_whitespace().collect();
        if words.len() != template.len() {
            return None;
        }
        let mut labels = vec![None; self.heads.len()];
        for (w, t) in words.iter().zip(template) {
            match t {
                Word::Literal(l) => {
                    if !l.eq_ignore_ascii_case(w) {
                        return None;
                    }
                }
                Word::Slot(h) => {
                    let c = self.heads[*h].classes.iter().position(|c| c.eq_ignore_ascii_case(w))?;
                    labels[*h] = Some(c);
                }
            }
        }
        labels.into_iter().collect()
    }
}

// ----------------------------------------------------------------------------- report

/// One item of the `domain` JSON object.
#[derive(Clone, Debug, Serialize)]
pub struct DomainItem {
    pub file: String,
    /// The caption from `--prompts` (`null` without prompts).
    pub caption: Option<String>,
    /// Predicted class of every head, in config order.
    pub predicted: Ordered<String>,
    /// Whether every predicted attribute equals the caption's (`null` without prompts).
    pub correct: Option<bool>,
}

/// The `domain` JSON object:
/// `{"prompt_accuracy": x|null, "attributes": {"shape": acc, …}|null, "fd": y|null,
/// "videos": {"items", "frames", "source"}, "real": {…}|null, "items": [{"file",
/// "caption", "predicted": {…}, "correct"}]}`.
#[derive(Clone, Debug, Serialize)]
pub struct DomainReport {
    pub prompt_accuracy: Option<f64>,
    pub attributes: Option<Ordered<f64>>,
    pub fd: Option<f64>,
    pub videos: SideInfo,
    pub real: Option<SideInfo>,
    pub items: Vec<DomainItem>,
}

/// Per-item outputs of a folder or file of clips.
pub struct PathOutput {
    pub keys: Vec<String>,
    pub output: DomainOutput,
    pub info: SideInfo,
}

/// Runs the evaluator on every item under `path` (`batch` clips per network call).
pub fn evaluate_path(
    ev: &DomainEvaluator,
    path: &Path,
    frames_per_video: Option<usize>,
    batch: usize,
    progress: &ProgressBar,
) -> Result<PathOutput> {
    let set = open_items(path, frames_per_video)?;
    if set.is_empty() {
        return Err(EvalError::input(path, "no items (images, videos or frame folders) found"));
    }
    progress.set_length(set.len() as u64);
    let mut out = DomainOutput { features: Vec::new(), logits: vec![Vec::new(); ev.heads.len()] };
    let (mut keys, mut pending, mut frames) = (Vec::new(), Vec::new(), 0u64);
    let flush = |pending: &mut Vec<wanrt_media::Video>, out: &mut DomainOutput| -> Result<()> {
        let y = ev.evaluate_clips(pending, pending.len())?;
        out.features.extend(y.features);
        out.logits.iter_mut().zip(y.logits).for_each(|(a, b)| a.extend(b));
        progress.inc(pending.len() as u64);
        pending.clear();
        Ok(())
    };
    for item in set.iter() {
        let item = item?;
        frames += item.video.frames() as u64;
        let (f, h, w) = ev.input_size();
        let v = &item.video;
        if (v.frames(), v.height(), v.width()) != (f, h, w) {
            return Err(EvalError::input(
                path.join(&item.key),
                format!(
                    "is {}x{}x{} (frames x height x width); the domain evaluator takes {f}x{h}x{w} clips \
                     (pick frames with --frames-per-video {f})",
                    v.frames(),
                    v.height(),
                    v.width()
                ),
            ));
        }
        keys.push(item.key);
        pending.push(item.video);
        if pending.len() >= batch.max(1) {
            flush(&mut pending, &mut out)?;
        }
    }
    if !pending.is_empty() {
        flush(&mut pending, &mut out)?;
    }
    let info = SideInfo { items: Some(keys.len()), frames: Some(frames), source: "path".into() };
    Ok(PathOutput { keys, output: out, info })
}

/// Fréchet distance of two `[n, d]` feature sets (float64 statistics, as FID).
pub fn feature_fd(a: &[f32], b: &[f32], d: usize, what: (&Path, &Path)) -> Result<f64> {
    let stats = |f: &[f32], p: &Path| {
        let mut s = FeatureSums::new(d);
        s.add_rows(f)?;
        s.stats().map_err(|e| match e {
            EvalError::TooFew { need, found, .. } => {
                EvalError::TooFew { what: format!("items under {} for the domain FD", p.display()), need, found }
            }
            e => e,
        })
    };
    frechet_distance_stats(&stats(a, what.0)?, &stats(b, what.1)?)
}

/// `wanrt eval domain`.
pub fn domain_eval(
    ev: &DomainEvaluator,
    videos: &Path,
    prompts: Option<&Path>,
    real: Option<&Path>,
    frames_per_video: Option<usize>,
    batch: usize,
    progress: &ProgressBar,
) -> Result<DomainReport> {
    let captions: Option<HashMap<String, String>> = prompts.map(read_prompts).transpose()?;
    let v = evaluate_path(ev, videos, frames_per_video, batch, progress)?;
    let n = v.keys.len();
    let mut items = Vec::with_capacity(n);
    let mut hits = vec![0usize; ev.heads.len()];
    let mut all = 0usize;
    for (i, key) in v.keys.iter().enumerate() {
        let pred = ev.predict(&v.output, i);
        let predicted =
            Ordered(ev.heads.iter().zip(&pred).map(|(h, &c)| (h.name.clone(), h.classes[c].clone())).collect());
        let (caption, correct) = match (&captions, prompts) {
            (Some(map), Some(pp)) => {
                let cap = map
                    .get(key)
                    .or_else(|| map.get(key.trim_end_matches('/')))
                    .ok_or_else(|| EvalError::input(pp, format!("no caption for item `{key}`")))?;
                if ev.template.is_none() {
                    return Err(EvalError::input(
                        ev.dir.join("config.json"),
                        "has no `caption_template`: prompt accuracy needs one",
                    ));
                }
                let labels = ev.parse_caption(cap).ok_or_else(|| {
                    EvalError::input(pp, format!("caption of `{key}` does not fit the evaluator's template: {cap:?}"))
                })?;
                let mut ok = true;
                for (h, (&p, &l)) in pred.iter().zip(&labels).enumerate() {
                    if p == l {
                        hits[h] += 1;
                    } else {
                        ok = false;
                    }
                }
                all += ok as usize;
                (Some(cap.clone()), Some(ok))
            }
            _ => (None, None),
        };
        items.push(DomainItem { file: key.clone(), caption, predicted, correct });
    }
    let (prompt_accuracy, attributes) = if captions.is_some() {
        let acc = Ordered(ev.heads.iter().zip(&hits).map(|(h, &k)| (h.name.clone(), k as f64 / n as f64)).collect());
        (Some(all as f64 / n as f64), Some(acc))
    } else {
        (None, None)
    };
    let (fd, real_info) = match real {
        Some(rp) => {
            progress.reset();
            let r = evaluate_path(ev, rp, frames_per_video, batch, progress)?;
            let fd = feature_fd(&v.output.features, &r.output.features, ev.feature_dim, (videos, rp))?;
            (Some(fd), Some(r.info))
        }
        None => (None, None),
    };
    Ok(DomainReport { prompt_accuracy, attributes, fd, videos: v.info, real: real_info, items })
}

//! `model_index.json` of a diffusers folder, as `DiffusionPipeline.from_pretrained` reads it
//! (diffusers 0.42.1 `pipeline_utils.py`): `_class_name` names the pipeline, and each component
//! is a `[library, class]` pair (or `[null, null]` when absent).
//!
//! wanrt runs Wan text-to-video and image-to-video pipelines, with one expert or two (Wan2.2
//! A14B), and with per-token timesteps (Wan2.2 TI2V-5B: `expand_timesteps`). The file is checked
//! before any weights are read: a garbage file or another pipeline class (VACE, a non-Wan model)
//! is an error naming what was found — never a folder that loads and then makes the wrong video.

use crate::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// The file in a diffusers folder.
pub const INDEX_FILE: &str = "model_index.json";

/// Pipeline classes whose components and call wanrt implements.
const SUPPORTED: &[&str] = &["WanPipeline", "WanImageToVideoPipeline"];

/// What wanrt takes from the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineIndex {
    /// Two-expert pipelines: `transformer` runs while `t ≥ boundary_ratio · num_train_timesteps`,
    /// `transformer_2` after.
    pub boundary_ratio: Option<f64>,
    pub has_transformer_2: bool,
    /// Wan2.2 TI2V-5B: per-token timesteps, and image-to-video by replacing the first latent frame.
    pub expand_timesteps: bool,
}

/// The components a folder must describe, with the class each is expected to be
/// (alternatives accepted by diffusers for the same component).
const COMPONENTS: &[(&str, &[&str])] = &[
    ("transformer", &["WanTransformer3DModel"]),
    ("vae", &["AutoencoderKLWan"]),
    ("text_encoder", &["UMT5EncoderModel"]),
    ("tokenizer", &["T5Tokenizer", "T5TokenizerFast", "AutoTokenizer"]),
    ("scheduler", &["UniPCMultistepScheduler", "FlowMatchEulerDiscreteScheduler"]),
];

/// Components an image-to-video folder may describe (Wan2.1 I2V has them, Wan2.2's are null).
const IMAGE_COMPONENTS: &[(&str, &[&str])] =
    &[("image_encoder", &["CLIPVisionModel"]), ("image_processor", &["CLIPImageProcessor"])];

/// Reads and checks `dir/model_index.json` when the folder has one (a folder with only
/// `transformer/` and friends is accepted, as diffusers' component loaders accept it).
pub fn read(dir: &Path) -> Result<PipelineIndex> {
    let path = dir.join(INDEX_FILE);
    if !path.is_file() {
        return Ok(PipelineIndex::default());
    }
    let meta = std::fs::metadata(&path).map_err(|e| Error::file(&path, format!("cannot read: {e}")))?;
    if meta.len() > 1 << 20 {
        return Err(Error::file(&path, format!("{} bytes is far too large for a pipeline index", meta.len())));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, format!("cannot read: {e}")))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("not valid JSON: {e}")))?;
    check_value(&value).map_err(|m| Error::file(&path, m))
}

fn check_value(v: &Value) -> std::result::Result<PipelineIndex, String> {
    let obj = v.as_object().ok_or("expected a JSON object {\"_class_name\": …, \"transformer\": [lib, class], …}")?;
    let class = match obj.get("_class_name") {
        Some(Value::String(c)) if SUPPORTED.contains(&c.as_str()) => c.as_str(),
        Some(Value::String(c)) => {
            return Err(format!(
                "pipeline `{c}` is not supported: wanrt runs Wan folders of `WanPipeline` or `WanImageToVideoPipeline`"
            ))
        }
        Some(other) => return Err(format!("`_class_name` must be a string, found {other}")),
        None => return Err("`_class_name` is missing (expected \"WanPipeline\")".into()),
    };
    for (name, classes) in COMPONENTS {
        match component(obj.get(*name)).map_err(|m| format!("`{name}`: {m}"))? {
            Some(class) if !classes.contains(&class) => {
                return Err(format!("`{name}` is a `{class}`; expected {}", classes.join(" or ")));
            }
            Some(_) => {}
            None => return Err(format!("`{name}` is missing or null: a Wan folder needs it")),
        }
    }
    for (name, classes) in IMAGE_COMPONENTS {
        match component(obj.get(*name)).map_err(|m| format!("`{name}`: {m}"))? {
            Some(_) if class != "WanImageToVideoPipeline" => {
                return Err(format!("`{name}` belongs to an image-to-video pipeline, not a `{class}`"));
            }
            Some(c) if !classes.contains(&c) => {
                return Err(format!("`{name}` is a `{c}`; expected {}", classes.join(" or ")));
            }
            _ => {}
        }
    }
    // Wan2.2 TI2V-5B: per-token timesteps.
    let expand_timesteps = match obj.get("expand_timesteps") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("`expand_timesteps` must be true or false, found {other}")),
    };
    // Wan2.2 A14B: a second expert for the low-noise steps, switched at boundary_ratio.
    let has_transformer_2 = match component(obj.get("transformer_2")).map_err(|m| format!("`transformer_2`: {m}"))? {
        Some("WanTransformer3DModel") => true,
        Some(other) => return Err(format!("`transformer_2` is a `{other}`; expected WanTransformer3DModel")),
        None => false,
    };
    let boundary_ratio = match obj.get("boundary_ratio") {
        None | Some(Value::Null) => None,
        Some(b) => match b.as_f64() {
            Some(r) if (0.0..=1.0).contains(&r) => Some(r),
            _ => return Err(format!("`boundary_ratio` {b} must be a number in [0, 1]")),
        },
    };
    if boundary_ratio.is_some() != has_transformer_2 {
        return Err(
            "a two-expert pipeline needs both `boundary_ratio` and a `transformer_2` (a one-expert pipeline neither)"
                .into(),
        );
    }
    if expand_timesteps && has_transformer_2 {
        return Err("`expand_timesteps` (Wan2.2 TI2V) with two experts is no released Wan model".into());
    }
    Ok(PipelineIndex { boundary_ratio, has_transformer_2, expand_timesteps })
}

/// The class of a `[library, class]` entry; `None` for an absent or `[null, null]` component.
fn component(v: Option<&Value>) -> std::result::Result<Option<&str>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => match a.as_slice() {
            [Value::Null, Value::Null] => Ok(None),
            [Value::String(_), Value::String(class)] => Ok(Some(class)),
            _ => Err(format!("expected [library, class] strings, found {}", Value::Array(a.clone()))),
        },
        Some(other) => Err(format!("expected [library, class], found {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t2v() -> Value {
        json!({
            "_class_name": "WanPipeline", "_diffusers_version": "0.42.1",
            "boundary_ratio": null, "expand_timesteps": false,
            "scheduler": ["diffusers", "UniPCMultistepScheduler"],
            "text_encoder": ["transformers", "UMT5EncoderModel"],
            "tokenizer": ["transformers", "T5Tokenizer"],
            "transformer": ["diffusers", "WanTransformer3DModel"],
            "transformer_2": [null, null],
            "vae": ["diffusers", "AutoencoderKLWan"]
        })
    }

    #[test]
    fn the_demo_index_passes_and_garbage_does_not() {
        assert!(check_value(&t2v()).is_ok());
        let cases: Vec<(Value, &str)> = vec![
            (json!([1, 2]), "expected a JSON object"),
            (json!({}), "`_class_name` is missing"),
            (json!({"_class_name": 3}), "must be a string"),
            (json!({"_class_name": "WanVACEPipeline"}), "not supported"),
            (json!({"_class_name": "StableDiffusionPipeline"}), "not supported"),
        ];
        for (v, want) in cases {
            let e = check_value(&v).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
        let edit = |k: &str, v: Value| {
            let mut x = t2v();
            x[k] = v;
            x
        };
        let err = |x: Value| check_value(&x).unwrap_err();
        assert!(err(edit("vae", json!(["diffusers", "AutoencoderKL"]))).contains("expected AutoencoderKLWan"));
        assert!(err(edit("transformer", json!("diffusers"))).contains("expected [library, class]"));
        assert!(err(edit("transformer", json!([null, null]))).contains("needs it"));
        let expert = json!(["diffusers", "WanTransformer3DModel"]);
        assert!(err(edit("transformer_2", expert.clone())).contains("two-expert"));
        assert!(err(edit("boundary_ratio", json!(0.875))).contains("two-expert"));
        let ti2v = check_value(&edit("expand_timesteps", json!(true))).unwrap();
        assert!(ti2v.expand_timesteps && !ti2v.has_transformer_2);
        assert!(err(edit("expand_timesteps", json!("yes"))).contains("true or false"));
        assert!(err(edit("image_encoder", json!(["transformers", "CLIPVisionModel"]))).contains("image-to-video"));
        let mut moe = edit("transformer_2", expert);
        moe["boundary_ratio"] = json!(0.875);
        assert_eq!(
            check_value(&moe).unwrap(),
            PipelineIndex { boundary_ratio: Some(0.875), has_transformer_2: true, expand_timesteps: false }
        );
        moe["expand_timesteps"] = json!(true);
        assert!(err(moe.clone()).contains("two experts"));
        moe["expand_timesteps"] = json!(false);
        moe["boundary_ratio"] = json!(1.5);
        assert!(err(moe).contains("[0, 1]"));
        let mut i2v = edit("_class_name", json!("WanImageToVideoPipeline"));
        i2v["image_encoder"] = json!(["transformers", "CLIPVisionModel"]);
        assert!(check_value(&i2v).is_ok());
        i2v["image_processor"] = json!(["transformers", "SiglipImageProcessor"]);
        assert!(err(i2v).contains("expected CLIPImageProcessor"));
    }
}

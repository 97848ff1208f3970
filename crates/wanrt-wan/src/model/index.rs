//! `model_index.json` of a diffusers folder, as `DiffusionPipeline.from_pretrained` reads it
//! (diffusers 0.42.1 `pipeline_utils.py`): `_class_name` names the pipeline, and each component
//! is a `[library, class]` pair (or `[null, null]` when absent).
//!
//! wanrt runs Wan text-to-video pipelines. The file is checked before any weights are read: a
//! garbage file, another pipeline class (image-to-video, VACE, a non-Wan model) or a Wan2.2
//! two-expert / expanded-timestep variant is an error naming what was found — never a folder that
//! loads and then makes the wrong video.

use crate::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// The file in a diffusers folder.
pub const INDEX_FILE: &str = "model_index.json";

/// Pipeline classes whose components and call wanrt implements.
const SUPPORTED: &[&str] = &["WanPipeline"];

/// The components a text-to-video folder must describe, with the class each is expected to be
/// (alternatives accepted by diffusers for the same component).
const COMPONENTS: &[(&str, &[&str])] = &[
    ("transformer", &["WanTransformer3DModel"]),
    ("vae", &["AutoencoderKLWan"]),
    ("text_encoder", &["UMT5EncoderModel"]),
    ("tokenizer", &["T5Tokenizer", "T5TokenizerFast", "AutoTokenizer"]),
    ("scheduler", &["UniPCMultistepScheduler", "FlowMatchEulerDiscreteScheduler"]),
];

/// Checks `dir/model_index.json` when the folder has one (a folder with only `transformer/`
/// and friends is accepted, as diffusers' component loaders accept it).
pub fn check(dir: &Path) -> Result<()> {
    let path = dir.join(INDEX_FILE);
    if !path.is_file() {
        return Ok(());
    }
    let meta = std::fs::metadata(&path).map_err(|e| Error::file(&path, format!("cannot read: {e}")))?;
    if meta.len() > 1 << 20 {
        return Err(Error::file(&path, format!("{} bytes is far too large for a pipeline index", meta.len())));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, format!("cannot read: {e}")))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("not valid JSON: {e}")))?;
    check_value(&value).map_err(|m| Error::file(&path, m))
}

fn check_value(v: &Value) -> std::result::Result<(), String> {
    let obj = v.as_object().ok_or("expected a JSON object {\"_class_name\": …, \"transformer\": [lib, class], …}")?;
    match obj.get("_class_name") {
        Some(Value::String(c)) if SUPPORTED.contains(&c.as_str()) => {}
        Some(Value::String(c)) => {
            return Err(format!(
                "pipeline `{c}` is not supported: wanrt runs Wan text-to-video folders (`WanPipeline`)"
            ))
        }
        Some(other) => return Err(format!("`_class_name` must be a string, found {other}")),
        None => return Err("`_class_name` is missing (expected \"WanPipeline\")".into()),
    }
    for (name, classes) in COMPONENTS {
        match component(obj.get(*name)).map_err(|m| format!("`{name}`: {m}"))? {
            Some(class) if !classes.contains(&class) => {
                return Err(format!("`{name}` is a `{class}`; expected {}", classes.join(" or ")));
            }
            Some(_) => {}
            None => return Err(format!("`{name}` is missing or null: a text-to-video folder needs it")),
        }
    }
    // Wan2.2 A14B: a second expert for the low-noise steps; TI2V-5B: per-token timesteps.
    if component(obj.get("transformer_2")).map_err(|m| format!("`transformer_2`: {m}"))?.is_some() {
        return Err("`transformer_2` (Wan2.2's second expert) is not supported".into());
    }
    if obj.get("expand_timesteps").is_some_and(|x| x.as_bool() == Some(true)) {
        return Err("`expand_timesteps: true` (Wan2.2 TI2V) is not supported".into());
    }
    match obj.get("boundary_ratio") {
        None | Some(Value::Null) => Ok(()),
        Some(b) => Err(format!("`boundary_ratio` {b} (Wan2.2's two-expert switch) is not supported")),
    }
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
            (json!({"_class_name": "WanImageToVideoPipeline"}), "not supported"),
            (json!({"_class_name": "StableDiffusionPipeline"}), "not supported"),
        ];
        for (v, want) in cases {
            let e = check_value(&v).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
        let edit = |k: &str, v: Value| {
            let mut x = t2v();
            x[k] = v;
            check_value(&x).unwrap_err()
        };
        assert!(edit("vae", json!(["diffusers", "AutoencoderKL"])).contains("expected AutoencoderKLWan"));
        assert!(edit("transformer", json!("diffusers")).contains("expected [library, class]"));
        assert!(edit("transformer", json!([null, null])).contains("needs it"));
        assert!(edit("transformer_2", json!(["diffusers", "WanTransformer3DModel"])).contains("second expert"));
        assert!(edit("boundary_ratio", json!(0.875)).contains("two-expert"));
        assert!(edit("expand_timesteps", json!(true)).contains("TI2V"));
    }
}

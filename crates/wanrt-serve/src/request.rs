//! `POST /v1/videos`: the request body (JSON, or multipart form fields) → validated,
//! fully resolved [`JobParams`]. Every refusal names the offending field.

use rand::Rng;
use serde_json::{Map, Value};
use wanrt_wan::pipeline::GenerateParams;

use crate::api_error::{ApiError, ApiResult};
use crate::job::JobParams;
use crate::models::Models;

/// Fields a request may carry (OpenAI's video API plus the diffusion parameters).
pub const FIELDS: [&str; 15] = [
    "prompt",
    "negative_prompt",
    "model",
    "size",
    "width",
    "height",
    "num_frames",
    "seconds",
    "fps",
    "num_inference_steps",
    "guidance_scale",
    "seed",
    "image",
    "input_reference",
    "loras",
];

/// Bounds on what one request may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_prompt_chars: usize,
    pub max_side: usize,
    pub max_frames: usize,
    pub max_steps: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_prompt_chars: 2000, max_side: 4096, max_frames: 1025, max_steps: 1000 }
    }
}

fn invalid(param: &str, msg: impl Into<String>) -> ApiError {
    ApiError::invalid(Some(param), msg)
}

/// A non-negative integer, given as a JSON number or a string of digits (form fields).
fn uint(fields: &Map<String, Value>, key: &str) -> ApiResult<Option<u64>> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_u64().map(Some).ok_or_else(|| invalid(key, format!("{key} must be a non-negative integer, got {n}")))
        }
        Some(Value::String(s)) => s
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| invalid(key, format!("{key} must be a non-negative integer, got '{s}'"))),
        Some(v) => Err(invalid(key, format!("{key} must be a non-negative integer, got {v}"))),
    }
}

/// A finite number, given as a JSON number or a numeric string.
fn number(fields: &Map<String, Value>, key: &str) -> ApiResult<Option<f64>> {
    let v = match fields.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    match v {
        Some(x) if x.is_finite() => Ok(Some(x)),
        _ => Err(invalid(key, format!("{key} must be a number"))),
    }
}

fn string<'a>(fields: &'a Map<String, Value>, key: &str) -> ApiResult<Option<&'a str>> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(key, format!("{key} must be a string"))),
    }
}

fn size_usize(key: &str, v: u64) -> ApiResult<usize> {
    usize::try_from(v).map_err(|_| invalid(key, format!("{key} is too large")))
}

/// "832x480" → (width, height).
fn parse_size(s: &str) -> ApiResult<(usize, usize)> {
    let bad = || invalid("size", format!("size must be \"WIDTHxHEIGHT\" (e.g. \"832x480\"), got '{s}'"));
    let (w, h) = s.trim().split_once(['x', 'X', '*']).ok_or_else(bad)?;
    let parse = |t: &str| -> ApiResult<usize> {
        if t.is_empty() || t.len() > 6 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse().map_err(|_| bad())
    };
    Ok((parse(w)?, parse(h)?))
}

/// Validates a request and applies the chosen model's defaults.
pub fn parse(fields: &Map<String, Value>, models: &Models, limits: &Limits) -> ApiResult<JobParams> {
    if let Some(k) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid(k, format!("unknown parameter '{k}' (accepted: {})", FIELDS.join(", "))));
    }
    let prompt = string(fields, "prompt")?.ok_or_else(|| invalid("prompt", "prompt is required"))?;
    if prompt.trim().is_empty() {
        return Err(invalid("prompt", "prompt must not be empty"));
    }
    for (key, text) in [("prompt", Some(prompt)), ("negative_prompt", string(fields, "negative_prompt")?)] {
        if text.is_some_and(|t| t.contains('\0')) {
            return Err(invalid(key, format!("{key} must not contain NUL characters")));
        }
    }
    let chars = prompt.chars().count();
    if chars > limits.max_prompt_chars {
        return Err(invalid(
            "prompt",
            format!("prompt is too long: {chars} characters, at most {} allowed", limits.max_prompt_chars),
        ));
    }
    let negative = string(fields, "negative_prompt")?;
    if let Some(n) = negative {
        let c = n.chars().count();
        if c > limits.max_prompt_chars {
            return Err(invalid(
                "negative_prompt",
                format!("negative_prompt is too long: {c} characters, at most {} allowed", limits.max_prompt_chars),
            ));
        }
    }
    let loras = match fields.get("loras") {
        None => Vec::new(),
        Some(v) => crate::adapters::parse(v, models.lora_dir()).map_err(|m| invalid("loras", m))?,
    };
    let model_name = string(fields, "model")?;
    let served = models.find(model_name).ok_or_else(|| {
        invalid(
            "model",
            format!("unknown model '{}' (this server has: {})", model_name.unwrap_or(""), models.names().join(", ")),
        )
    })?;
    // Image-conditioned models (I2V, FLF2V, Wan2.2 TI2V) would take one, but jobs do not carry
    // images yet: refused either way, saying which.
    let takes_images = served.model.takes_image_latent() || served.model.expand_timesteps;
    for key in ["image", "input_reference"] {
        if fields.get(key).is_some_and(|v| !v.is_null()) {
            let msg = if takes_images {
                format!(
                    "model '{}' takes an input image, but serve does not pass images to models yet (use `wanrt \
                     generate --image`)",
                    served.name
                )
            } else {
                format!("model '{}' is text-to-video: {key} needs an image-to-video model", served.name)
            };
            return Err(invalid(key, msg));
        }
    }

    // Size: "WxH", or width and height.
    let (mut width, mut height) = (None, None);
    if let Some(s) = string(fields, "size")? {
        let (w, h) = parse_size(s)?;
        (width, height) = (Some(w), Some(h));
    }
    for (key, slot) in [("width", &mut width), ("height", &mut height)] {
        if let Some(v) = uint(fields, key)? {
            let v = size_usize(key, v)?;
            if slot.is_some_and(|s| s != v) {
                let size = fields.get("size").and_then(Value::as_str).unwrap_or("");
                return Err(invalid(key, format!("{key} {v} conflicts with size '{size}'")));
            }
            *slot = Some(v);
        }
    }
    for (key, v) in [("width", width), ("height", height)] {
        if let Some(v) = v {
            if v == 0 || v > limits.max_side {
                let param = if fields.contains_key("size") { "size" } else { key };
                return Err(invalid(param, format!("{key} must be between 16 and {}, got {v}", limits.max_side)));
            }
        }
    }

    // Length: num_frames, or seconds at fps.
    let fps = match number(fields, "fps")? {
        Some(f) if !(f > 0.0 && f <= 240.0) => return Err(invalid("fps", format!("fps must be in (0, 240], got {f}"))),
        Some(f) => f,
        None => served.fps,
    };
    let mut num_frames = uint(fields, "num_frames")?.map(|v| size_usize("num_frames", v)).transpose()?;
    if let Some(secs) = number(fields, "seconds")? {
        if num_frames.is_some() {
            return Err(invalid("seconds", "give num_frames or seconds, not both"));
        }
        if !(secs > 0.0 && secs <= 3600.0) {
            return Err(invalid("seconds", format!("seconds must be in (0, 3600], got {secs}")));
        }
        // Wan makes 4k+1 frames: the first frame plus `seconds · fps` more.
        num_frames = Some((secs * fps).round() as usize + 1);
    }
    if let Some(f) = num_frames {
        if f == 0 || f > limits.max_frames {
            let param = if fields.contains_key("seconds") { "seconds" } else { "num_frames" };
            return Err(invalid(param, format!("num_frames must be between 1 and {}, got {f}", limits.max_frames)));
        }
    }

    let steps = uint(fields, "num_inference_steps")?.map(|v| size_usize("num_inference_steps", v)).transpose()?;
    if let Some(s) = steps {
        if s == 0 || s > limits.max_steps {
            return Err(invalid(
                "num_inference_steps",
                format!("num_inference_steps must be between 1 and {}, got {s}", limits.max_steps),
            ));
        }
    }
    let guidance = number(fields, "guidance_scale")?;
    if let Some(g) = guidance {
        if !(0.0..=100.0).contains(&g) {
            return Err(invalid("guidance_scale", format!("guidance_scale must be in [0, 100], got {g}")));
        }
    }
    let seed = match uint(fields, "seed")? {
        Some(s) => s,
        None => rand::rng().random::<u32>() as u64,
    };

    let gp = GenerateParams {
        negative_prompt: negative.map(String::from),
        height,
        width,
        num_frames,
        steps,
        guidance,
        seed,
        ..GenerateParams::new(prompt)
    };
    let s = served.model.resolve(&gp).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.strip_prefix("shape: ").unwrap_or(&msg).to_string();
        // The model's "needs --image": the API's name of the first frame.
        let param = if msg.contains("--image") {
            "input_reference"
        } else if msg.contains("height") || msg.contains("width") {
            "size"
        } else if msg.contains("frames") {
            "num_frames"
        } else {
            "prompt"
        };
        invalid(param, msg)
    })?;
    if s.steps == 0 {
        return Err(invalid("num_inference_steps", "num_inference_steps must be at least 1"));
    }
    Ok(JobParams {
        model: served.name.clone(),
        prompt: prompt.to_string(),
        negative_prompt: s.negative_prompt,
        width: s.width,
        height: s.height,
        num_frames: s.num_frames,
        num_inference_steps: s.steps,
        guidance_scale: s.guidance,
        seed,
        fps,
        warnings: s.warnings,
        loras,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("832x480").unwrap(), (832, 480));
        assert_eq!(parse_size("32X16").unwrap(), (32, 16));
        for bad in ["832", "x480", "832x", "-32x32", "32x32x1", "1e3x32", "9999999x1"] {
            let e = parse_size(bad).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("size"), "{bad}");
        }
    }
}

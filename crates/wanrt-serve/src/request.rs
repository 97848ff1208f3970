//! `POST /v1/videos`: the request body (JSON, or multipart form fields and files) → validated,
//! fully resolved [`JobParams`] and the decoded input images. Every refusal names the offending
//! field.

use std::collections::BTreeMap;

use rand::Rng;
use serde_json::{Map, Value};
use wanrt_wan::pipeline::GenerateParams;

use crate::api_error::{ApiError, ApiResult};
use crate::inputs::{self, ImageLimits, Role, Upload};
use crate::job::JobParams;
use crate::models::Models;

/// Fields a request may carry (OpenAI's video API plus the diffusion parameters).
pub const FIELDS: [&str; 16] = [
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
    "last_image",
    "loras",
];

/// The fields that take an image: a file upload (multipart), or a data: URL / base64 string.
/// `image` is another name of OpenAI's `input_reference`, the first frame.
const IMAGE_FIELDS: [&str; 3] = ["input_reference", "image", "last_image"];

/// A request body: its fields, and the files a multipart form uploaded (by field name).
#[derive(Debug, Default)]
pub struct Form {
    pub fields: Map<String, Value>,
    pub files: BTreeMap<String, Vec<u8>>,
}

/// A validated request: the job's parameters and the images to keep with it.
#[derive(Debug)]
pub struct Submission {
    pub params: JobParams,
    pub uploads: Vec<Upload>,
}

/// Bounds on what one request may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_prompt_chars: usize,
    pub max_side: usize,
    pub max_frames: usize,
    pub max_steps: usize,
    pub image: ImageLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_prompt_chars: 2000,
            max_side: 4096,
            max_frames: 1025,
            max_steps: 1000,
            image: ImageLimits { max_bytes: 8 << 20, max_side: 4096 },
        }
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

/// The image a request gives in `field` (uploaded, or as text), decoded.
fn image(form: &Form, field: &str, role: Role, limits: &ImageLimits) -> ApiResult<Option<Upload>> {
    let bytes = match (form.files.get(field), form.fields.get(field)) {
        (Some(b), _) => b.clone(),
        (None, None | Some(Value::Null)) => return Ok(None),
        (None, Some(Value::String(s))) => inputs::from_text(field, s, limits)?,
        (None, Some(_)) => {
            return Err(invalid(field, format!("{field} must be a file upload, a data: URL or a base64 string")))
        }
    };
    let image = inputs::decode(field, &bytes, limits)?;
    Ok(Some(Upload { role, bytes, image }))
}

/// The pipeline's words for the images (its command-line flags) in the API's.
fn api_words(msg: &str, first_field: &str) -> String {
    msg.replace("--last-image", "last_image").replace("--image", first_field)
}

/// A pipeline refusal as the API says it: in its words, without the error kind's prefix.
fn model_message(e: &wanrt_wan::Error, first_field: &str) -> String {
    let msg = e.to_string();
    let msg = ["shape: ", "invalid config: "].iter().fold(msg.as_str(), |m, p| m.strip_prefix(p).unwrap_or(m));
    api_words(msg, first_field)
}

/// Validates a request and applies the chosen model's defaults.
pub fn parse(form: &Form, models: &Models, limits: &Limits) -> ApiResult<Submission> {
    let fields = &form.fields;
    if let Some(k) = fields.keys().chain(form.files.keys()).find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid(k, format!("unknown parameter '{k}' (accepted: {})", FIELDS.join(", "))));
    }
    if let Some(k) = form.files.keys().find(|k| !IMAGE_FIELDS.contains(&k.as_str())) {
        return Err(invalid(k, format!("{k} is a text field, not a file upload")));
    }
    if let Some(k) = form.files.keys().find(|k| fields.contains_key(*k)) {
        return Err(invalid(k, format!("{k} is given twice")));
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
    // Images: the first frame (`input_reference`, or `image`) and the last frame.
    let present = |k: &str| form.files.contains_key(k) || fields.get(k).is_some_and(|v| !v.is_null());
    if present("input_reference") && present("image") {
        return Err(invalid("image", "give input_reference or image (the same field), not both"));
    }
    let first_field = if present("image") { "image" } else { "input_reference" };
    if present("last_image") && !present(first_field) {
        return Err(invalid("last_image", "last_image needs input_reference (the first frame) too"));
    }
    let first = image(form, first_field, Role::First, &limits.image)?;
    let last = image(form, "last_image", Role::Last, &limits.image)?;

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
        image: first.as_ref().map(|u| u.image.clone()),
        last_image: last.as_ref().map(|u| u.image.clone()),
        ..GenerateParams::new(prompt)
    };
    // The images the model takes, by the pipeline's own rule (what `wanrt generate` refuses).
    served.model.check_images(&gp).map_err(|e| {
        // A text-to-video model refuses whatever image it is given; any other model either lacks its
        // first frame or objects to the last.
        let takes_images = served.model.takes_image_latent() || served.model.expand_timesteps;
        let param = if first.is_none() || !takes_images { first_field } else { "last_image" };
        invalid(param, format!("model '{}': {}", served.name, model_message(&e, first_field)))
    })?;
    let s = served.model.resolve(&gp).map_err(|e| {
        let msg = model_message(&e, first_field);
        if msg.contains("height") || msg.contains("width") {
            // Without a size the video takes the first frame's, which may not fit the model.
            if first.is_some() && height.is_none() && width.is_none() {
                return invalid(first_field, format!("{msg} (the size of {first_field}; give size to resize it)"));
            }
            return invalid("size", msg);
        }
        invalid(if msg.contains("frames") { "num_frames" } else { "prompt" }, msg)
    })?;
    if s.steps == 0 {
        return Err(invalid("num_inference_steps", "num_inference_steps must be at least 1"));
    }
    let uploads: Vec<Upload> = [first, last].into_iter().flatten().collect();
    let stored = |role: Role| uploads.iter().find(|u| u.role == role).map(Upload::stored);
    let params = JobParams {
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
        warnings: s.warnings.iter().map(|w| api_words(w, first_field)).collect(),
        loras,
        image: stored(Role::First),
        last_image: stored(Role::Last),
    };
    Ok(Submission { params, uploads })
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

//! A video job: its fully resolved parameters, its state, and its JSON view
//! (OpenAI's video object plus wanrt's extensions).

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::inputs::StoredImage;

/// Job states, as OpenAI's video API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    InProgress,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] =
        [Status::Queued, Status::InProgress, Status::Completed, Status::Failed, Status::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }
}

/// Everything a worker needs to make the video: defaults already applied and the seed
/// drawn at submission, so a re-run after a crash makes the same video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobParams {
    pub model: String,
    pub prompt: String,
    pub negative_prompt: String,
    pub width: usize,
    pub height: usize,
    pub num_frames: usize,
    pub num_inference_steps: usize,
    pub guidance_scale: f64,
    pub seed: u64,
    pub fps: f64,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Per-request LoRA adapters (`--lora-dir`), applied in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loras: Vec<crate::adapters::AdapterRef>,
    /// The first frame (`input_reference`) of an image-to-video job; its bytes are a file beside
    /// the video ([`crate::inputs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<StoredImage>,
    /// The last frame (`last_image`) of a first-last-frame job, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_image: Option<StoredImage>,
}

impl JobParams {
    /// Jobs with the same key can share transformer calls (see [`crate::engine`]).
    pub fn batch_key(&self) -> String {
        // Jobs share transformer calls only with jobs of the same adapters.
        format!(
            "{}|{}x{}|{}|{}|{}|{}",
            self.model,
            self.width,
            self.height,
            self.num_frames,
            self.num_inference_steps,
            if self.guidance_scale > 1.0 { "cfg" } else { "nocfg" },
            crate::adapters::key(&self.loras)
        )
    }

    pub fn seconds(&self) -> f64 {
        self.num_frames as f64 / self.fps
    }
}

/// A job as stored in the queue.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: String,
    pub owner: Option<String>,
    pub status: Status,
    pub params: JobParams,
    pub progress: u8,
    pub stage: Option<String>,
    pub error: Option<String>,
    /// Seconds per stage (`queue_wait`, `text_encoder`, `denoising`, `vae_decode`, `write`, `total`).
    pub timings: serde_json::Map<String, Value>,
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub completed_at: Option<f64>,
    pub attempts: i64,
    pub cancel_requested: bool,
}

impl JobRecord {
    /// OpenAI's video object, with wanrt's `parameters`, `timings`, `stage` and `warnings`.
    pub fn to_json(&self) -> Value {
        let p = &self.params;
        json!({
            "id": self.id,
            "object": "video",
            "created_at": self.created_at as i64,
            "status": self.status.as_str(),
            "model": p.model,
            "progress": self.progress,
            "prompt": p.prompt,
            "seconds": format_seconds(p.seconds()),
            "size": format!("{}x{}", p.width, p.height),
            "completed_at": self.completed_at.map(|t| t as i64),
            "expires_at": Value::Null,
            "error": self.error.as_ref().map(|m| json!({ "code": error_code(self.status), "message": m })),
            "stage": self.stage,
            "attempts": self.attempts,
            "parameters": {
                "prompt": p.prompt,
                "negative_prompt": p.negative_prompt,
                "width": p.width,
                "height": p.height,
                "num_frames": p.num_frames,
                "fps": p.fps,
                "num_inference_steps": p.num_inference_steps,
                "guidance_scale": p.guidance_scale,
                "seed": p.seed,
                "loras": p.loras,
                "input_reference": p.image.as_ref().map(image_json),
                "last_image": p.last_image.as_ref().map(image_json),
            },
            "timings": self.timings,
            "warnings": p.warnings,
        })
    }
}

/// What the API says of an input image: its size, not its bytes.
fn image_json(im: &StoredImage) -> Value {
    json!({ "width": im.width, "height": im.height, "sha256": im.sha256 })
}

fn error_code(s: Status) -> &'static str {
    match s {
        Status::Cancelled => "cancelled",
        _ => "generation_failed",
    }
}

fn format_seconds(s: f64) -> String {
    let r = (s * 100.0).round() / 100.0;
    if r.fract() == 0.0 {
        format!("{}", r as i64)
    } else {
        format!("{r}")
    }
}

/// A fresh job id: `video_` + 24 lowercase hex digits (96 random bits).
pub fn new_id() -> String {
    let mut rng = rand::rng();
    let mut s = String::from("video_");
    for _ in 0..12 {
        s.push_str(&format!("{:02x}", rng.random::<u8>()));
    }
    s
}

/// Whether `s` has the form of a job id. Anything else (path separators, dots, …)
/// is refused before it reaches the database or the file system.
pub fn is_valid_id(s: &str) -> bool {
    s.strip_prefix("video_")
        .is_some_and(|h| h.len() == 24 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_and_traversal_is_not() {
        let id = new_id();
        assert!(is_valid_id(&id), "{id}");
        assert_ne!(id, new_id());
        for bad in [
            "video_../../etc/passwd",
            "video_",
            "VIDEO_0123456789abcdef01234567",
            "video_0123456789ABCDEF01234567",
            "video_0123456789abcdef0123456",
            "video_0123456789abcdef01234567/..",
            "..%2f",
        ] {
            assert!(!is_valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn status_round_trips() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("running"), None);
    }

    #[test]
    fn seconds_format() {
        assert_eq!(format_seconds(2.0), "2");
        assert_eq!(format_seconds(17.0 / 8.0), "2.13");
    }
}

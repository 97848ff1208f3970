//! `wanrt serve` flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug, Clone)]
#[command(after_help = "The service takes jobs over HTTP (OpenAI's video API shape), keeps them in a durable \
queue and makes the videos on worker threads:\n\
  POST /v1/videos {\"prompt\": \"…\", \"size\": \"832x480\", \"num_frames\": 81, \"num_inference_steps\": 50, \
\"guidance_scale\": 5, \"seed\": 1}\n\
  GET /v1/videos/ID · GET /v1/videos/ID/content (MP4) · GET /v1/videos/ID/events (SSE) · DELETE /v1/videos/ID · \
GET /v1/videos\n\
  GET /healthz · GET /metrics (Prometheus) · GET / (web page)\n\
Image-to-video models take the first frame as input_reference (a multipart file upload, or a data: URL / \
base64 in JSON) and first-last-frame models last_image too; without a size the video takes the image's. \
Omitted fields take the model's defaults (wanrt.json beside it). With --lora-dir DIR a request may add \
\"loras\": [{\"name\": \"style\", \"scale\": 0.8}] (DIR/style.safetensors, run beside the shared weights). With --queue postgres://… any number of \
processes on any number of machines share one queue; give them one --outputs folder (a shared file system).\n\
Examples:\n  wanrt serve\n  curl -s localhost:8000/v1/videos -H 'Content-Type: application/json' -d '{\"prompt\": \"a red ball\"}'\n  \
wanrt serve --queue postgres://wanrt@db/wanrt --outputs /mnt/videos --bind 0.0.0.0:8000 --api-keys keys.txt\n  \
wanrt serve --queue postgres://wanrt@db/wanrt --outputs /mnt/videos --worker-only")]
pub struct ServeArgs {
    /// Model folder or optimized artifact to serve (repeatable; served under its folder name; the first is the
    /// default). Default: the bundled demo model.
    #[arg(long = "model")]
    pub models: Vec<PathBuf>,
    /// Address to listen on (localhost only by default; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,
    /// SQLite database of the embedded job queue (created if missing; one process per file).
    #[arg(long, default_value = "wanrt-jobs.sqlite", conflicts_with = "queue")]
    pub db: PathBuf,
    /// Shared PostgreSQL queue instead of SQLite: postgres://USER[:PASSWORD]@HOST[:PORT]/DB (also read from
    /// WANRT_QUEUE).
    #[arg(long, env = "WANRT_QUEUE")]
    pub queue: Option<String>,
    /// Folder of finished videos (<id>.mp4); shared by every process of a PostgreSQL queue.
    #[arg(long, default_value = "wanrt-videos")]
    pub outputs: PathBuf,
    /// File of API keys: one per line, `KEY` (full access) or `KEY read` (read only). Without it, no
    /// authentication (keep the default localhost --bind then).
    #[arg(long)]
    pub api_keys: Option<PathBuf>,
    /// Refuse new jobs (429) while this many are waiting.
    #[arg(long)]
    pub max_queue: Option<u64>,
    /// Run workers only, without the HTTP front (needs --queue postgres://…).
    #[arg(long, requires = "queue")]
    pub worker_only: bool,
    /// Worker pipelines in this process (0: HTTP front only).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Most compatible jobs (same model, size, frames, steps) batched through one transformer call.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Run text encoding, denoising and VAE decoding of different jobs at the same time (on | off).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub overlap: String,
    /// Working-memory budget of admission control, e.g. 8G (default: 90% of the memory available after the
    /// models are loaded). Jobs estimated to need more are refused.
    #[arg(long)]
    pub memory_budget: Option<String>,
    /// Seconds a worker's claim on a job lasts without a heartbeat (PostgreSQL: after that, another worker
    /// re-runs the job).
    #[arg(long, default_value_t = 30.0)]
    pub lease: f64,
    /// Largest request body in bytes (images included).
    #[arg(long, default_value_t = 16 << 20)]
    pub max_body: usize,
    /// Largest input image (`input_reference`, `last_image`) in bytes, as uploaded; images are also
    /// refused beyond 4096 pixels on a side.
    #[arg(long, default_value_t = 8 << 20)]
    pub max_image_bytes: usize,
    /// Longest prompt in characters.
    #[arg(long, default_value_t = 2000)]
    pub max_prompt_chars: usize,
    /// Folder of LoRA adapters requests may name (`"loras": [{"name": "style", "scale": 0.8}]`, NAME.safetensors
    /// in this folder); each runs as a low-rank side path beside the shared weights. Without it, requests with
    /// loras are refused.
    #[arg(long, value_name = "DIR")]
    pub lora_dir: Option<PathBuf>,
    /// LoRA keys that match no transformer layer: `error` fails the job naming them; `warn` skips them.
    #[arg(long, value_name = "error|warn", default_value = "error", value_parser = wanrt_wan::lora::Unmatched::parse)]
    pub lora_unmatched: wanrt_wan::lora::Unmatched,
    /// CPU threads of the compute pool (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

//! wanrt-serve: `wanrt serve`, a video generation service.
//!
//! An OpenAI-style video API ([`routes`]) in front of a durable job queue ([`queue`]:
//! SQLite embedded, PostgreSQL shared by many processes), and workers ([`worker`]) that
//! run the Wan pipeline ([`engine`]) on their own threads — batching compatible jobs
//! through the transformer and overlapping the stages of different jobs — and write each
//! video atomically to the outputs folder. A web page at `/` ([`page`]) submits prompts,
//! shows live progress and plays the finished videos.
//!
//! Every job and state change is committed to the queue before it is acknowledged; a
//! crashed process's jobs run again (same seed, same video) and complete exactly once.

pub mod adapters;
pub mod admission;
pub mod api_error;
pub mod auth;
pub mod cli;
pub mod engine;
mod error;
pub mod events;
pub mod inputs;
pub mod job;
pub mod metrics;
pub mod models;
pub mod page;
pub mod queue;
pub mod request;
pub mod routes;
pub mod worker;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};

pub use error::{Error, Result};

use cli::ServeArgs;
use models::Models;
use queue::Queue;
use worker::{Shared, WorkerConfig, Workers};

/// Runs `wanrt serve` until Ctrl-C or SIGTERM, then shuts down gracefully: the HTTP
/// front stops, running jobs stop at their next step and go back to the queue.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    if let Some(t) = args.threads {
        rayon::ThreadPoolBuilder::new().num_threads(t.max(1)).build_global().context("--threads")?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async move {
        let server = start(&args).await?;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "serving {} with {} worker(s) (batch ≤ {}, overlap {}), {} queue, videos in {}",
            server.shared.models.names().join(", "),
            args.workers,
            args.batch,
            args.overlap,
            server.shared.queue.kind(),
            args.outputs.display()
        )?;
        match server.addr {
            Some(a) => writeln!(out, "listening on http://{a}")?,
            None => writeln!(out, "worker ready (no HTTP front: --worker-only)")?,
        }
        out.flush()?;
        drop(out);
        wait_for_signal().await;
        eprintln!("shutting down: running jobs stop at their next step and go back to the queue");
        server.shutdown().await
    })
}

async fn wait_for_signal() {
    let term = async {
        #[cfg(unix)]
        {
            if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                s.recv().await;
                return;
            }
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// A running service (see [`start`]).
pub struct Server {
    /// The address bound (None with `--worker-only`).
    pub addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    workers: Option<Workers>,
    http: Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>)>,
}

impl Server {
    /// Stops the HTTP front and the workers; jobs they hold go back to the queue.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.doorbell.ring();
        if let Some((tx, task)) = self.http.take() {
            let _ = tx.send(());
            task.await.context("HTTP task")?.context("HTTP server")?;
        }
        if let Some(w) = self.workers.take() {
            tokio::task::spawn_blocking(move || w.join()).await.context("joining the workers")?;
        }
        Ok(())
    }
}

/// `hostname-pid`: names this process in the queue's `worker` column.
fn worker_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    format!("{host}-{}", std::process::id())
}

/// Removes temporary files of writes that a killed process left behind (never visible as
/// videos: they are not named `<id>.mp4`), and input images of jobs that will not run again
/// (ended, deleted, or never queued: a process killed between storing the image and queueing
/// the job). With a shared queue other processes may be writing right now, so only old ones go.
fn clean_outputs(dir: &Path, min_age: Duration, queue: &dyn Queue) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let stale = if name.starts_with(".wanrt-tmp-") {
            true
        } else if let Some(id) = inputs::owner_of(&name) {
            // A queue that cannot answer keeps the file.
            queue.get(id).is_ok_and(|r| r.is_none_or(|r| r.status.is_terminal()))
        } else {
            false
        };
        let old = e.metadata().and_then(|m| m.modified()).map(|t| t.elapsed().unwrap_or_default() >= min_age);
        if stale && old.unwrap_or(false) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Opens the queue, loads the models, starts the workers and (unless `--worker-only`)
/// the HTTP front in the background.
pub async fn start(args: &ServeArgs) -> anyhow::Result<Server> {
    if args.models.is_empty() {
        bail!("no --model given");
    }
    if !(args.lease.is_finite() && args.lease >= 1.0) {
        bail!("--lease must be at least 1 second, got {}", args.lease);
    }
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if args.worker_only && args.workers == 0 {
        bail!("--worker-only with --workers 0 would do nothing");
    }
    let keys = args.api_keys.as_deref().map(auth::ApiKeys::load).transpose()?;
    std::fs::create_dir_all(&args.outputs)
        .with_context(|| format!("--outputs {}: cannot create the folder", args.outputs.display()))?;
    let (queue_url, db) = (args.queue.clone(), args.db.clone());
    let queue: Arc<dyn Queue> = tokio::task::spawn_blocking(move || -> Result<Arc<dyn Queue>> {
        Ok(match queue_url {
            Some(url) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(Error::Input(format!(
                        "--queue must be a postgres://… URL, got '{}'",
                        url.split('@').next_back().unwrap_or("")
                    )));
                }
                Arc::new(queue::postgres::PgQueue::open(&url, 4)?)
            }
            None => Arc::new(queue::sqlite::SqliteQueue::open(&db)?),
        })
    })
    .await??;
    let min_age = if queue.kind() == "sqlite" { Duration::ZERO } else { Duration::from_secs(3600) };
    let (outputs, q) = (args.outputs.clone(), queue.clone());
    tokio::task::spawn_blocking(move || clean_outputs(&outputs, min_age, &*q)).await?;

    let dirs = args.models.clone();
    let lora_dir = args.lora_dir.clone().map(|dir| adapters::LoraDir { dir, unmatched: args.lora_unmatched });
    let models = tokio::task::spawn_blocking(move || Models::load(&dirs, |s| eprintln!("loading {s}…")))
        .await??
        .with_lora_dir(lora_dir)?;
    let budget = match &args.memory_budget {
        Some(s) => admission::parse_bytes(s).map_err(|e| anyhow::anyhow!("--memory-budget: {e}"))?,
        None => admission::available_bytes().map_or(u64::MAX, |a| a / 10 * 9),
    };
    let shared = Arc::new(Shared::new(queue, models, args.outputs.clone(), budget));
    let cfg = WorkerConfig {
        workers: args.workers,
        max_batch: args.batch,
        overlap: args.overlap == "on",
        lease_s: args.lease,
        poll: Duration::from_millis(if shared.queue.kind() == "sqlite" { 250 } else { 200 }),
        name: worker_name(),
    };
    let workers = Some(worker::start(shared.clone(), &cfg));
    if args.worker_only {
        return Ok(Server { addr: None, shared, workers, http: None });
    }
    let listener = match tokio::net::TcpListener::bind(args.bind).await {
        Ok(l) => l,
        Err(e) => {
            shared.shutdown.store(true, Ordering::SeqCst);
            shared.doorbell.ring();
            if let Some(w) = workers {
                let _ = tokio::task::spawn_blocking(move || w.join()).await;
            }
            bail!("--bind {}: cannot listen: {e}", args.bind);
        }
    };
    let addr = listener.local_addr()?;
    let app = routes::router(routes::AppState {
        shared: shared.clone(),
        keys,
        limits: request::Limits {
            max_prompt_chars: args.max_prompt_chars,
            image: inputs::ImageLimits { max_bytes: args.max_image_bytes, ..request::Limits::default().image },
            ..Default::default()
        },
        max_queue: args.max_queue,
        max_body: args.max_body,
        allowed_hosts: allowed_hosts(addr),
        workers: args.workers,
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    Ok(Server { addr: Some(addr), shared, workers, http: Some((tx, task)) })
}

/// Host names a browser may use to reach `addr` (None when bound to all interfaces).
fn allowed_hosts(addr: SocketAddr) -> Option<Vec<String>> {
    if addr.ip().is_unspecified() {
        return None;
    }
    let mut hosts = vec![addr.to_string()];
    if addr.ip().is_loopback() {
        hosts.push(format!("localhost:{}", addr.port()));
    }
    if addr.port() == 80 {
        hosts.push(addr.ip().to_string());
        if addr.ip().is_loopback() {
            hosts.push("localhost".into());
        }
    }
    Some(hosts)
}

//! Workers: claim jobs from the queue and make their videos on dedicated threads (never
//! on the async runtime's), in three stages — text encoding, batched denoising, VAE
//! decoding + MP4 writing. With `overlap` each stage has its own thread and hands its
//! batch to the next through a rendezvous channel, so the text encoding and the VAE
//! decode of one batch run while the transformer works on another; without it one
//! thread runs the stages in turn (the one-at-a-time baseline of the load benchmark).
//!
//! Progress lives in memory ([`Live`]); a heartbeat thread writes it to the queue every
//! [`HEARTBEAT`], renewing the leases, and learns there of cancels made by other
//! processes. A cancel (local or remote) stops the job at the next denoising step;
//! shutdown stops every job at the next step and gives it back to the queue.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use wanrt_media::Mp4Options;
use wanrt_nn::Tensor;

use crate::adapters::{AdapterCache, AdapterRef};
use crate::admission;
use crate::engine::{self, Encoded, Next};
use crate::events::{Hub, JobEvent};
use crate::job::{now, Status};
use crate::metrics::Metrics;
use crate::models::{Models, ServedModel};
use crate::queue::{Ack, Claim, Finished, Outcome, Queue};

/// How often running jobs' progress is written to the queue (and their leases renewed).
pub const HEARTBEAT: Duration = Duration::from_millis(400);

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Independent pipelines in this process (0: HTTP front only).
    pub workers: usize,
    /// Most jobs batched through one transformer call.
    pub max_batch: usize,
    /// Overlap the stages (threads) or run them in turn.
    pub overlap: bool,
    /// Seconds a claim stays valid without a heartbeat.
    pub lease_s: f64,
    /// How long an idle worker waits before asking the queue again.
    pub poll: Duration,
    /// Name of this process in the queue (`worker` column).
    pub name: String,
}

/// A running job's in-memory state, shared with the heartbeat and the API.
pub struct Live {
    pub claim: Claim,
    cancel: AtomicBool,
    lost: AtomicBool,
    progress: AtomicU8,
    stage: Mutex<String>,
}

impl Live {
    fn stop(&self, shutdown: bool) -> Option<Stop> {
        if self.lost.load(Ordering::SeqCst) {
            Some(Stop::Lost)
        } else if self.cancel.load(Ordering::SeqCst) {
            Some(Stop::Cancel)
        } else if shutdown {
            Some(Stop::Shutdown)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Cancel,
    Lost,
    Shutdown,
}

/// Wakes idle workers when a job is submitted in this process.
#[derive(Default)]
pub struct Doorbell {
    rung: Mutex<u64>,
    cv: Condvar,
}

impl Doorbell {
    pub fn ring(&self) {
        *self.rung.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.cv.notify_all();
    }

    fn wait(&self, seen: &mut u64, timeout: Duration) {
        let g = self.rung.lock().unwrap_or_else(|p| p.into_inner());
        let (g, _) = self.cv.wait_timeout_while(g, timeout, |n| *n == *seen).unwrap_or_else(|p| p.into_inner());
        *seen = *g;
    }
}

/// What the workers, the heartbeat and the HTTP front share.
pub struct Shared {
    pub queue: Arc<dyn Queue>,
    pub models: Models,
    pub hub: Hub,
    pub metrics: Arc<Metrics>,
    pub outputs: PathBuf,
    pub doorbell: Doorbell,
    pub shutdown: AtomicBool,
    pub budget: u64,
    running: Mutex<HashMap<String, Arc<Live>>>,
    /// Transformers adapted to per-request LoRAs.
    adapters: AdapterCache,
}

impl Shared {
    pub fn new(queue: Arc<dyn Queue>, models: Models, outputs: PathBuf, budget: u64) -> Shared {
        Shared {
            queue,
            models,
            hub: Hub::default(),
            metrics: Arc::new(Metrics::default()),
            outputs,
            doorbell: Doorbell::default(),
            shutdown: AtomicBool::new(false),
            budget,
            running: Mutex::new(HashMap::new()),
            adapters: AdapterCache::default(),
        }
    }

    /// Builds (and keeps for the workers) `model`'s transformer adapted to `loras`: a file that is
    /// no LoRA of this model fails here, when the request is made, naming the adapter.
    pub fn check_adapters(&self, model: &ServedModel, loras: &[AdapterRef]) -> crate::Result<()> {
        self.adapters.transformer(model, self.models.lora_dir(), loras).map(|_| ())
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Live>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Jobs held by this process's workers.
    pub fn running_count(&self) -> usize {
        self.running().len()
    }

    /// Tells a job running here to stop at its next step (after the queue recorded the cancel).
    pub fn cancel_local(&self, id: &str) {
        if let Some(l) = self.running().get(id) {
            l.cancel.store(true, Ordering::SeqCst);
        }
    }

    /// Where a job's video is (whether or not it exists yet).
    pub fn output_path(&self, id: &str) -> PathBuf {
        output_path(&self.outputs, id)
    }

    fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }
}

pub fn output_path(outputs: &Path, id: &str) -> PathBuf {
    outputs.join(format!("{id}.mp4"))
}

/// A job held by a worker.
struct Job {
    live: Arc<Live>,
    model: Arc<ServedModel>,
    timings: Map<String, Value>,
}

impl Job {
    fn id(&self) -> &str {
        &self.live.claim.id
    }

    /// Updates progress in memory and tells this process's event subscribers.
    fn report(&self, sh: &Shared, stage: &str, progress: u8, step: Option<(usize, usize)>) {
        self.live.progress.store(progress, Ordering::SeqCst);
        *self.live.stage.lock().unwrap_or_else(|p| p.into_inner()) = stage.to_string();
        sh.hub.publish(JobEvent {
            id: self.id().to_string(),
            status: Status::InProgress.as_str(),
            progress,
            stage: Some(stage.to_string()),
            step: step.map(|s| s.0),
            steps: step.map(|s| s.1),
        });
    }

    fn time(&mut self, sh: &Shared, stage: &str, secs: f64) {
        self.timings.insert(stage.to_string(), Value::from(secs));
        sh.metrics.stage(stage, secs);
    }
}

/// Ends a job in the queue and in this process.
fn finish(sh: &Shared, job: Job, outcome: Outcome) {
    let claim = &job.live.claim;
    let result = sh.queue.finish(claim, &outcome);
    sh.running().remove(&claim.id);
    let status = match (&result, &outcome) {
        (Err(e), _) => {
            eprintln!("error: job {}: recording its end: {e}", claim.id);
            return;
        }
        (Ok(Finished::Lost), _) => return,
        (Ok(Finished::Cancelled), _) => Status::Cancelled,
        (Ok(Finished::Recorded), Outcome::Completed { .. }) => Status::Completed,
        (Ok(Finished::Recorded), Outcome::Failed { .. }) => Status::Failed,
        (Ok(Finished::Recorded), Outcome::Cancelled) => Status::Cancelled,
        (Ok(Finished::Recorded), Outcome::Requeue) => Status::Queued,
    };
    if status == Status::Cancelled && matches!(outcome, Outcome::Completed { .. }) {
        let _ = std::fs::remove_file(sh.output_path(&claim.id));
    }
    if status != Status::Queued {
        sh.metrics.finished(status);
        // The job will not run again: its input images go.
        crate::inputs::remove(&sh.outputs, &claim.id);
    }
    if status == Status::Completed {
        sh.metrics.latency((now() - claim.created_at).max(0.0));
    }
    sh.hub.publish(JobEvent {
        id: claim.id.clone(),
        status: status.as_str(),
        progress: if status == Status::Completed { 100 } else { job.live.progress.load(Ordering::SeqCst) },
        stage: None,
        step: None,
        steps: None,
    });
}

/// Ends a job that a stop reason interrupted.
fn stopped(sh: &Shared, job: Job, why: Stop) {
    match why {
        Stop::Cancel => finish(sh, job, Outcome::Cancelled),
        Stop::Shutdown => finish(sh, job, Outcome::Requeue),
        Stop::Lost => {
            sh.running().remove(job.id());
        }
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Runs `f`; an error or a panic becomes a one-line message.
fn guarded<T>(f: impl FnOnce() -> crate::Result<T>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(p) => Err(format!("internal error: {}", panic_message(p))),
    }
}

// ------------------------------------------------------------------ stages

/// Claims a batch (waiting while the queue is empty); None once shutting down.
fn claim(sh: &Shared, cfg: &WorkerConfig, seen: &mut u64, last_reap: &mut Instant) -> Option<Vec<Job>> {
    let names = sh.models.names();
    loop {
        if sh.is_shutdown() {
            return None;
        }
        if last_reap.elapsed() > Duration::from_secs(2) {
            *last_reap = Instant::now();
            match sh.queue.requeue_expired() {
                Ok(ids) if !ids.is_empty() => {
                    eprintln!("re-queued {} job(s) whose worker stopped: {ids:?}", ids.len());
                    // Those out of attempts failed instead: their input images go.
                    for id in &ids {
                        if sh.queue.get(id).ok().flatten().is_some_and(|r| r.status.is_terminal()) {
                            crate::inputs::remove(&sh.outputs, id);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => eprintln!("error: re-queueing expired jobs: {e}"),
            }
        }
        let claims = match sh.queue.claim(&cfg.name, &names, cfg.max_batch, cfg.lease_s) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: claiming jobs: {e}");
                std::thread::sleep(cfg.poll);
                continue;
            }
        };
        if claims.is_empty() {
            sh.doorbell.wait(seen, cfg.poll);
            continue;
        }
        let mut jobs = Vec::new();
        let mut budget_left = sh.budget;
        for c in claims {
            let Some(model) = sh.models.find(Some(&c.params.model)).cloned() else {
                // Claimed by model name, so this cannot happen; give it back rather than lose it.
                let _ = sh.queue.finish(&c, &Outcome::Requeue);
                continue;
            };
            let need = admission::estimate_bytes(&model.model, &c.params);
            let live = Arc::new(Live {
                claim: c,
                cancel: AtomicBool::new(false),
                lost: AtomicBool::new(false),
                progress: AtomicU8::new(0),
                stage: Mutex::new("starting".into()),
            });
            let mut job = Job { live, model, timings: Map::new() };
            // A batch takes only as many jobs as the memory budget holds (always at least one),
            // and a model with a step cache runs alone (the cache decides per transformer call).
            let cached = job.model.model.defaults.cache_threshold.is_some_and(|t| t > 0.0);
            if !jobs.is_empty() && (need > budget_left || cached) {
                let _ = sh.queue.finish(&job.live.claim, &Outcome::Requeue);
                continue;
            }
            budget_left = budget_left.saturating_sub(need);
            let wait = (now() - job.live.claim.created_at).max(0.0);
            job.time(sh, "queue_wait", wait);
            sh.running().insert(job.id().to_string(), job.live.clone());
            jobs.push(job);
        }
        if !jobs.is_empty() {
            sh.metrics.batch(jobs.len());
            return Some(jobs);
        }
    }
}

/// Stage 1 for each job of a batch; jobs that fail or were cancelled meanwhile end here.
fn encode_stage(sh: &Shared, jobs: Vec<Job>) -> Vec<(Job, Encoded)> {
    let mut out = Vec::with_capacity(jobs.len());
    for mut job in jobs {
        if let Some(why) = job.live.stop(sh.is_shutdown()) {
            stopped(sh, job, why);
            continue;
        }
        job.report(sh, "text_encoder", 1, None);
        let t0 = Instant::now();
        let claim = &job.live.claim;
        let images = match guarded(|| crate::inputs::load(&sh.outputs, &claim.id, &claim.params)) {
            Ok(images) => images,
            Err(e) => {
                finish(sh, job, Outcome::Failed { error: format!("input image: {e}") });
                continue;
            }
        };
        match guarded(|| engine::encode(&job.model.model, &job.live.claim.params, images)) {
            Ok(enc) => {
                job.time(sh, "text_encoder", t0.elapsed().as_secs_f64());
                job.report(sh, "waiting", 5, None);
                out.push((job, enc));
            }
            Err(e) => finish(sh, job, Outcome::Failed { error: format!("text encoder: {e}") }),
        }
    }
    out
}

/// Stage 2 for a batch: the shared denoising loop.
fn denoise_stage(sh: &Shared, batch: Vec<(Job, Encoded)>) -> Vec<(Job, Tensor)> {
    let (mut jobs, encoded): (Vec<Job>, Vec<Encoded>) = batch.into_iter().unzip();
    // Drop jobs stopped while they waited.
    let mut keep_jobs = Vec::new();
    let mut keep_enc = Vec::new();
    for (job, enc) in jobs.drain(..).zip(encoded) {
        match job.live.stop(sh.is_shutdown()) {
            Some(why) => stopped(sh, job, why),
            None => {
                keep_jobs.push(job);
                keep_enc.push(enc);
            }
        }
    }
    let jobs = keep_jobs;
    if jobs.is_empty() {
        return Vec::new();
    }
    let model = jobs[0].model.clone();
    for job in &jobs {
        job.report(sh, "denoising", 5, Some((0, job.live.claim.params.num_inference_steps)));
    }
    let t0 = Instant::now();
    let mut last_step = Instant::now();
    let mut reasons: Vec<Option<Stop>> = vec![None; jobs.len()];
    let shutdown = &sh.shutdown;
    let result = guarded(|| {
        let loras = &jobs[0].live.claim.params.loras;
        let adapted = sh.adapters.transformer(&model, sh.models.lora_dir(), loras)?;
        let transformer = adapted.as_deref().unwrap_or(&model.model.transformer);
        engine::denoise_with(&model.model, transformer, keep_enc, |step, total, k| {
            if k == 0 || reasons[..k].iter().all(|r| r.is_some()) {
                sh.metrics.step(last_step.elapsed().as_secs_f64());
                last_step = Instant::now();
            }
            let job = &jobs[k];
            let progress = 5 + (85 * step / total.max(1)) as u8;
            job.report(sh, "denoising", progress, Some((step, total)));
            match job.live.stop(shutdown.load(Ordering::SeqCst)) {
                Some(why) => {
                    reasons[k] = Some(why);
                    Next::Stop
                }
                None => Next::Continue,
            }
        })
    });
    let secs = t0.elapsed().as_secs_f64();
    let mut out = Vec::new();
    match result {
        Ok(latents) => {
            for ((mut job, lat), why) in jobs.into_iter().zip(latents).zip(reasons) {
                match (lat, why) {
                    (Some(l), _) => {
                        job.time(sh, "denoising", secs);
                        out.push((job, l));
                    }
                    (None, Some(why)) => stopped(sh, job, why),
                    (None, None) => finish(sh, job, Outcome::Failed { error: "internal: job left the batch".into() }),
                }
            }
        }
        Err(e) => {
            for (job, why) in jobs.into_iter().zip(reasons) {
                match why {
                    Some(why) => stopped(sh, job, why),
                    None => finish(sh, job, Outcome::Failed { error: format!("denoising: {e}") }),
                }
            }
        }
    }
    out
}

/// Stage 3 for one job: decode, write the MP4 atomically, record completion.
fn decode_stage(sh: &Shared, mut job: Job, latents: Tensor) {
    // Shutdown does not interrupt a decode: it is short, and the job is nearly done.
    if let Some(why) = job.live.stop(false) {
        return stopped(sh, job, why);
    }
    job.report(sh, "vae_decode", 90, None);
    let t0 = Instant::now();
    let decoded = guarded(|| {
        engine::decode(&job.model.model, &latents, |i, n| {
            job.report(sh, "vae_decode", 90 + (8 * i / n.max(1)) as u8, None);
        })
    });
    drop(latents);
    let frames = match decoded {
        Ok(f) => f,
        Err(e) => return finish(sh, job, Outcome::Failed { error: format!("VAE decode: {e}") }),
    };
    job.time(sh, "vae_decode", t0.elapsed().as_secs_f64());
    if let Some(why) = job.live.stop(false) {
        return stopped(sh, job, why);
    }
    job.report(sh, "writing", 98, None);
    let t0 = Instant::now();
    let path = sh.output_path(job.id());
    let fps = job.live.claim.params.fps;
    let written = guarded(|| {
        let video = engine::video_of(&frames)?;
        wanrt_media::write_video(&path, &video, &Mp4Options { fps })?;
        Ok(())
    });
    if let Err(e) = written {
        return finish(sh, job, Outcome::Failed { error: format!("writing the video: {e}") });
    }
    job.time(sh, "write", t0.elapsed().as_secs_f64());
    let total = (now() - job.live.claim.created_at).max(0.0);
    job.timings.insert("total".into(), Value::from(total));
    let timings = std::mem::take(&mut job.timings);
    finish(sh, job, Outcome::Completed { timings });
}

// ------------------------------------------------------------------ threads

/// Writes every running job's progress to the queue and renews its lease; learns of
/// remote cancels and lost leases.
fn heartbeat(sh: Arc<Shared>, lease_s: f64, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(HEARTBEAT);
        let lives: Vec<Arc<Live>> = sh.running().values().cloned().collect();
        for l in lives {
            let stage = l.stage.lock().unwrap_or_else(|p| p.into_inner()).clone();
            match sh.queue.progress(&l.claim, l.progress.load(Ordering::SeqCst), &stage, lease_s) {
                Ok(Ack::Continue) => {}
                Ok(Ack::Cancel) => l.cancel.store(true, Ordering::SeqCst),
                Ok(Ack::Lost) => {
                    // Finished meanwhile (then it is no longer in `running`), or really lost.
                    if sh.running().contains_key(&l.claim.id) {
                        l.lost.store(true, Ordering::SeqCst);
                    }
                }
                Err(e) => eprintln!("error: heartbeat for {}: {e}", l.claim.id),
            }
        }
    }
}

fn spawn_named(name: String, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new().name(name).spawn(f).expect("spawning a worker thread")
}

/// Running workers; [`Workers::join`] waits for them after [`Shared::shutdown`] is set.
pub struct Workers {
    threads: Vec<JoinHandle<()>>,
    heartbeat: Option<(JoinHandle<()>, Arc<AtomicBool>)>,
}

impl Workers {
    pub fn join(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some((t, stop)) = self.heartbeat.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = t.join();
        }
    }
}

/// Starts `cfg.workers` pipelines and the heartbeat.
pub fn start(sh: Arc<Shared>, cfg: &WorkerConfig) -> Workers {
    let mut threads = Vec::new();
    for w in 0..cfg.workers {
        let cfg = WorkerConfig { name: format!("{}-{w}", cfg.name), ..cfg.clone() };
        if cfg.overlap {
            let (tx_enc, rx_enc) = sync_channel::<Vec<(Job, Encoded)>>(0);
            let (tx_den, rx_den) = sync_channel::<Vec<(Job, Tensor)>>(0);
            let (s1, s2, s3) = (sh.clone(), sh.clone(), sh.clone());
            let c1 = cfg.clone();
            threads.push(spawn_named(format!("encode-{w}"), move || encode_loop(&s1, &c1, tx_enc)));
            threads.push(spawn_named(format!("denoise-{w}"), move || denoise_loop(&s2, rx_enc, tx_den)));
            threads.push(spawn_named(format!("decode-{w}"), move || {
                for batch in rx_den {
                    for (job, lat) in batch {
                        decode_stage(&s3, job, lat);
                    }
                }
            }));
        } else {
            let s = sh.clone();
            threads.push(spawn_named(format!("worker-{w}"), move || sequential_loop(&s, &cfg)));
        }
    }
    let heartbeat = if cfg.workers > 0 {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st, lease) = (sh.clone(), stop.clone(), cfg.lease_s);
        Some((spawn_named("heartbeat".into(), move || heartbeat(s, lease, st)), stop))
    } else {
        None
    };
    Workers { threads, heartbeat }
}

fn sequential_loop(sh: &Shared, cfg: &WorkerConfig) {
    let (mut seen, mut reap) = (0, Instant::now() - Duration::from_secs(60));
    while let Some(jobs) = claim(sh, cfg, &mut seen, &mut reap) {
        let encoded = encode_stage(sh, jobs);
        for (job, lat) in denoise_stage(sh, encoded) {
            decode_stage(sh, job, lat);
        }
    }
}

fn encode_loop(sh: &Shared, cfg: &WorkerConfig, tx: SyncSender<Vec<(Job, Encoded)>>) {
    let (mut seen, mut reap) = (0, Instant::now() - Duration::from_secs(60));
    while let Some(jobs) = claim(sh, cfg, &mut seen, &mut reap) {
        let encoded = encode_stage(sh, jobs);
        if encoded.is_empty() {
            continue;
        }
        if let Err(back) = tx.send(encoded) {
            for (job, _) in back.0 {
                stopped(sh, job, Stop::Shutdown);
            }
            return;
        }
    }
}

fn denoise_loop(sh: &Shared, rx: Receiver<Vec<(Job, Encoded)>>, tx: SyncSender<Vec<(Job, Tensor)>>) {
    while let Ok(batch) = rx.recv() {
        if sh.is_shutdown() {
            for (job, _) in batch {
                stopped(sh, job, Stop::Shutdown);
            }
            continue;
        }
        let out = denoise_stage(sh, batch);
        if out.is_empty() {
            continue;
        }
        if let Err(back) = tx.send(out) {
            for (job, _) in back.0 {
                stopped(sh, job, Stop::Shutdown);
            }
        }
    }
}

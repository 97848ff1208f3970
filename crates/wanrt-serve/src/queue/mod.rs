//! The durable job queue: one trait, two stores.
//!
//! - [`sqlite::SqliteQueue`] (WAL, `synchronous=FULL`, exclusive to one process): the
//!   embedded default. The process that opens it owns every job in it, so jobs left
//!   `in_progress` by a crashed process are re-queued when it starts again.
//! - [`postgres::PgQueue`]: any number of processes on any number of machines share
//!   one queue. Jobs are claimed with `FOR UPDATE SKIP LOCKED` under a lease that the
//!   worker renews (heartbeats); a job whose lease ran out is re-queued by whichever
//!   worker notices, and a stale worker can no longer finish it (every update names
//!   the claim token it was given).
//!
//! Every call commits before it returns, so an acknowledged change is durable.

pub mod postgres;
pub mod sqlite;

use crate::job::{JobParams, JobRecord, Status};
use crate::Result;

/// A job to enqueue (id and seed already chosen).
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub owner: Option<String>,
    pub params: JobParams,
    pub created_at: f64,
}

/// A job claimed by a worker; `token` fences every later update.
#[derive(Debug, Clone)]
pub struct Claim {
    pub id: String,
    pub token: String,
    pub params: JobParams,
    pub attempts: i64,
    pub created_at: f64,
}

/// How a claimed job ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Completed {
        timings: serde_json::Map<String, serde_json::Value>,
    },
    Failed {
        error: String,
    },
    /// Stopped on request (the video is not kept).
    Cancelled,
    /// Given back unfinished (graceful shutdown): queued again, the attempt not counted.
    Requeue,
}

/// What [`Queue::finish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Recorded as asked.
    Recorded,
    /// A cancel arrived first: recorded as cancelled instead (of completed, failed or re-queued).
    Cancelled,
    /// The claim is no longer ours (lease expired and the job was re-queued): nothing changed.
    Lost,
}

/// The answer to a progress report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    Continue,
    /// Someone asked to cancel this job: stop at the next step.
    Cancel,
    /// The claim is gone (lease lost): stop, do not finish.
    Lost,
}

pub enum Submitted {
    Queued(Box<JobRecord>),
    /// `--max-queue` reached: this many jobs are waiting.
    QueueFull(i64),
}

/// A page of [`Queue::list`], newest first.
pub struct Page {
    pub jobs: Vec<JobRecord>,
    pub has_more: bool,
}

/// Jobs that a worker gave up on this many times are failed instead of re-queued.
pub const MAX_ATTEMPTS: i64 = 3;

pub trait Queue: Send + Sync {
    /// `"sqlite"` or `"postgres"`.
    fn kind(&self) -> &'static str;
    fn submit(&self, job: &NewJob, max_queued: Option<u64>) -> Result<Submitted>;
    /// A job that was not deleted.
    fn get(&self, id: &str) -> Result<Option<JobRecord>>;
    /// Newest first; `after` is the id of the last job of the previous page.
    fn list(&self, owner: Option<&str>, after: Option<&str>, limit: usize) -> Result<Page>;
    /// Cancels a queued job at once, asks a running one to stop; with `delete` the job
    /// disappears from the API. Returns the job after the change (None: no such job).
    fn cancel(&self, id: &str, delete: bool) -> Result<Option<JobRecord>>;
    /// Claims the oldest queued job of one of `models` and up to `max_batch - 1` more
    /// queued jobs with the same [`JobParams::batch_key`], under a lease of `lease_s`.
    fn claim(&self, worker: &str, models: &[String], max_batch: usize, lease_s: f64) -> Result<Vec<Claim>>;
    /// Records progress (0–100) and stage, renewing the lease.
    fn progress(&self, claim: &Claim, progress: u8, stage: &str, lease_s: f64) -> Result<Ack>;
    fn finish(&self, claim: &Claim, outcome: &Outcome) -> Result<Finished>;
    /// Re-queues (or fails, after [`MAX_ATTEMPTS`]) jobs whose lease ran out; their ids.
    fn requeue_expired(&self) -> Result<Vec<String>>;
    /// Number of jobs per status (deleted ones included: they still happened).
    fn counts(&self) -> Result<Vec<(Status, i64)>>;
}

/// Parses a stored row's JSON columns.
pub(crate) fn parse_params(id: &str, text: &str) -> Result<JobParams> {
    serde_json::from_str(text).map_err(|e| crate::Error::Corrupt { id: id.into(), msg: format!("parameters: {e}") })
}

pub(crate) fn parse_timings(id: &str, text: Option<&str>) -> Result<serde_json::Map<String, serde_json::Value>> {
    match text {
        None => Ok(serde_json::Map::new()),
        Some(t) => {
            serde_json::from_str(t).map_err(|e| crate::Error::Corrupt { id: id.into(), msg: format!("timings: {e}") })
        }
    }
}

pub(crate) fn parse_status(id: &str, s: &str) -> Result<Status> {
    Status::parse(s).ok_or_else(|| crate::Error::Corrupt { id: id.into(), msg: format!("unknown status {s:?}") })
}

/// A random claim token.
pub(crate) fn token() -> String {
    crate::job::new_id().replacen("video_", "claim_", 1)
}

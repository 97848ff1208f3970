//! The shared queue: a `wanrt_jobs` table in PostgreSQL. Workers on any machine claim
//! jobs with `FOR UPDATE SKIP LOCKED`, hold them under a lease they renew with every
//! progress report and heartbeat, and fence every update with their claim token. Times
//! come from the database's clock, so machines need not agree on theirs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use postgres::{Client, NoTls, Row};

use super::{
    parse_params, parse_status, parse_timings, token, Ack, Claim, Finished, NewJob, Outcome, Page, Queue, Submitted,
    MAX_ATTEMPTS,
};
use crate::job::{JobRecord, Status};
use crate::{Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS wanrt_jobs (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    owner TEXT,
    model TEXT NOT NULL,
    batch_key TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    progress INTEGER NOT NULL DEFAULT 0,
    stage TEXT,
    error TEXT,
    timings TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    completed_at DOUBLE PRECISION,
    worker TEXT,
    claim TEXT,
    lease_until DOUBLE PRECISION,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    deleted BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX IF NOT EXISTS wanrt_jobs_by_status ON wanrt_jobs(status, seq);
CREATE INDEX IF NOT EXISTS wanrt_jobs_by_owner ON wanrt_jobs(owner, seq);
";

/// The database's clock, in seconds since the epoch.
const NOW: &str = "EXTRACT(EPOCH FROM clock_timestamp())::float8";

const COLUMNS: &str = "id, owner, status, params, progress, stage, error, timings, created_at, started_at, \
                       completed_at, attempts, cancel_requested";

/// A few connections, each used by one caller at a time.
pub struct PgQueue {
    url: String,
    pool: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
}

fn connect(url: &str) -> Result<Client> {
    Client::connect(url, NoTls).map_err(|e| Error::Input(format!("--queue {}: {e}", redact(url))))
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            match cred.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn to_record(r: &Row) -> Result<JobRecord> {
    let id: String = r.get(0);
    let status: String = r.get(2);
    let params: String = r.get(3);
    let timings: Option<String> = r.get(7);
    Ok(JobRecord {
        status: parse_status(&id, &status)?,
        params: parse_params(&id, &params)?,
        timings: parse_timings(&id, timings.as_deref())?,
        owner: r.get(1),
        progress: r.get::<_, i32>(4).clamp(0, 100) as u8,
        stage: r.get(5),
        error: r.get(6),
        created_at: r.get(8),
        started_at: r.get(9),
        completed_at: r.get(10),
        attempts: r.get::<_, i32>(11) as i64,
        cancel_requested: r.get(12),
        id,
    })
}

impl PgQueue {
    /// Connects (`connections` clients) and creates the table if needed.
    pub fn open(url: &str, connections: usize) -> Result<PgQueue> {
        let mut first = connect(url)?;
        let mut tx = first.transaction()?;
        // Two processes starting together must not both create the table.
        tx.execute("SELECT pg_advisory_xact_lock(7215640917)", &[])?;
        tx.batch_execute(SCHEMA)?;
        tx.commit()?;
        let mut pool = vec![Mutex::new(Some(first))];
        for _ in 1..connections.max(1) {
            pool.push(Mutex::new(None));
        }
        Ok(PgQueue { url: url.to_string(), pool, next: AtomicUsize::new(0) })
    }

    /// Runs `f` on a free connection (opening or re-opening it as needed).
    fn with<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let n = self.pool.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut guard: Option<MutexGuard<'_, Option<Client>>> = None;
        for i in 0..n {
            if let Ok(g) = self.pool[(start + i) % n].try_lock() {
                guard = Some(g);
                break;
            }
        }
        let mut guard = match guard {
            Some(g) => g,
            None => self.pool[start % n].lock().unwrap_or_else(|p| p.into_inner()),
        };
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            *guard = Some(connect(&self.url)?);
        }
        let client = guard.as_mut().expect("connected above");
        let res = f(client);
        if res.is_err() && client.is_closed() {
            *guard = None;
        }
        res
    }
}

impl Queue for PgQueue {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn submit(&self, job: &NewJob, max_queued: Option<u64>) -> Result<Submitted> {
        let params_json = serde_json::to_string(&job.params).map_err(|e| Error::Input(e.to_string()))?;
        self.with(|c| {
            let mut tx = c.transaction()?;
            if let Some(max) = max_queued {
                // Serialises submissions that check the limit, so it holds across processes.
                tx.execute("SELECT pg_advisory_xact_lock(7215640918)", &[])?;
                let n: i64 = tx.query_one("SELECT COUNT(*) FROM wanrt_jobs WHERE status = 'queued'", &[])?.get(0);
                if n as u64 >= max {
                    return Ok(Submitted::QueueFull(n));
                }
            }
            let row = tx.query_one(
                &format!(
                    "INSERT INTO wanrt_jobs (id, owner, model, batch_key, params, status, created_at)
                     VALUES ($1, $2, $3, $4, $5, 'queued', {NOW}) RETURNING {COLUMNS}"
                ),
                &[&job.id, &job.owner, &job.params.model, &job.params.batch_key(), &params_json],
            )?;
            let rec = to_record(&row)?;
            tx.commit()?;
            Ok(Submitted::Queued(Box::new(rec)))
        })
    }

    fn get(&self, id: &str) -> Result<Option<JobRecord>> {
        self.with(|c| {
            let row =
                c.query_opt(&format!("SELECT {COLUMNS} FROM wanrt_jobs WHERE id = $1 AND NOT deleted"), &[&id])?;
            row.as_ref().map(to_record).transpose()
        })
    }

    fn list(&self, owner: Option<&str>, after: Option<&str>, limit: usize) -> Result<Page> {
        self.with(|c| {
            let before: i64 = match after {
                None => i64::MAX,
                Some(a) => match c.query_opt("SELECT seq FROM wanrt_jobs WHERE id = $1", &[&a])? {
                    Some(r) => r.get(0),
                    None => return Err(Error::Input(format!("after: no video {a}"))),
                },
            };
            let rows = c.query(
                &format!(
                    "SELECT {COLUMNS} FROM wanrt_jobs WHERE NOT deleted AND seq < $1
                       AND ($2::text IS NULL OR owner = $2) ORDER BY seq DESC LIMIT $3"
                ),
                &[&before, &owner, &(limit as i64 + 1)],
            )?;
            let mut jobs = rows.iter().map(to_record).collect::<Result<Vec<_>>>()?;
            let has_more = jobs.len() > limit;
            jobs.truncate(limit);
            Ok(Page { jobs, has_more })
        })
    }

    fn cancel(&self, id: &str, delete: bool) -> Result<Option<JobRecord>> {
        self.with(|c| {
            let row = c.query_opt(
                &format!(
                    "UPDATE wanrt_jobs SET
                        completed_at = CASE WHEN status = 'queued' THEN {NOW} ELSE completed_at END,
                        cancel_requested = cancel_requested OR status IN ('queued', 'in_progress'),
                        error = CASE WHEN status = 'queued' THEN 'cancelled before it started' ELSE error END,
                        status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
                        deleted = deleted OR $2
                     WHERE id = $1 AND NOT deleted RETURNING {COLUMNS}"
                ),
                &[&id, &delete],
            )?;
            row.as_ref().map(to_record).transpose()
        })
    }

    fn claim(&self, worker: &str, models: &[String], max_batch: usize, lease_s: f64) -> Result<Vec<Claim>> {
        let tok = token();
        self.with(|c| {
            let rows = c.query(
                &format!(
                    "WITH first AS (
                        SELECT batch_key FROM wanrt_jobs WHERE status = 'queued' AND model = ANY($1)
                        ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED
                     ), picked AS (
                        SELECT id FROM wanrt_jobs WHERE status = 'queued'
                          AND batch_key = (SELECT batch_key FROM first)
                        ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED
                     )
                     UPDATE wanrt_jobs j SET status = 'in_progress', worker = $3, claim = $4 || '-' || j.seq,
                        lease_until = {NOW} + $5, started_at = {NOW}, attempts = j.attempts + 1,
                        progress = 0, stage = 'starting'
                     FROM picked WHERE j.id = picked.id
                     RETURNING j.id, j.claim, j.params, j.attempts, j.created_at, j.seq"
                ),
                &[&models, &(max_batch.max(1) as i64), &worker, &tok, &lease_s],
            )?;
            let mut claims = rows
                .iter()
                .map(|r| {
                    let id: String = r.get(0);
                    let params: String = r.get(2);
                    Ok((
                        r.get::<_, i64>(5),
                        Claim {
                            params: parse_params(&id, &params)?,
                            id,
                            token: r.get(1),
                            attempts: r.get::<_, i32>(3) as i64,
                            created_at: r.get(4),
                        },
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            claims.sort_by_key(|(seq, _)| *seq);
            Ok(claims.into_iter().map(|(_, c)| c).collect())
        })
    }

    fn progress(&self, claim: &Claim, progress: u8, stage: &str, lease_s: f64) -> Result<Ack> {
        self.with(|c| {
            let row = c.query_opt(
                &format!(
                    "UPDATE wanrt_jobs SET progress = $3, stage = $4, lease_until = {NOW} + $5
                     WHERE id = $1 AND claim = $2 AND status = 'in_progress' RETURNING cancel_requested"
                ),
                &[&claim.id, &claim.token, &(progress.min(100) as i32), &stage, &lease_s],
            )?;
            Ok(match row {
                None => Ack::Lost,
                Some(r) if r.get::<_, bool>(0) => Ack::Cancel,
                Some(_) => Ack::Continue,
            })
        })
    }

    fn finish(&self, claim: &Claim, outcome: &Outcome) -> Result<Finished> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let row = tx.query_opt(
                "SELECT cancel_requested FROM wanrt_jobs WHERE id = $1 AND claim = $2 AND status = 'in_progress'
                 FOR UPDATE",
                &[&claim.id, &claim.token],
            )?;
            let Some(row) = row else {
                return Ok(Finished::Lost);
            };
            let cancel: bool = row.get(0);
            let set = |tx: &mut postgres::Transaction,
                       status: &str,
                       progress: Option<i32>,
                       error: Option<&str>,
                       timings: Option<String>|
             -> Result<()> {
                tx.execute(
                    &format!(
                        "UPDATE wanrt_jobs SET status = $2, progress = COALESCE($3, progress), error = $4,
                            timings = COALESCE($5, timings), completed_at = {NOW}, stage = NULL, lease_until = NULL
                         WHERE id = $1"
                    ),
                    &[&claim.id, &status, &progress, &error, &timings],
                )?;
                Ok(())
            };
            let result = match outcome {
                Outcome::Completed { .. } | Outcome::Failed { .. } if cancel => {
                    set(&mut tx, "cancelled", None, Some("cancelled"), None)?;
                    Finished::Cancelled
                }
                Outcome::Completed { timings } => {
                    let tj = serde_json::Value::Object(timings.clone()).to_string();
                    set(&mut tx, "completed", Some(100), None, Some(tj))?;
                    Finished::Recorded
                }
                Outcome::Failed { error } => {
                    set(&mut tx, "failed", None, Some(error), None)?;
                    Finished::Recorded
                }
                Outcome::Cancelled => {
                    set(&mut tx, "cancelled", None, Some("cancelled"), None)?;
                    Finished::Recorded
                }
                Outcome::Requeue if cancel => {
                    set(&mut tx, "cancelled", None, Some("cancelled"), None)?;
                    Finished::Cancelled
                }
                Outcome::Requeue => {
                    tx.execute(
                        "UPDATE wanrt_jobs SET status = 'queued', worker = NULL, claim = NULL, lease_until = NULL,
                            progress = 0, stage = NULL, started_at = NULL, attempts = GREATEST(attempts - 1, 0)
                         WHERE id = $1",
                        &[&claim.id],
                    )?;
                    Finished::Recorded
                }
            };
            tx.commit()?;
            Ok(result)
        })
    }

    fn requeue_expired(&self) -> Result<Vec<String>> {
        self.with(|c| {
            let rows = c.query(
                &format!(
                    "UPDATE wanrt_jobs SET
                        status = CASE WHEN cancel_requested THEN 'cancelled'
                                      WHEN attempts >= $1 THEN 'failed' ELSE 'queued' END,
                        error = CASE WHEN cancel_requested THEN 'cancelled'
                                     WHEN attempts >= $1 THEN 'the worker stopped before finishing, ' || attempts || ' times'
                                     ELSE NULL END,
                        completed_at = CASE WHEN cancel_requested OR attempts >= $1 THEN {NOW} ELSE NULL END,
                        worker = NULL, claim = NULL, lease_until = NULL, progress = 0, stage = NULL
                     WHERE status = 'in_progress' AND lease_until < {NOW} RETURNING id"
                ),
                &[&(MAX_ATTEMPTS as i32)],
            )?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn counts(&self) -> Result<Vec<(Status, i64)>> {
        self.with(|c| {
            let rows = c.query("SELECT status, COUNT(*) FROM wanrt_jobs GROUP BY status", &[])?;
            let mut out: Vec<(Status, i64)> = Status::ALL.iter().map(|s| (*s, 0)).collect();
            for r in rows {
                let s: String = r.get(0);
                if let Some(slot) = out.iter_mut().find(|(st, _)| st.as_str() == s) {
                    slot.1 = r.get(1);
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_password() {
        assert_eq!(super::redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(super::redact("postgres://h/db"), "postgres://h/db");
    }
}

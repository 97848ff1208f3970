//! The embedded queue: one SQLite file in WAL mode, `synchronous=FULL` (a commit is on
//! disk before the call returns), held exclusively by one process.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::{
    parse_params, parse_status, parse_timings, token, Ack, Claim, Finished, NewJob, Outcome, Page, Queue, Submitted,
    MAX_ATTEMPTS,
};
use crate::job::{now, JobRecord, Status};
use crate::{Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
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
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    worker TEXT,
    claim TEXT,
    lease_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status, seq);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs(owner, seq);
";

const COLUMNS: &str = "id, owner, status, params, progress, stage, error, timings, created_at, started_at, \
                       completed_at, attempts, cancel_requested";

pub struct SqliteQueue {
    conn: Mutex<Connection>,
}

fn record(r: &Row) -> rusqlite::Result<(JobRow, String, String, Option<String>)> {
    Ok((
        JobRow {
            id: r.get(0)?,
            owner: r.get(1)?,
            progress: r.get::<_, i64>(4)?.clamp(0, 100) as u8,
            stage: r.get(5)?,
            error: r.get(6)?,
            created_at: r.get(8)?,
            started_at: r.get(9)?,
            completed_at: r.get(10)?,
            attempts: r.get(11)?,
            cancel_requested: r.get::<_, i64>(12)? != 0,
        },
        r.get(2)?,
        r.get(3)?,
        r.get(7)?,
    ))
}

/// The plain columns of a row; the JSON ones are parsed after the query.
pub(crate) struct JobRow {
    pub id: String,
    pub owner: Option<String>,
    pub progress: u8,
    pub stage: Option<String>,
    pub error: Option<String>,
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub completed_at: Option<f64>,
    pub attempts: i64,
    pub cancel_requested: bool,
}

impl JobRow {
    pub(crate) fn into_record(self, status: &str, params: &str, timings: Option<&str>) -> Result<JobRecord> {
        Ok(JobRecord {
            status: parse_status(&self.id, status)?,
            params: parse_params(&self.id, params)?,
            timings: parse_timings(&self.id, timings)?,
            id: self.id,
            owner: self.owner,
            progress: self.progress,
            stage: self.stage,
            error: self.error,
            created_at: self.created_at,
            started_at: self.started_at,
            completed_at: self.completed_at,
            attempts: self.attempts,
            cancel_requested: self.cancel_requested,
        })
    }
}

fn to_record(t: (JobRow, String, String, Option<String>)) -> Result<JobRecord> {
    let (row, status, params, timings) = t;
    row.into_record(&status, &params, timings.as_deref())
}

impl SqliteQueue {
    /// Opens (creating) the database and takes it for this process: a second `wanrt serve`
    /// on the same file is refused. Jobs a previous process left running are re-queued.
    pub fn open(path: &Path) -> Result<SqliteQueue> {
        let init = || -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(Duration::from_secs(2))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
            // The first write takes the exclusive lock (held until the connection closes).
            conn.execute_batch(SCHEMA)?;
            Ok(conn)
        };
        let conn = init().map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DatabaseBusy => {
                Error::Input(format!(
                    "--db {}: the database is in use by another process (one `wanrt serve` per SQLite file; \
                 use --queue postgres://… to share a queue)",
                    path.display()
                ))
            }
            e => Error::Input(format!("--db {}: {e}", path.display())),
        })?;
        let q = SqliteQueue { conn: Mutex::new(conn) };
        q.recover()?;
        Ok(q)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction half-applied
        // (rusqlite rolls back on drop), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Jobs `in_progress` belong to a process that is gone: queue them again (or fail
    /// them after [`MAX_ATTEMPTS`]); cancels requested meanwhile take effect.
    fn recover(&self) -> Result<()> {
        let conn = self.conn();
        let t = now();
        conn.execute(
            "UPDATE jobs SET status = 'cancelled', completed_at = ?1, worker = NULL, claim = NULL, stage = NULL
             WHERE status = 'in_progress' AND cancel_requested = 1",
            params![t],
        )?;
        conn.execute(
            "UPDATE jobs SET status = 'failed', completed_at = ?1, worker = NULL, claim = NULL,
                error = 'the worker stopped before finishing, ' || attempts || ' times'
             WHERE status = 'in_progress' AND attempts >= ?2",
            params![t, MAX_ATTEMPTS],
        )?;
        conn.execute(
            "UPDATE jobs SET status = 'queued', worker = NULL, claim = NULL, lease_until = NULL, progress = 0,
                stage = NULL WHERE status = 'in_progress'",
            [],
        )?;
        Ok(())
    }
}

impl Queue for SqliteQueue {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn submit(&self, job: &NewJob, max_queued: Option<u64>) -> Result<Submitted> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(max) = max_queued {
            let n: i64 = tx.query_row("SELECT COUNT(*) FROM jobs WHERE status = 'queued'", [], |r| r.get(0))?;
            if n as u64 >= max {
                return Ok(Submitted::QueueFull(n));
            }
        }
        let params_json = serde_json::to_string(&job.params).map_err(|e| Error::Input(e.to_string()))?;
        tx.execute(
            "INSERT INTO jobs (id, owner, model, batch_key, params, status, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6)",
            params![job.id, job.owner, job.params.model, job.params.batch_key(), params_json, job.created_at],
        )?;
        let rec = tx.query_row(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"), params![job.id], record)?;
        tx.commit()?;
        Ok(Submitted::Queued(Box::new(to_record(rec)?)))
    }

    fn get(&self, id: &str) -> Result<Option<JobRecord>> {
        let conn = self.conn();
        let rec = conn
            .query_row(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1 AND deleted = 0"), params![id], record)
            .optional()?;
        rec.map(to_record).transpose()
    }

    fn list(&self, owner: Option<&str>, after: Option<&str>, limit: usize) -> Result<Page> {
        let conn = self.conn();
        let before: i64 = match after {
            None => i64::MAX,
            Some(a) => {
                match conn.query_row("SELECT seq FROM jobs WHERE id = ?1", params![a], |r| r.get(0)).optional()? {
                    Some(s) => s,
                    None => return Err(Error::Input(format!("after: no video {a}"))),
                }
            }
        };
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE deleted = 0 AND seq < ?1 AND (?2 IS NULL OR owner = ?2)
             ORDER BY seq DESC LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![before, owner, limit as i64 + 1], record)?;
        let mut jobs = rows.map(|r| r.map_err(Error::from).and_then(to_record)).collect::<Result<Vec<_>>>()?;
        let has_more = jobs.len() > limit;
        jobs.truncate(limit);
        Ok(Page { jobs, has_more })
    }

    fn cancel(&self, id: &str, delete: bool) -> Result<Option<JobRecord>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE jobs SET
                completed_at = CASE WHEN status = 'queued' THEN ?2 ELSE completed_at END,
                cancel_requested = CASE WHEN status IN ('queued', 'in_progress') THEN 1 ELSE cancel_requested END,
                status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
                error = CASE WHEN status = 'queued' THEN 'cancelled before it started' ELSE error END,
                deleted = MAX(deleted, ?3)
             WHERE id = ?1 AND deleted = 0",
            params![id, now(), delete as i64],
        )?;
        if n == 0 {
            return Ok(None);
        }
        let rec = tx.query_row(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"), params![id], record)?;
        tx.commit()?;
        Ok(Some(to_record(rec)?))
    }

    fn claim(&self, worker: &str, models: &[String], max_batch: usize, lease_s: f64) -> Result<Vec<Claim>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let models_json = serde_json::to_string(models).map_err(|e| Error::Input(e.to_string()))?;
        let first: Option<String> = tx
            .query_row(
                "SELECT batch_key FROM jobs WHERE status = 'queued'
                   AND model IN (SELECT value FROM json_each(?1)) ORDER BY seq LIMIT 1",
                params![models_json],
                |r| r.get(0),
            )
            .optional()?;
        let Some(key) = first else {
            return Ok(Vec::new());
        };
        let picked: Vec<(String, String, i64, f64)> = {
            let mut stmt = tx.prepare(
                "SELECT id, params, attempts, created_at FROM jobs WHERE status = 'queued' AND batch_key = ?1
                 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![key, max_batch.max(1) as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let t = now();
        let mut claims = Vec::with_capacity(picked.len());
        for (id, params_json, attempts, created_at) in picked {
            let tok = token();
            tx.execute(
                "UPDATE jobs SET status = 'in_progress', worker = ?2, claim = ?3, lease_until = ?4,
                    started_at = ?5, attempts = attempts + 1, progress = 0, stage = 'starting'
                 WHERE id = ?1",
                params![id, worker, tok, t + lease_s, t],
            )?;
            let params = parse_params(&id, &params_json)?;
            claims.push(Claim { id, token: tok, params, attempts: attempts + 1, created_at });
        }
        tx.commit()?;
        Ok(claims)
    }

    fn progress(&self, claim: &Claim, progress: u8, stage: &str, lease_s: f64) -> Result<Ack> {
        let conn = self.conn();
        let cancel: Option<i64> = conn
            .query_row(
                "UPDATE jobs SET progress = ?3, stage = ?4, lease_until = ?5
                 WHERE id = ?1 AND claim = ?2 AND status = 'in_progress' RETURNING cancel_requested",
                params![claim.id, claim.token, progress.min(100) as i64, stage, now() + lease_s],
                |r| r.get(0),
            )
            .optional()?;
        Ok(match cancel {
            None => Ack::Lost,
            Some(0) => Ack::Continue,
            Some(_) => Ack::Cancel,
        })
    }

    fn finish(&self, claim: &Claim, outcome: &Outcome) -> Result<Finished> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let cancel: Option<i64> = tx
            .query_row(
                "SELECT cancel_requested FROM jobs WHERE id = ?1 AND claim = ?2 AND status = 'in_progress'",
                params![claim.id, claim.token],
                |r| r.get(0),
            )
            .optional()?;
        let Some(cancel) = cancel else {
            return Ok(Finished::Lost);
        };
        let t = now();
        let result = match outcome {
            Outcome::Completed { .. } | Outcome::Failed { .. } if cancel != 0 => {
                finish_as(&tx, claim, "cancelled", None, Some("cancelled"), None, t)?;
                Finished::Cancelled
            }
            Outcome::Completed { timings } => {
                let tj = serde_json::Value::Object(timings.clone()).to_string();
                finish_as(&tx, claim, "completed", Some(100), None, Some(&tj), t)?;
                Finished::Recorded
            }
            Outcome::Failed { error } => {
                finish_as(&tx, claim, "failed", None, Some(error), None, t)?;
                Finished::Recorded
            }
            Outcome::Cancelled => {
                finish_as(&tx, claim, "cancelled", None, Some("cancelled"), None, t)?;
                Finished::Recorded
            }
            Outcome::Requeue if cancel != 0 => {
                finish_as(&tx, claim, "cancelled", None, Some("cancelled"), None, t)?;
                Finished::Cancelled
            }
            Outcome::Requeue => {
                tx.execute(
                    "UPDATE jobs SET status = 'queued', worker = NULL, claim = NULL, lease_until = NULL,
                        progress = 0, stage = NULL, started_at = NULL, attempts = MAX(attempts - 1, 0)
                     WHERE id = ?1",
                    params![claim.id],
                )?;
                Finished::Recorded
            }
        };
        tx.commit()?;
        Ok(result)
    }

    fn requeue_expired(&self) -> Result<Vec<String>> {
        // One process owns the file: its own workers renew their leases; nothing expires
        // behind their back (a crashed process's jobs are recovered by `open`).
        Ok(Vec::new())
    }

    fn counts(&self) -> Result<Vec<(Status, i64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT status, COUNT(*) FROM jobs GROUP BY status")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out: Vec<(Status, i64)> = Status::ALL.iter().map(|s| (*s, 0)).collect();
        for row in rows {
            let (s, n) = row?;
            if let Some(slot) = out.iter_mut().find(|(st, _)| st.as_str() == s) {
                slot.1 = n;
            }
        }
        Ok(out)
    }
}

fn finish_as(
    tx: &rusqlite::Transaction,
    claim: &Claim,
    status: &str,
    progress: Option<i64>,
    error: Option<&str>,
    timings: Option<&str>,
    t: f64,
) -> Result<()> {
    tx.execute(
        "UPDATE jobs SET status = ?2, progress = COALESCE(?3, progress), error = ?4, timings = COALESCE(?5, timings), completed_at = ?6,
            stage = NULL, lease_until = NULL WHERE id = ?1",
        params![claim.id, status, progress, error, timings, t],
    )?;
    Ok(())
}

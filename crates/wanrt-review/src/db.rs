//! SQLite storage: connection settings, schema migrations (`PRAGMA user_version`) and the
//! queries shared by the server and the exporter.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a vote whose transaction committed
//! survives a killed process (and a power loss). Every write runs in a `BEGIN IMMEDIATE`
//! transaction; `busy_timeout` lets a second process (an export while serving) wait.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use crate::Error;

/// Schema migrations, applied in order; `user_version` = number applied.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema
    r#"
    CREATE TABLE studies(
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE variants(
        id          INTEGER PRIMARY KEY,
        study_id    INTEGER NOT NULL REFERENCES studies(id),
        position    INTEGER NOT NULL,
        name        TEXT NOT NULL,
        dir         TEXT NOT NULL,
        UNIQUE(study_id, name)
    );
    CREATE TABLE items(
        id          INTEGER PRIMARY KEY,
        study_id    INTEGER NOT NULL REFERENCES studies(id),
        file        TEXT NOT NULL,
        caption     TEXT NOT NULL,
        UNIQUE(study_id, file)
    );
    CREATE TABLE pairs(
        id          INTEGER PRIMARY KEY,
        study_id    INTEGER NOT NULL REFERENCES studies(id),
        item_id     INTEGER NOT NULL REFERENCES items(id),
        variant_a   INTEGER NOT NULL REFERENCES variants(id),
        variant_b   INTEGER NOT NULL REFERENCES variants(id),
        UNIQUE(item_id, variant_a, variant_b)
    );
    CREATE TABLE raters(
        id          INTEGER PRIMARY KEY,
        study_id    INTEGER NOT NULL REFERENCES studies(id),
        name        TEXT NOT NULL,
        session     TEXT NOT NULL UNIQUE,
        csrf        TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        UNIQUE(study_id, name)
    );
    CREATE TABLE invites(
        token       TEXT PRIMARY KEY,
        study_id    INTEGER NOT NULL REFERENCES studies(id),
        rater_id    INTEGER REFERENCES raters(id),
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE assignments(
        id          INTEGER PRIMARY KEY,
        token       TEXT NOT NULL UNIQUE,
        rater_id    INTEGER NOT NULL REFERENCES raters(id),
        pair_id     INTEGER NOT NULL REFERENCES pairs(id),
        pass        INTEGER NOT NULL,
        left_variant INTEGER NOT NULL REFERENCES variants(id),
        left_video  TEXT NOT NULL UNIQUE,
        right_video TEXT NOT NULL UNIQUE,
        created_at  INTEGER NOT NULL,
        done        INTEGER NOT NULL DEFAULT 0,
        UNIQUE(rater_id, pair_id, pass)
    );
    CREATE INDEX assignments_open ON assignments(done, pair_id);
    CREATE TABLE votes(
        id            INTEGER PRIMARY KEY,
        study_id      INTEGER NOT NULL REFERENCES studies(id),
        submission_id TEXT NOT NULL UNIQUE,
        assignment_id INTEGER NOT NULL UNIQUE REFERENCES assignments(id),
        rater_id      INTEGER NOT NULL REFERENCES raters(id),
        pair_id       INTEGER NOT NULL REFERENCES pairs(id),
        left_variant  INTEGER NOT NULL REFERENCES variants(id),
        overall       TEXT NOT NULL CHECK (overall IN ('a','b','tie')),
        visual        TEXT CHECK (visual IN ('a','b','tie')),
        motion        TEXT CHECK (motion IN ('a','b','tie')),
        alignment     TEXT CHECK (alignment IN ('a','b','tie')),
        likert_a      INTEGER CHECK (likert_a BETWEEN 1 AND 5),
        likert_b      INTEGER CHECK (likert_b BETWEEN 1 AND 5),
        elapsed_ms    INTEGER,
        created_at    INTEGER NOT NULL
    );
    CREATE INDEX votes_study ON votes(study_id);
    CREATE INDEX votes_pair ON votes(pair_id);
    "#,
];

/// Schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Opens (creating if needed) the database and brings its schema up to date.
pub fn open(path: &Path) -> Result<Connection, Error> {
    let db_err = |e: rusqlite::Error| Error::Db { path: path.display().to_string(), source: e };
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() && !parent.is_dir() {
            return Err(Error::Input(format!("--db {}: folder {} does not exist", path.display(), parent.display())));
        }
    }
    let mut conn = Connection::open(path).map_err(db_err)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(db_err)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(db_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Input(format!("--db {}: cannot switch SQLite to WAL mode (got {mode})", path.display())));
    }
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;").map_err(db_err)?;
    migrate(&mut conn).map_err(|e| match e {
        Error::Sqlite(source) => db_err(source),
        other => other,
    })?;
    Ok(conn)
}

/// Opens an existing database written by `wanrt review serve` (for export): refuses a
/// missing file or one that is not a wanrt review database instead of creating tables.
pub fn open_existing(path: &Path) -> Result<Connection, Error> {
    if !path.is_file() {
        return Err(Error::Input(format!("--db {}: no such database file", path.display())));
    }
    {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| Error::Db { path: path.display().to_string(), source: e })?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| Error::Db { path: path.display().to_string(), source: e })?;
        if version == 0 {
            return Err(Error::Input(format!("--db {}: not a wanrt review database", path.display())));
        }
    }
    open(path)
}

/// Applies the migrations newer than the file's `user_version`, each in its own transaction.
pub fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(Error::Input(format!(
            "database schema version {version} is newer than this wanrt understands ({SCHEMA_VERSION}); use a newer wanrt"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the write lock.
        let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now > i as i64 {
            tx.commit()?;
            continue;
        }
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Id of the study called `name`, if any.
pub fn study_id(conn: &Connection, name: &str) -> Result<Option<i64>, Error> {
    Ok(conn.query_row("SELECT id FROM studies WHERE name = ?1", params![name], |r| r.get(0)).optional()?)
}

/// Variant (id, name) of a study, in command-line order.
pub fn variants(conn: &Connection, study: i64) -> Result<Vec<(i64, String)>, Error> {
    let mut st = conn.prepare("SELECT id, name FROM variants WHERE study_id = ?1 ORDER BY position, id")?;
    let rows = st.query_map(params![study], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// One stored vote with everything the statistics and the raw export need.
#[derive(Debug, Clone)]
pub struct VoteRow {
    pub id: i64,
    pub submission_id: String,
    pub rater_id: i64,
    pub rater: String,
    pub pair_id: i64,
    pub file: String,
    pub variant_a: i64,
    pub variant_b: i64,
    pub left_variant: i64,
    pub overall: String,
    pub criteria: [Option<String>; 3],
    pub likert_a: Option<i64>,
    pub likert_b: Option<i64>,
    pub elapsed_ms: Option<i64>,
    pub created_at: i64,
}

/// All votes of a study, oldest first.
pub fn votes(conn: &Connection, study: i64) -> Result<Vec<VoteRow>, Error> {
    let mut st = conn.prepare(
        "SELECT v.id, v.submission_id, v.rater_id, r.name, v.pair_id, i.file, p.variant_a,
                p.variant_b, v.left_variant, v.overall, v.visual, v.motion, v.alignment,
                v.likert_a, v.likert_b, v.elapsed_ms, v.created_at
         FROM votes v JOIN raters r ON r.id = v.rater_id
                      JOIN pairs p ON p.id = v.pair_id
                      JOIN items i ON i.id = p.item_id
         WHERE v.study_id = ?1 ORDER BY v.id",
    )?;
    let rows = st
        .query_map(params![study], |r| {
            Ok(VoteRow {
                id: r.get(0)?,
                submission_id: r.get(1)?,
                rater_id: r.get(2)?,
                rater: r.get(3)?,
                pair_id: r.get(4)?,
                file: r.get(5)?,
                variant_a: r.get(6)?,
                variant_b: r.get(7)?,
                left_variant: r.get(8)?,
                overall: r.get(9)?,
                criteria: [r.get(10)?, r.get(11)?, r.get(12)?],
                likert_a: r.get(13)?,
                likert_b: r.get(14)?,
                elapsed_ms: r.get(15)?,
                created_at: r.get(16)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// (rater name, number of votes) for every rater of a study.
pub fn rater_counts(conn: &Connection, study: i64) -> Result<Vec<(String, i64)>, Error> {
    let mut st = conn.prepare(
        "SELECT r.name, (SELECT COUNT(*) FROM votes v WHERE v.rater_id = r.id)
         FROM raters r WHERE r.study_id = ?1 ORDER BY r.id",
    )?;
    let rows = st.query_map(params![study], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Votes per pair (every pair of the study, zero included).
pub fn votes_per_pair(conn: &Connection, study: i64) -> Result<Vec<i64>, Error> {
    let mut st = conn.prepare(
        "SELECT (SELECT COUNT(*) FROM votes v WHERE v.pair_id = p.id)
         FROM pairs p WHERE p.study_id = ?1 ORDER BY p.id",
    )?;
    let rows = st.query_map(params![study], |r| r.get(0))?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

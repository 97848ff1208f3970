//! Study set-up: variant folders → pairs. A pair is one file name present in every variant
//! folder, compared between two variants (all variant pairs when there are more than two).
//!
//! Video files are listed here and kept only if they resolve inside their (canonical)
//! variant folder; the server serves files from this table by id, never from a path in a
//! request, and resolves and confines each one again at every request (`confine.rs`).
//!
//! A study in the database is bound to its folders and captions: resuming it with other
//! folders or other captions for the same files would mix votes on different videos, so it
//! is refused unless `--allow-changes`. New files present in every folder are added.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::{db, Error};

/// Extensions served, with their content type.
pub const VIDEO_TYPES: &[(&str, &str)] = &[("mp4", "video/mp4"), ("webm", "video/webm"), ("gif", "image/gif")];

/// Content type of a video file name, if it is one wanrt serves.
pub fn content_type(file: &str) -> Option<&'static str> {
    let ext = Path::new(file).extension()?.to_str()?.to_ascii_lowercase();
    VIDEO_TYPES.iter().find(|(e, _)| *e == ext).map(|(_, t)| *t)
}

/// A variant given on the command line.
#[derive(Debug, Clone)]
pub struct VariantSpec {
    pub name: String,
    pub dir: PathBuf,
}

/// Parses `NAME=DIR` arguments (two or more, unique names).
pub fn parse_variants(args: &[String]) -> Result<Vec<VariantSpec>, Error> {
    let mut out: Vec<VariantSpec> = Vec::new();
    for a in args {
        let Some((name, dir)) = a.split_once('=') else {
            return Err(Error::Input(format!("--variants: '{a}' is not NAME=DIR (e.g. base=videos/base)")));
        };
        validate_name("--variants: variant name", name)?;
        if dir.is_empty() {
            return Err(Error::Input(format!("--variants: '{a}' has an empty folder")));
        }
        if out.iter().any(|v| v.name == name) {
            return Err(Error::Input(format!("--variants: variant name '{name}' is given twice")));
        }
        out.push(VariantSpec { name: name.to_string(), dir: PathBuf::from(dir) });
    }
    if out.len() < 2 {
        return Err(Error::Input(format!("--variants: need at least two NAME=DIR variants, got {}", out.len())));
    }
    Ok(out)
}

/// Names (study, variant): 1–64 characters of letters, digits, `_`, `-`, `.`.
pub fn validate_name(what: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Input(format!("{what} '{name}' must be 1-64 characters of letters, digits, '_', '-', '.'")))
    }
}

/// Lists the video files of a folder: file name → canonical path (inside the folder).
fn list_videos(name: &str, dir: &Path) -> Result<(PathBuf, BTreeMap<String, PathBuf>), Error> {
    if !dir.exists() {
        return Err(Error::Input(format!("variant '{name}': folder {} does not exist", dir.display())));
    }
    if !dir.is_dir() {
        return Err(Error::Input(format!("variant '{name}': {} is not a folder", dir.display())));
    }
    let canon =
        dir.canonicalize().map_err(|e| Error::Input(format!("variant '{name}': folder {}: {e}", dir.display())))?;
    let rd = std::fs::read_dir(&canon)
        .map_err(|e| Error::Input(format!("variant '{name}': cannot list folder {}: {e}", dir.display())))?;
    let mut files = BTreeMap::new();
    for entry in rd {
        let entry =
            entry.map_err(|e| Error::Input(format!("variant '{name}': cannot list folder {}: {e}", dir.display())))?;
        let Some(file) = entry.file_name().to_str().map(str::to_string) else {
            continue; // not UTF-8: cannot be matched against the prompts file
        };
        if file.starts_with('.') || content_type(&file).is_none() {
            continue;
        }
        let Ok(real) = entry.path().canonicalize() else {
            continue; // dangling symlink
        };
        if !real.starts_with(&canon) || !real.is_file() {
            eprintln!("warning: variant '{name}': {file} points outside {} or is not a file; skipped", dir.display());
            continue;
        }
        files.insert(file, real);
    }
    Ok((canon, files))
}

/// Same folder: equal canonical paths, or (Unix) the same inode, e.g. a bind mount.
fn same_folder(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    false
}

/// Reads the prompts file: {"file": "caption"}.
pub fn read_prompts(path: &Path) -> Result<HashMap<String, String>, Error> {
    let meta =
        std::fs::metadata(path).map_err(|e| Error::Input(format!("--prompts: cannot read {}: {e}", path.display())))?;
    if meta.len() > 64 << 20 {
        return Err(Error::Input(format!("--prompts: {} is larger than 64 MiB", path.display())));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Input(format!("--prompts: cannot read {}: {e}", path.display())))?;
    serde_json::from_str::<HashMap<String, String>>(&text).map_err(|e| {
        Error::Input(format!("--prompts: {} is not a JSON object {{\"file\": \"caption\"}}: {e}", path.display()))
    })
}

/// Everything the server needs to know about a study at run time.
#[derive(Debug, Clone)]
pub struct StudyRuntime {
    pub id: i64,
    pub name: String,
    /// (variant id, name), command-line order.
    pub variants: Vec<(i64, String)>,
    pub n_items: usize,
    pub n_pairs: usize,
    /// (item id, variant id) → the video, opened through [`crate::confine`] per request.
    pub videos: HashMap<(i64, i64), VideoRef>,
}

/// A study video: its variant's canonical folder and its file name there.
#[derive(Debug, Clone)]
pub struct VideoRef {
    pub dir: PathBuf,
    pub file: String,
}

/// Folders and captions checked, before anything is written.
pub struct Scanned {
    variants: Vec<VariantSpec>,
    /// Per variant: canonical folder, file name → canonical path.
    listed: Vec<(PathBuf, BTreeMap<String, PathBuf>)>,
    common: BTreeSet<String>,
    captions: BTreeMap<String, String>,
}

/// Scans the variant folders and the prompts file (no database access).
pub fn scan(study: &str, variants: &[VariantSpec], prompts_path: &Path) -> Result<Scanned, Error> {
    validate_name("--study", study)?;
    let mut listed: Vec<(PathBuf, BTreeMap<String, PathBuf>)> = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        let l = list_videos(&v.name, &v.dir)?;
        // The same folder twice would rate a video against itself.
        if let Some(j) = listed.iter().position(|(d, _)| same_folder(d, &l.0)) {
            return Err(Error::Input(format!(
                "--variants: '{}' and '{}' are the same folder ({}); each variant needs its own",
                variants[j].name,
                v.name,
                l.0.display()
            )));
        }
        debug_assert_eq!(listed.len(), i);
        listed.push(l);
    }
    // Files present in every folder.
    let mut common: BTreeSet<String> = listed[0].1.keys().cloned().collect();
    for (_, files) in &listed[1..] {
        common.retain(|f| files.contains_key(f));
    }
    if common.is_empty() {
        let counts: Vec<String> =
            variants.iter().zip(&listed).map(|(v, (_, f))| format!("{}: {} files", v.name, f.len())).collect();
        return Err(Error::Input(format!(
            "no video file (.mp4/.webm/.gif) has the same name in every variant folder ({})",
            counts.join(", ")
        )));
    }
    let partial: BTreeSet<&String> =
        listed.iter().flat_map(|(_, f)| f.keys()).filter(|f| !common.contains(*f)).collect();
    if !partial.is_empty() {
        let first = partial.iter().next().map(|s| s.as_str()).unwrap_or("");
        eprintln!("warning: {} file(s) are not in every variant folder and are skipped (e.g. {first})", partial.len());
    }
    let prompts = read_prompts(prompts_path)?;
    let mut captions = BTreeMap::new();
    let mut missing = Vec::new();
    for f in &common {
        let stem = Path::new(f).file_stem().and_then(|s| s.to_str()).unwrap_or(f);
        match prompts.get(f).or_else(|| prompts.get(stem)) {
            Some(c) if !c.trim().is_empty() => {
                captions.insert(f.clone(), c.clone());
            }
            _ => missing.push(f.clone()),
        }
    }
    if !missing.is_empty() {
        let more = if missing.len() > 1 { format!(" (and {} more)", missing.len() - 1) } else { String::new() };
        return Err(Error::Input(format!(
            "--prompts: {} has no caption for '{}'{more}",
            prompts_path.display(),
            missing[0]
        )));
    }
    Ok(Scanned { variants: variants.to_vec(), listed, common, captions })
}

/// Creates or resumes the study in the database from a scan. A resumed study must have the
/// same folders and the same captions for its files unless `allow_changes`.
pub fn prepare(
    conn: &mut Connection,
    study: &str,
    scanned: &Scanned,
    allow_changes: bool,
) -> Result<StudyRuntime, Error> {
    let Scanned { variants, listed, common, captions } = scanned;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = db::now();
    let study_id = match db::study_id(&tx, study)? {
        Some(id) => {
            let have: Vec<String> = db::variants(&tx, id)?.into_iter().map(|v| v.1).collect();
            let want: Vec<String> = variants.iter().map(|v| v.name.clone()).collect();
            if have != want {
                return Err(Error::Input(format!(
                    "study '{study}' exists in the database with variants {}; got {} (use another --study name)",
                    have.join(","),
                    want.join(",")
                )));
            }
            check_unchanged(&tx, id, study, scanned, allow_changes)?;
            id
        }
        None => {
            tx.execute("INSERT INTO studies(name, created_at) VALUES (?1, ?2)", params![study, now])?;
            tx.last_insert_rowid()
        }
    };
    let mut variant_ids = Vec::new();
    for (pos, (v, (canon, _))) in variants.iter().zip(listed).enumerate() {
        let dir = canon.display().to_string();
        let id: Option<i64> = tx
            .query_row("SELECT id FROM variants WHERE study_id = ?1 AND name = ?2", params![study_id, v.name], |r| {
                r.get(0)
            })
            .optional()?;
        let id = match id {
            Some(id) => {
                tx.execute("UPDATE variants SET dir = ?1 WHERE id = ?2", params![dir, id])?;
                id
            }
            None => {
                tx.execute(
                    "INSERT INTO variants(study_id, position, name, dir) VALUES (?1, ?2, ?3, ?4)",
                    params![study_id, pos as i64, v.name, dir],
                )?;
                tx.last_insert_rowid()
            }
        };
        variant_ids.push(id);
    }
    // Items already in the study must still be there.
    {
        let mut st = tx.prepare("SELECT file FROM items WHERE study_id = ?1 ORDER BY id")?;
        let old: Vec<String> = st.query_map(params![study_id], |r| r.get(0))?.collect::<Result<_, _>>()?;
        if let Some(gone) = old.iter().find(|f| !common.contains(*f)) {
            return Err(Error::Input(format!(
                "study '{study}': '{gone}' was part of the study but is not in every variant folder any more"
            )));
        }
    }
    let mut videos = HashMap::new();
    for (file, caption) in captions {
        tx.execute(
            "INSERT INTO items(study_id, file, caption) VALUES (?1, ?2, ?3)
             ON CONFLICT(study_id, file) DO UPDATE SET caption = excluded.caption",
            params![study_id, file, caption],
        )?;
        let item: i64 =
            tx.query_row("SELECT id FROM items WHERE study_id = ?1 AND file = ?2", params![study_id, file], |r| {
                r.get(0)
            })?;
        for (vi, (dir, _)) in listed.iter().enumerate() {
            videos.insert((item, variant_ids[vi]), VideoRef { dir: dir.clone(), file: file.clone() });
        }
        for i in 0..variant_ids.len() {
            for j in i + 1..variant_ids.len() {
                tx.execute(
                    "INSERT OR IGNORE INTO pairs(study_id, item_id, variant_a, variant_b)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![study_id, item, variant_ids[i], variant_ids[j]],
                )?;
            }
        }
    }
    let n_pairs: i64 =
        tx.query_row("SELECT COUNT(*) FROM pairs WHERE study_id = ?1", params![study_id], |r| r.get(0))?;
    tx.commit()?;
    Ok(StudyRuntime {
        id: study_id,
        name: study.to_string(),
        variants: variant_ids.iter().zip(variants).map(|(id, v)| (*id, v.name.clone())).collect(),
        n_items: captions.len(),
        n_pairs: n_pairs as usize,
        videos,
    })
}

/// A resumed study: the folders and the captions of its existing files must be the ones
/// it was created with (votes already cast were cast on those videos and captions).
fn check_unchanged(tx: &Connection, id: i64, study: &str, scanned: &Scanned, allow_changes: bool) -> Result<(), Error> {
    let mut changes = Vec::new();
    for (v, (canon, _)) in scanned.variants.iter().zip(&scanned.listed) {
        let old: String =
            tx.query_row("SELECT dir FROM variants WHERE study_id = ?1 AND name = ?2", params![id, v.name], |r| {
                r.get(0)
            })?;
        let new = canon.display().to_string();
        if old != new {
            changes.push(format!("variant '{}' folder was {old}, now {new}", v.name));
        }
    }
    let mut st = tx.prepare("SELECT file, caption FROM items WHERE study_id = ?1 ORDER BY id")?;
    let old: Vec<(String, String)> =
        st.query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    for (file, caption) in old {
        if let Some(new) = scanned.captions.get(&file).filter(|c| **c != caption) {
            changes.push(format!("caption of '{file}' was {caption:?}, now {new:?}"));
        }
    }
    if changes.is_empty() {
        return Ok(());
    }
    let more = if changes.len() > 1 { format!(" (and {} more changes)", changes.len() - 1) } else { String::new() };
    if allow_changes {
        eprintln!("warning: study '{study}' resumed with changes: {}{more}", changes[0]);
        return Ok(());
    }
    Err(Error::Input(format!(
        "study '{study}' exists with other folders or captions: {}{more}; pass --allow-changes to resume it anyway, or use another --study name",
        changes[0]
    )))
}

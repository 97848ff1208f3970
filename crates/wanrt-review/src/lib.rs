//! wanrt-review: blind A/B human rating of video variants.
//!
//! `wanrt review serve` turns folders of videos (one folder per variant, same file names
//! for the same prompt and seed) into a local web app where raters compare two videos of
//! the same prompt without knowing which variant is which; votes go to SQLite.
//! `wanrt review export` (and the admin results page) turn the votes into win/tie/loss
//! tables, Bradley–Terry strengths with bootstrap intervals, per-criterion breakdowns,
//! inter-rater agreement and mean Likert scores (see [`stats`] for the methods).
//!
//! No model code: this crate only reads video files and a prompts file.

mod admin;
pub mod cli;
mod confine;
pub mod db;
pub mod plot;
pub mod results;
pub mod server;
pub mod stats;
pub mod study;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;

use cli::{ExportArgs, ExportFormat, ReviewCommand, ServeArgs};

/// Errors of this crate (input problems carry a one-line message naming what is wrong).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Input(String),
    #[error("database {path}: {source}")]
    Db {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Runs a `wanrt review` subcommand to completion (serve runs until Ctrl-C).
pub fn run(cmd: ReviewCommand) -> anyhow::Result<()> {
    match cmd {
        ReviewCommand::Serve(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(async move {
                let server = start(&args).await?;
                let mut out = std::io::stdout().lock();
                writeln!(
                    out,
                    "study '{}': {} variants, {} pairs from {} prompts; database {}",
                    server.study,
                    server.n_variants,
                    server.n_pairs,
                    server.n_items,
                    args.db.display()
                )?;
                writeln!(out, "results (admin): http://{}/admin?token={}", server.addr, server.admin_token)?;
                for inv in &server.invites {
                    writeln!(out, "invite: http://{}/i/{inv}", server.addr)?;
                }
                writeln!(out, "listening on http://{}", server.addr)?;
                out.flush()?;
                drop(out);
                server.run_until_ctrl_c().await
            })
        }
        ReviewCommand::Export(args) => export(&args),
    }
}

/// A running server (see [`start`]).
pub struct Server {
    /// The address actually bound (the real port when `--bind` used port 0).
    pub addr: SocketAddr,
    pub admin_token: String,
    /// Invite tokens (empty unless `--invites`).
    pub invites: Vec<String>,
    pub study: String,
    pub n_variants: usize,
    pub n_pairs: usize,
    pub n_items: usize,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Stops accepting connections, lets requests in flight finish, and waits.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        self.task.await.context("server task")??;
        Ok(())
    }

    /// Serves until Ctrl-C (or SIGTERM), then shuts down gracefully.
    pub async fn run_until_ctrl_c(self) -> anyhow::Result<()> {
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
        self.shutdown().await
    }
}

/// Prepares the study (folders, captions, database) and starts serving in the background.
pub async fn start(args: &ServeArgs) -> anyhow::Result<Server> {
    let variants = study::parse_variants(&args.variants)?;
    // Check folders and captions before the database file is created or touched.
    let scanned = study::scan(&args.study, &variants, &args.prompts)?;
    let mut conn = db::open(&args.db)?;
    let runtime = study::prepare(&mut conn, &args.study, &scanned, args.allow_changes)?;
    let invites = match args.invites {
        Some(n) => admin::ensure_invites(&mut conn, runtime.id, n)?,
        None => {
            // An invite-only study stays invite-only when resumed without --invites.
            let have = admin::count_invites(&conn, runtime.id)?;
            if have > 0 && !args.allow_changes {
                anyhow::bail!(
                    "study '{}' is invite-only ({have} invites): resume it with --invites N, or pass --allow-changes to let anyone join by name",
                    args.study
                );
            }
            Vec::new()
        }
    };
    let admin_token = match &args.admin_token {
        Some(t) => {
            if t.len() < 8 || !t.bytes().all(|b| b.is_ascii_graphic() && b != b';') {
                anyhow::bail!("--admin-token must be at least 8 printable characters without spaces or ';'");
            }
            t.clone()
        }
        None => server::random_token(16),
    };
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("--bind {}: cannot listen", args.bind))?;
    let addr = listener.local_addr()?;
    let (n_variants, n_pairs, n_items) = (runtime.variants.len(), runtime.n_pairs, runtime.n_items);
    let study_name = runtime.name.clone();
    let app = server::router(
        conn,
        server::Config {
            study: runtime,
            admin_token: admin_token.clone(),
            invite_only: args.invites.is_some(),
            passes: args.passes,
            require_likert: args.require_likert,
            resamples: args.bootstrap,
            seed: args.seed,
            allowed_hosts: allowed_hosts(addr),
        },
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    Ok(Server { addr, admin_token, invites, study: study_name, n_variants, n_pairs, n_items, shutdown: tx, task })
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

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{}: not a file name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::anyhow!("cannot write {}: {e}", path.display()));
    }
    Ok(())
}

/// `wanrt review export`.
pub fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let conn = db::open_existing(&args.db)?;
    let r = results::compute(&conn, &args.study, args.bootstrap, args.seed)?;
    let text = match (args.raw, args.effective_format()) {
        (false, ExportFormat::Json) => serde_json::to_string_pretty(&r)? + "\n",
        (false, ExportFormat::Csv) => results::summary_csv(&r),
        (true, fmt) => {
            let (_, loaded) = results::load(&conn, &args.study)?;
            let raw = results::raw_votes(&loaded);
            match fmt {
                ExportFormat::Json => serde_json::to_string_pretty(&raw)? + "\n",
                ExportFormat::Csv => results::raw_csv(&raw),
            }
        }
    };
    if let Some(p) = &args.plot {
        let png = plot::render_png(&r.study, &r.stats)?;
        write_atomic(p, &png)?;
    }
    match &args.output {
        Some(p) => write_atomic(p, text.as_bytes())?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(())
}

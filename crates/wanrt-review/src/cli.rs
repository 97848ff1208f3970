//! Command-line interface of `wanrt review` (clap derive). The `wanrt` binary embeds
//! [`ReviewCommand`] as a subcommand and hands it to [`crate::run`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

/// `wanrt review …`: blind A/B human rating of video variants.
#[derive(Debug, Clone, Subcommand)]
pub enum ReviewCommand {
    /// Create or resume a study and serve the rating web app.
    ///
    /// Pairs are the files with the same name in every variant folder (same prompt and
    /// seed, different variant). Raters open the printed address, enter a name (or use an
    /// invite link) and compare two videos side by side without knowing which variant is
    /// which. Results are at /admin (needs the admin token printed at start).
    Serve(ServeArgs),
    /// Write a study's results (win/tie/loss, Bradley–Terry strengths with bootstrap
    /// intervals, per-criterion breakdown, inter-rater agreement, mean Likert) as CSV or
    /// JSON, or the raw votes with --raw.
    Export(ExportArgs),
}

/// Options of `wanrt review serve`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example:\n  wanrt review serve --study int8 --variants base=out/base int8=out/int8 \\\n      --prompts prompts.json --db reviews.sqlite\n\nRater keys: Left/Right arrow = A/B better, Down = tie, 1-5 = score A, Shift+1-5 = score B,\nEnter = submit, Space = play/pause, R = restart."
)]
pub struct ServeArgs {
    /// Study name; an existing study of that name in --db is resumed.
    #[arg(long, value_name = "NAME")]
    pub study: String,

    /// Variant folders as NAME=DIR (two or more). Files with the same name in every folder
    /// form the pairs; .mp4, .webm and .gif files are used, others ignored. Raters never
    /// see these names.
    #[arg(long, value_name = "NAME=DIR", num_args = 2.., required = true)]
    pub variants: Vec<String>,

    /// JSON object {"file name": "caption"} giving the prompt shown for each pair (a key
    /// may also be the file name without its extension).
    #[arg(long, value_name = "FILE")]
    pub prompts: PathBuf,

    /// SQLite database holding studies, raters and votes (created if missing).
    #[arg(long, value_name = "FILE")]
    pub db: PathBuf,

    /// Address to listen on. Keep the default (localhost only) unless raters are on other
    /// machines; port 0 picks a free port (the real one is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Admin token for the results page and export endpoints (default: a random token,
    /// printed at start). Also read from WANRT_REVIEW_ADMIN_TOKEN.
    #[arg(long, value_name = "TOKEN", env = "WANRT_REVIEW_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Make the study invite-only: ensure N invite links exist (printed at start and on the
    /// admin page); raters then join only through an invite link, not by typing a name.
    /// N is 1 to 10000 (0 would let nobody in). A study created with invites stays
    /// invite-only when resumed.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub invites: Option<u32>,

    /// Resume an existing study even though its variant folders or its captions differ from
    /// the ones it was created with (or without its invites). Without this flag such a
    /// resume is refused, since votes already cast were cast on the old videos and captions.
    #[arg(long)]
    pub allow_changes: bool,

    /// How many times one rater may rate the same pair. A rater sees every pair once before
    /// any repeat; with the default 1 a rater is done after all pairs.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub passes: u32,

    /// Require the 1–5 Likert score for both videos before a vote is accepted.
    #[arg(long)]
    pub require_likert: bool,

    /// Bootstrap resamples for the confidence intervals on the results page.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(10..=100000))]
    pub bootstrap: u32,

    /// Seed of the bootstrap (results are reproducible for a given set of votes).
    #[arg(long, value_name = "N", default_value_t = 20240601)]
    pub seed: u64,
}

/// Output format of `wanrt review export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Long-format table: one row per (section, criterion, variant, opponent).
    Csv,
    /// One JSON document, the same as the results page shows.
    Json,
}

/// Options of `wanrt review export`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example:\n  wanrt review export --db reviews.sqlite --study int8 --format json -o results.json --plot results.png"
)]
pub struct ExportArgs {
    /// SQLite database written by `wanrt review serve`.
    #[arg(long, value_name = "FILE")]
    pub db: PathBuf,

    /// Study name.
    #[arg(long, value_name = "NAME")]
    pub study: String,

    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
    pub format: ExportFormat,

    /// Shorthand for --format json.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,

    /// Output file (default: standard output). Written to a temporary file, then renamed.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Export the raw votes (one row per vote, variant names in clear) instead of the
    /// summary statistics.
    #[arg(long)]
    pub raw: bool,

    /// Also write the results plot (Bradley–Terry strengths and mean Likert with 95%
    /// intervals) as a PNG file.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,

    /// Bootstrap resamples for the confidence intervals.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(10..=100000))]
    pub bootstrap: u32,

    /// Seed of the bootstrap.
    #[arg(long, value_name = "N", default_value_t = 20240601)]
    pub seed: u64,
}

impl ExportArgs {
    /// The effective format (`--json` wins).
    pub fn effective_format(&self) -> ExportFormat {
        if self.json {
            ExportFormat::Json
        } else {
            self.format
        }
    }
}

//! `wanrt`: run, evaluate and review Wan2.1 text-to-video models.
//! A thin layer over the library crates; every error is one line on stderr
//! with a non-zero exit status.

mod bench;
mod convert;
mod engine;
mod generate;
mod ladder;
mod model_path;
mod optimize;
mod outcome;
mod progress;
mod sysinfo;

use clap::{Parser, Subcommand};

/// mimalloc keeps freed pages for reuse; with glibc's malloc every activation of tens of MB is a
/// fresh `mmap`, paid again in page faults and zeroing each time a layer runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "wanrt", version, about = "Wan2.1 text-to-video runtime, optimizer and evaluation toolkit")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate video from text with a Wan2.1 model (diffusers or original release layout).
    Generate(Box<generate::GenerateArgs>),
    /// Calibrate, quantize (INT8/FP8) and prune a model into an optimized artifact folder, with a report.
    Optimize(Box<optimize::OptimizeArgs>),
    /// Rewrite an original Wan-Video release folder in the diffusers layout.
    Convert(convert::ConvertArgs),
    /// Time each pipeline stage (text encoder, one transformer step, VAE decode) on this machine.
    Bench(Box<bench::BenchArgs>),
    /// Quality metrics: FID, KID, statistics, PSNR/SSIM/LPIPS comparisons.
    #[command(subcommand)]
    Eval(wanrt_eval::cli::EvalCommand),
    /// Blind A/B human rating of video variants (local web app + SQLite).
    #[command(subcommand)]
    Review(wanrt_review::cli::ReviewCommand),
    /// Video generation service: OpenAI-style HTTP API, durable job queue (SQLite, or PostgreSQL across machines).
    Serve(Box<wanrt_serve::cli::ServeArgs>),
}

/// `wanrt serve`; without `--model`, the bundled demo model.
fn serve(mut args: wanrt_serve::cli::ServeArgs) -> anyhow::Result<()> {
    if args.models.is_empty() {
        args.models.push(model_path::resolve(None)?);
    }
    wanrt_serve::run(args)
}

fn main() {
    let cli = Cli::parse();
    outcome::install_panic_hook();
    let result = outcome::guarded(|| match cli.command {
        Command::Generate(args) => generate::run(*args),
        Command::Optimize(args) => optimize::run(*args),
        Command::Bench(args) => bench::run(*args),
        Command::Convert(args) => convert::run(args),
        Command::Eval(cmd) => wanrt_eval::cli::run(cmd),
        Command::Review(cmd) => wanrt_review::run(cmd),
        Command::Serve(args) => serve(*args),
    });
    outcome::finish(result)
}

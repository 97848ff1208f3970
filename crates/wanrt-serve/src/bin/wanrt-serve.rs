//! Stand-alone `wanrt serve` (the same flags); the crash and PostgreSQL tests run it as a
//! separate process so that it can be killed with SIGKILL.

use clap::Parser;
use wanrt_serve::cli::ServeArgs;

#[derive(Parser)]
#[command(name = "wanrt-serve", about = "Video generation service (same as `wanrt serve`)")]
struct Cli {
    #[command(flatten)]
    args: ServeArgs,
}

fn main() {
    let mut args = Cli::parse().args;
    if args.models.is_empty() {
        if let Some(demo) = std::env::var_os("WANRT_DEMO_MODEL") {
            args.models.push(demo.into());
        }
    }
    if let Err(e) = wanrt_serve::run(args) {
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

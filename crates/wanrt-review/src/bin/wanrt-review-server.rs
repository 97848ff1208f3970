//! Stand-alone `wanrt review` (the same subcommands and flags as `wanrt review …`); the
//! crash test runs it as a separate process so that it can be killed with SIGKILL.

use clap::Parser;
use wanrt_review::cli::ReviewCommand;

#[derive(Parser)]
#[command(name = "wanrt-review-server", about = "Blind A/B human rating of video variants (same as `wanrt review`)")]
struct Cli {
    #[command(subcommand)]
    cmd: ReviewCommand,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = wanrt_review::run(cli.cmd) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

//! Progress on stderr for generation: a bar on a terminal; elsewhere (a log file, a CI job, a
//! pipe) the bar is hidden, so a plain line reports the step at most every
//! [`LOG_INTERVAL`] and at the end of each stage — a long run is never silent for hours.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use wanrt_wan::pipeline::Progress;

/// Time between plain progress lines when stderr is not a terminal.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

pub struct Bars {
    bar: Option<ProgressBar>,
    prefix: String,
    quiet: bool,
    /// `Some(last line's time, stage start)` when stderr is not a terminal.
    log: Option<(Instant, Instant)>,
}

impl Bars {
    pub fn new(prefix: impl Into<String>, quiet: bool) -> Self {
        let log = (!quiet && !std::io::stderr().is_terminal()).then(|| (Instant::now(), Instant::now()));
        Bars { bar: None, prefix: prefix.into(), quiet, log }
    }

    /// A plain line for a non-terminal stderr: the first step of a stage, then every
    /// [`LOG_INTERVAL`], and the last.
    fn log_line(&mut self, what: &str, done: usize, total: usize) {
        let Some((last, start)) = &mut self.log else { return };
        let now = Instant::now();
        if done <= 1 {
            *start = now;
        }
        if done <= 1 || done == total || now.duration_since(*last) >= LOG_INTERVAL {
            *last = now;
            let secs = now.duration_since(*start).as_secs_f64();
            eprintln!("{} {what} {done}/{total} ({secs:.1} s)", self.prefix);
        }
    }

    fn bar(&mut self, total: usize, what: &str) -> &ProgressBar {
        if self.bar.as_ref().map(|b| b.length() != Some(total as u64) || b.message() != what).unwrap_or(true) {
            if let Some(b) = self.bar.take() {
                b.finish_and_clear();
            }
            let b = if self.quiet { ProgressBar::hidden() } else { ProgressBar::new(total as u64) };
            b.set_style(
                ProgressStyle::with_template("{prefix} {msg:12} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.set_prefix(self.prefix.clone());
            b.set_message(what.to_string());
            self.bar = Some(b);
        }
        self.bar.as_ref().expect("set above")
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Progress for Bars {
    fn stage(&mut self, name: &str) {
        if !self.quiet && self.bar.is_none() {
            eprintln!("{} {name}…", self.prefix);
        }
    }
    fn step(&mut self, done: usize, total: usize) {
        self.bar(total, "denoising").set_position(done as u64);
        self.log_line("denoising step", done, total);
    }
    fn decode_frame(&mut self, done: usize, total: usize) {
        self.bar(total, "vae decode").set_position(done as u64);
        self.log_line("vae decode", done, total);
    }
}

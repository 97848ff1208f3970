//! Progress bars on stderr for generation (hidden when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};
use wanrt_wan::pipeline::Progress;

pub struct Bars {
    bar: Option<ProgressBar>,
    prefix: String,
    quiet: bool,
}

impl Bars {
    pub fn new(prefix: impl Into<String>, quiet: bool) -> Self {
        Bars { bar: None, prefix: prefix.into(), quiet }
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
    }
    fn decode_frame(&mut self, done: usize, total: usize) {
        self.bar(total, "vae decode").set_position(done as u64);
    }
}

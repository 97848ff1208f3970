//! Prometheus metrics of this process (text exposition format 0.0.4). Queue-wide gauges
//! (depth, jobs by state) are read from the queue at scrape time, so every process of
//! a shared PostgreSQL queue reports the same numbers for them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::job::Status;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 16] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

#[derive(Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}", self.counts[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let lb = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{lb} {}", self.sum);
        let _ = writeln!(out, "{name}_count{lb} {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    step: Histogram,
    stages: BTreeMap<String, Histogram>,
    latency: Histogram,
    batch: Histogram,
    finished: BTreeMap<&'static str, u64>,
    submitted: u64,
    refused: BTreeMap<&'static str, u64>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn step(&self, secs: f64) {
        self.with(|m| m.step.observe(secs));
    }

    pub fn stage(&self, stage: &str, secs: f64) {
        self.with(|m| m.stages.entry(stage.to_string()).or_default().observe(secs));
    }

    /// Submission to completion of a finished job.
    pub fn latency(&self, secs: f64) {
        self.with(|m| m.latency.observe(secs));
    }

    pub fn batch(&self, size: usize) {
        self.with(|m| m.batch.observe(size as f64));
    }

    pub fn finished(&self, status: Status) {
        self.with(|m| *m.finished.entry(status.as_str()).or_default() += 1);
    }

    pub fn submitted(&self) {
        self.with(|m| m.submitted += 1);
    }

    /// A request refused before queueing (`reason`: invalid, memory, queue_full, auth).
    pub fn refused(&self, reason: &'static str) {
        self.with(|m| *m.refused.entry(reason).or_default() += 1);
    }

    /// The exposition text; `counts` are the queue's jobs per state.
    pub fn render(&self, counts: &[(Status, i64)], running_here: usize, peak: Option<u64>, budget: u64) -> String {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut o = String::new();
        let queued = counts.iter().find(|(s, _)| *s == Status::Queued).map_or(0, |c| c.1);
        o.push_str("# HELP wanrt_queue_depth Jobs waiting to start (whole queue).\n# TYPE wanrt_queue_depth gauge\n");
        let _ = writeln!(o, "wanrt_queue_depth {queued}");
        o.push_str("# HELP wanrt_jobs Jobs by state (whole queue).\n# TYPE wanrt_jobs gauge\n");
        for (s, n) in counts {
            let _ = writeln!(o, "wanrt_jobs{{status=\"{}\"}} {n}", s.as_str());
        }
        o.push_str("# HELP wanrt_running_jobs Jobs held by this process's workers.\n# TYPE wanrt_running_jobs gauge\n");
        let _ = writeln!(o, "wanrt_running_jobs {running_here}");
        o.push_str("# HELP wanrt_jobs_submitted_total Jobs accepted by this process.\n");
        o.push_str("# TYPE wanrt_jobs_submitted_total counter\n");
        let _ = writeln!(o, "wanrt_jobs_submitted_total {}", m.submitted);
        o.push_str("# HELP wanrt_jobs_refused_total Submissions refused before queueing, by reason.\n");
        o.push_str("# TYPE wanrt_jobs_refused_total counter\n");
        for (r, n) in &m.refused {
            let _ = writeln!(o, "wanrt_jobs_refused_total{{reason=\"{r}\"}} {n}");
        }
        o.push_str("# HELP wanrt_jobs_finished_total Jobs this process's workers finished, by final state.\n");
        o.push_str("# TYPE wanrt_jobs_finished_total counter\n");
        for (s, n) in &m.finished {
            let _ = writeln!(o, "wanrt_jobs_finished_total{{status=\"{s}\"}} {n}");
        }
        o.push_str("# HELP wanrt_step_seconds Denoising step latency (one transformer call for a batch).\n");
        o.push_str("# TYPE wanrt_step_seconds histogram\n");
        m.step.write(&mut o, "wanrt_step_seconds", "");
        o.push_str("# HELP wanrt_stage_seconds Pipeline stage latency per job or batch.\n");
        o.push_str("# TYPE wanrt_stage_seconds histogram\n");
        for (stage, h) in &m.stages {
            h.write(&mut o, "wanrt_stage_seconds", &format!("stage=\"{stage}\""));
        }
        o.push_str("# HELP wanrt_job_latency_seconds Submission to completion.\n");
        o.push_str("# TYPE wanrt_job_latency_seconds histogram\n");
        m.latency.write(&mut o, "wanrt_job_latency_seconds", "");
        o.push_str("# HELP wanrt_batch_size Jobs per transformer batch.\n# TYPE wanrt_batch_size histogram\n");
        m.batch.write(&mut o, "wanrt_batch_size", "");
        o.push_str("# HELP wanrt_peak_memory_bytes Peak resident memory of this process (VmHWM).\n");
        o.push_str("# TYPE wanrt_peak_memory_bytes gauge\n");
        let _ = writeln!(o, "wanrt_peak_memory_bytes {}", peak.unwrap_or(0));
        o.push_str("# HELP wanrt_memory_budget_bytes Working-memory budget of admission control.\n");
        o.push_str("# TYPE wanrt_memory_budget_bytes gauge\n");
        let _ = writeln!(o, "wanrt_memory_budget_bytes {budget}");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.step(0.02);
        m.step(0.3);
        m.step(7200.0);
        let text = m.render(&[(Status::Queued, 3)], 1, Some(10), 20);
        assert!(text.contains("wanrt_step_seconds_bucket{le=\"0.025\"} 1\n"), "{text}");
        assert!(text.contains("wanrt_step_seconds_bucket{le=\"0.5\"} 2\n"));
        assert!(text.contains("wanrt_step_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("wanrt_step_seconds_count 3\n"));
        assert!(text.contains("wanrt_queue_depth 3\n"));
    }
}

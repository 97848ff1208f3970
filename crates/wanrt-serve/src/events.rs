//! In-process job events: workers publish every stage change and step; the SSE
//! handlers of the same process forward them at once (jobs run by other processes
//! are followed by polling the queue, see [`crate::routes`]).

use serde::Serialize;
use tokio::sync::broadcast;

/// A change of one job, as sent to `GET /v1/videos/{id}/events` subscribers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobEvent {
    pub id: String,
    pub status: &'static str,
    pub progress: u8,
    pub stage: Option<String>,
    /// Denoising step done / total, during `denoising`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
}

#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<JobEvent>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub { tx: broadcast::channel(1024).0 }
    }
}

impl Hub {
    /// Never blocks; events nobody listens to are dropped.
    pub fn publish(&self, e: JobEvent) {
        let _ = self.tx.send(e);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.tx.subscribe()
    }
}

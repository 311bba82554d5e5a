//! Counters kept per job while it runs, read by `SHOW JOBS`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The counters of one job.
#[derive(Debug, Default)]
pub(crate) struct JobMetrics {
    /// Rows that windowed operators dropped because the watermark had
    /// passed their window.
    pub late_rows: Arc<AtomicU64>,
    /// Messages the job's sources skipped because they did not decode.
    pub skipped_messages: Arc<AtomicU64>,
}

/// Every job's counters.
#[derive(Debug, Default)]
pub(crate) struct MetricsRegistry {
    jobs: Mutex<HashMap<u64, Arc<JobMetrics>>>,
}

impl MetricsRegistry {
    /// Job `id`'s counters, made on first use.
    pub(crate) fn job(&self, id: u64) -> Arc<JobMetrics> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(jobs.entry(id).or_default())
    }

    /// Forgets a dropped job's counters.
    pub(crate) fn remove(&self, id: u64) {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Late rows job `id` dropped since it started in this process.
    pub(crate) fn late_rows(&self, id: u64) -> u64 {
        self.read(id, |m| &m.late_rows)
    }

    /// Messages job `id`'s sources skipped since it started in this
    /// process.
    pub(crate) fn skipped_messages(&self, id: u64) -> u64 {
        self.read(id, |m| &m.skipped_messages)
    }

    fn read(&self, id: u64, counter: impl Fn(&JobMetrics) -> &Arc<AtomicU64>) -> u64 {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map_or(0, |m| counter(m).load(Ordering::Relaxed))
    }
}

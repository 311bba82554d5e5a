//! Measuring a run: wall time, CPU time of the whole process (so "per
//! core" counts every thread's work), and peak resident memory from
//! `/proc` (reset between runs).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;

/// Wall and CPU time since a start.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub wall: Duration,
    pub cpu: Duration,
}

/// CPU time of this process so far (user + system), from /proc.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the whole line, in clock
    // ticks (100 per second on Linux).
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A point to measure from.
pub struct Start {
    wall: Instant,
    cpu: Duration,
}

impl Usage {
    /// Starts measuring.
    pub fn now() -> Start {
        Start {
            wall: Instant::now(),
            cpu: cpu_time(),
        }
    }
}

impl Start {
    /// What was used since the start.
    pub fn elapsed(&self) -> Usage {
        Usage {
            wall: self.wall.elapsed(),
            cpu: cpu_time().saturating_sub(self.cpu),
        }
    }
}

/// One measured run.
pub struct Run {
    pub usage: Usage,
    pub peak_bytes: u64,
    pub result_rows: u64,
    /// Bytes under the data directory at the end (RocksDB: state and the
    /// view's rows); 0 for batch runs.
    pub data_bytes: u64,
    /// RocksDB's memory and the state rows at the end (streaming runs).
    pub store: Option<runnel_storage::MemoryReport>,
    /// What making the input cost a batch run, not counted in `usage`
    /// (the stream generates its own events within its time).
    pub input: Option<Usage>,
}

impl Run {
    /// Events per CPU second of making the input too, when known.
    pub fn events_per_core_second_with_input(&self, events: u64) -> Option<f64> {
        let input = self.input?;
        let cpu = self.usage.cpu + input.cpu;
        Some(events as f64 / cpu.as_secs_f64().max(1e-3))
    }

    /// Events per CPU second.
    pub fn events_per_core_second(&self, events: u64) -> f64 {
        let cpu = self
            .usage
            .cpu
            .as_secs_f64()
            .max(self.usage.wall.as_secs_f64().min(0.01));
        events as f64 / cpu.max(1e-3)
    }
}

/// Resets the kernel's peak-RSS mark of this process.
pub fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory since the last reset, in bytes.
pub fn peak_memory() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The single count of a `SELECT count(*)`.
pub fn first_count(batches: &[RecordBatch]) -> Result<u64> {
    let batch = batches.first().context("no count returned")?;
    let column = batch.column(0);
    if column.is_null(0) {
        return Ok(0);
    }
    Ok(column.as_primitive::<Int64Type>().value(0) as u64)
}

/// Bytes of the files under `dir`.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
